"""Requests delivered again: how long a hand-back waits, whether a redelivery may run, and the dead letters.

A redelivery whose request already finished is only acknowledged; one whose handler process died with it more
than `max_retries` times fails with HandlerProcessDied, and one delivered more than the delivery limit without an
outcome being recorded fails with DeliveryLimitExceeded. A request Cortado gives up on is first kept as a dead
letter (its work item, body included) for replay.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from cortado import _names, records
from cortado.records import RecordStore
from cortado.v1 import records_pb2
from services.executor.held import trace_headers

log = logging.getLogger(__name__)

REDELIVERY_MAX_DELAY = 30.0
"""Longest wait before a request handed back again and again is delivered anew (seconds)."""

DEAD_ERROR_TYPE = "Cortado-Error-Type"
DEAD_ERROR_MESSAGE = "Cortado-Error-Message"
"""Headers of a dead letter: why Cortado gave up on the request (services/scheduler/deadletters.py reads them)."""


def redelivery_delay(delivered: int) -> float | None:
    """How long a request handed back after its `delivered`-th delivery waits before the next one.

    The first hand-back is immediate (a process died; a drain); later ones back off exponentially up to
    REDELIVERY_MAX_DELAY seconds, so a request that keeps failing to be recorded (a full store) never loops hot.
    """
    if delivered <= 1:
        return None
    return min(REDELIVERY_MAX_DELAY, 0.5 * 2.0 ** (delivered - 2))


@dataclass(frozen=True)
class Verdict:
    """What a redelivered request may do, from its record: run, acknowledge a final record, or give up."""

    revision: int
    """The record's revision read."""
    attempts: int = 0
    """The attempt it runs as; when it gives up, the attempts its failed record counts."""
    final: records_pb2.RequestRecord | None = None
    """The final record found (an earlier delivery finished it, or it was cancelled): nothing runs."""
    failure: tuple[str, str] | None = None
    """(error type, message) of a request Cortado gives up on."""

    @property
    def runs(self) -> bool:
        """Whether the request runs (again)."""
        return self.final is None and self.failure is None


def judge(
    stored: records_pb2.RequestRecord | None, revision: int, delivered: int, max_deliveries: int, max_retries: int
) -> Verdict:
    """The verdict on the `delivered`-th delivery of a request whose record is stored (None: none) at revision.

    Deliveries also count hand-backs of requests that never started: only an in_progress record says a handler
    started and its process died, so only its attempts count against max_retries.
    """
    if stored is not None and records.is_final(stored.status):
        return Verdict(revision, final=stored)
    if delivered > max_deliveries:
        return Verdict(
            revision,
            stored.attempts if stored is not None else 0,
            failure=(
                "DeliveryLimitExceeded",
                f"the request was delivered {delivered} times without an outcome being recorded (the store was "
                f"full or unreachable, or its executors kept stopping); giving up after {max_deliveries} deliveries "
                "(CORTADO_MAX_DELIVERIES)",
            ),
        )
    died = stored.attempts if stored is not None and stored.status == records_pb2.REQUEST_STATUS_IN_PROGRESS else 0
    if died > max_retries:
        return Verdict(
            revision,
            died,
            failure=(
                "HandlerProcessDied",
                f"the handler's process died while handling this request {died} times; "
                f"giving up after max_retries={max_retries}",
            ),
        )
    return Verdict(revision, died + 1)


async def examine(
    store: RecordStore, api: str, request_id: str, delivered: int, max_deliveries: int, max_retries: int
) -> Verdict:
    """Read a redelivered request's record and judge it (see `judge`); one past the delivery limit is logged."""
    if delivered > max_deliveries:
        log.error(
            "request delivered too often without an outcome; it fails",
            extra={"id": request_id, "api": api, "deliveries": delivered},
        )
    stored, revision = await store.read(request_id)
    return judge(stored, revision, delivered, max_deliveries, max_retries)


def dead_letter_headers(msg: Msg, failed: records_pb2.RequestRecord) -> dict[str, str]:
    """The headers of a dead letter: the message's trace context and why Cortado gave up (one line, cut)."""
    headers = trace_headers(msg)
    headers[DEAD_ERROR_TYPE] = failed.error.type
    headers[DEAD_ERROR_MESSAGE] = failed.error.message[:1000].replace("\r", " ").replace("\n", " ")
    return headers


async def bury(js: JetStreamContext, msg: Msg, item: records_pb2.WorkItem, failed: records_pb2.RequestRecord) -> None:
    """Keep the request Cortado gives up on as a dead letter (its work item, body included) for replay.

    A dead letter that cannot be published is logged and left out.
    """
    try:
        await js.publish(
            _names.dead_subject(item.api, item.id),
            msg.data,
            stream=_names.DEAD_STREAM,
            headers=dead_letter_headers(msg, failed),
        )
    except Exception as exc:
        log.warning("dead letter not kept", extra={"id": item.id, "error": repr(exc)})
