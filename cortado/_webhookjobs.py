"""Queuing a request's webhook: done by whoever writes its final record (an executor, or ingest on cancel).

The final record carries the URL and a `pending` delivery state; a `WebhookJob` on the webhooks stream
(`_names.webhook_subject`, its `Nats-Msg-Id` the request id, so a second publish within the stream's
duplicate window is stored once) tells the webhook senders (`services.webhooks`) to deliver it.
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext

from cortado import _names
from cortado.v1 import control_pb2, records_pb2

log = logging.getLogger(__name__)


def delivery_url(item: records_pb2.WorkItem, spec: control_pb2.ApiSpec | None) -> str:
    """Where the request's final state goes: its own webhook URL, else its API's `webhook.url`, else nowhere ("")."""
    if item.webhook_url:
        return item.webhook_url
    return spec.webhook_url if spec is not None else ""


def mark_pending(record: records_pb2.RequestRecord, url: str) -> None:
    """Give a final record about to be written its webhook, pending delivery (nothing when url is empty)."""
    if url:
        record.webhook.CopyFrom(records_pb2.WebhookDelivery(url=url, state=records_pb2.WEBHOOK_STATE_PENDING))


async def queue_delivery(js: JetStreamContext, api: str, request_id: str) -> bool:
    """Ask the senders to deliver the webhook of a request whose final record is written; whether it was queued.

    A failure is logged, not raised: the request's outcome stands, and a redelivery of its work item that finds
    the final record queues the delivery again.
    """
    job = records_pb2.WebhookJob(api=api, id=request_id)
    try:
        await js.publish(
            _names.webhook_subject(api, request_id),
            job.SerializeToString(),
            stream=_names.WEBHOOKS_STREAM,
            headers={"Nats-Msg-Id": request_id},
        )
    except Exception as exc:
        log.warning("webhook delivery not queued", extra={"api": api, "id": request_id, "error": repr(exc)})
        return False
    return True
