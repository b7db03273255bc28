"""Delivering webhooks: jobs from the webhooks stream, each request's final JSON POSTed, signed, until it lands.

A job (`records_pb2.WebhookJob`) asks for the webhook of one request. The request's record holds the URL and
where delivery stands (`record.webhook`); the job stays in JetStream until delivery is over, so a sender that
stops or dies loses nothing: another takes the job (at once after a nak, after the ack wait otherwise).

Each attempt is written to the record before the job is acknowledged (or naked for a later retry): the
record is the truth, and a job delivered twice finds it DELIVERED, GAVE_UP or STOPPED and is only acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from datetime import UTC, datetime

import httpx
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from prometheus_client import Counter

from cortado import _names, _nats, records, webhooks
from cortado.records.delivery import RequestRecords, StoredRecord
from cortado.v1 import control_pb2, records_pb2
from services.webhooks.config import WebhookSettings
from services.webhooks.stream import consumer_config, ensure_stream
from services.webhooks.transport import answer_start, describe_error, http_client

log = logging.getLogger(__name__)

WEBHOOK_ATTEMPTS = Counter(
    "cortado_webhook_attempts",
    "Webhook attempts by outcome: delivered (2xx), failed (retried), gone (410), gave_up (the retry period ran "
    "out), refused (the URL policy refused it).",
    ["api", "outcome"],
)

FETCH_SECONDS = 1.0
"""Longest a pull for new jobs waits (how soon a stop is noticed when nothing comes)."""

MAX_ERROR_CHARS = 500
"""Longest last_error (a connection error can be wordy)."""

_REQUEST_ID = re.compile(r"[A-Za-z0-9_=-]{1,200}")


async def subscribe(js: JetStreamContext, settings: WebhookSettings) -> JetStreamContext.PullSubscription:
    """Create the webhooks stream (if absent) and the senders' consumer (or update its settings); bind to it."""
    await ensure_stream(js, settings.stream_max_bytes)
    config = consumer_config(settings.ack_wait_seconds)
    await _nats.while_jetstream_starts(
        _names.WEBHOOKS_CONSUMER, lambda: js.add_consumer(_names.WEBHOOKS_STREAM, config)
    )
    subscription: JetStreamContext.PullSubscription = await js.pull_subscribe_bind(
        _names.WEBHOOKS_CONSUMER, _names.WEBHOOKS_STREAM
    )
    return subscription


# The sender --------------------------------------------------------------------------------------------------------


class WebhookSender:
    """Pulls webhook jobs and delivers up to `settings.concurrency` of them at once.

    `await start()` begins, `request_stop()` takes no more jobs, `await stop(grace)` ends; or `async with`.
    """

    def __init__(
        self,
        js: JetStreamContext,
        settings: WebhookSettings,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._js = js
        self._settings = settings
        self._client = client or http_client(settings)
        self._records = RequestRecords(js)
        self._secrets: KeyValue | None = None
        self._subscription: JetStreamContext.PullSubscription | None = None
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Create the stream, consumer and secrets bucket where absent, bind to the consumer and start pulling."""
        self._secrets = await _nats.key_value(self._js, _names.WEBHOOK_SECRETS_BUCKET, history=1)
        self._subscription = await subscribe(self._js, self._settings)
        self._runner = asyncio.create_task(self._run())

    async def __aenter__(self) -> WebhookSender:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop(self._settings.grace_seconds)

    def request_stop(self) -> None:
        """Take no more jobs (what SIGTERM does); attempts under way go on."""
        self._stopping.set()

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking jobs, give attempts under way grace seconds, then cancel the rest and close the client.

        Returns once the pull that is under way ended (within FETCH_SECONDS). A cancelled attempt's job is
        redelivered after the consumer's ack wait (at least once: its receiver may have got it). The default
        grace fits in a service's stop step (`grace_seconds`), with a second to spare for the pull under way.
        """
        if grace is None:
            grace = max(0.0, self._settings.grace_seconds - 1)
        self.request_stop()
        if self._runner is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
        await self._client.aclose()

    async def _run(self) -> None:
        assert self._subscription is not None
        while not self._stopping.is_set():
            free = self._settings.concurrency - len(self._tasks)
            if free <= 0:
                stopping = asyncio.create_task(self._stopping.wait())
                await asyncio.wait({*self._tasks, stopping}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                continue
            try:
                batch = await self._subscription.fetch(free, timeout=FETCH_SECONDS)
            except TimeoutError:
                # Nothing came (nats.errors.TimeoutError; the first pull of a subscription raises asyncio's own).
                continue
            except Exception as exc:
                # Reconnecting, a leader election: the consumer is still there once NATS answers again.
                log.warning("pulling webhook jobs failed; retrying", extra={"error": repr(exc)})
                await asyncio.sleep(FETCH_SECONDS)
                continue
            for msg in batch:
                task = asyncio.create_task(self._handle_safely(msg))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _handle_safely(self, msg: Msg) -> None:
        try:
            await self.handle(msg)
        except Exception:
            log.exception("webhook job not settled; retrying it", extra={"subject": msg.subject})
            with contextlib.suppress(Exception):
                await msg.nak(delay=self._settings.first_retry_seconds)

    async def handle(self, msg: Msg) -> None:
        """Deliver one job's webhook once (or see that nothing is to be done), record it, then ack or nak it."""
        try:
            job = records_pb2.WebhookJob.FromString(msg.data)
        except DecodeError:
            job = records_pb2.WebhookJob()
        if not _REQUEST_ID.fullmatch(job.id):
            log.error("malformed webhook job dropped", extra={"subject": msg.subject})
            await msg.term()
            return
        stored = await self._records.read(job.id)
        if stored is None:
            log.warning("webhook not sent: the request's record is gone", extra={"api": job.api, "id": job.id})
            await msg.ack()
            return
        record = stored.record
        if not record.webhook.url or record.webhook.state in webhooks.FINISHED_STATES:
            await msg.ack()
            return
        if not records.is_final(record.status):
            await self._not_final_yet(msg, job)
            return
        attempt = await self.attempt(record)
        settings = self._settings

        def change(delivery: records_pb2.WebhookDelivery) -> str | None:
            return webhooks.apply_attempt(delivery, attempt, settings.retry_seconds)

        after, outcome = await self._records.update_webhook(job.id, stored, change)
        if outcome is not None:
            WEBHOOK_ATTEMPTS.labels(record.api, outcome).inc()
            self._log(record, outcome, after)
        if after is not None and after.record.webhook.state == records_pb2.WEBHOOK_STATE_PENDING:
            delay = webhooks.retry_delay(
                after.record.webhook.attempts, first=settings.first_retry_seconds, cap=settings.max_retry_seconds
            )
            await msg.nak(delay=delay)
        else:
            await msg.ack()

    async def _not_final_yet(self, msg: Msg, job: records_pb2.WebhookJob) -> None:
        # The job is published once the final record is written: a record still short of it is a read that came
        # first, or a request that will never finish; the latter's job is dropped after the retry period.
        age = (datetime.now(UTC) - msg.metadata.timestamp).total_seconds()
        if age > self._settings.retry_seconds:
            log.warning("webhook not sent: the request never finished", extra={"api": job.api, "id": job.id})
            await msg.ack()
        else:
            await msg.nak(delay=self._settings.first_retry_seconds)

    def _log(self, record: records_pb2.RequestRecord, outcome: str, after: StoredRecord | None) -> None:
        delivery = after.record.webhook if after is not None else record.webhook
        extra = {"api": record.api, "id": record.id, "attempts": delivery.attempts, "error": delivery.last_error}
        if outcome == webhooks.GAVE_UP:
            log.warning("webhook given up: every attempt failed for the whole retry period", extra=extra)
        elif outcome in (webhooks.GONE, webhooks.REFUSED):
            log.warning("webhook stopped", extra={**extra, "outcome": outcome})
        elif outcome == webhooks.DELIVERED:
            log.info("webhook delivered", extra=extra)
        else:
            log.info("webhook attempt failed; retrying later", extra=extra)

    async def _signing_secrets(self, api: str, now: float) -> list[str]:
        assert self._secrets is not None, "start() first"
        try:
            entry = await self._secrets.get(api)
        except KeyNotFoundError:
            return []
        if not entry.value:
            return []
        return webhooks.active_secrets(control_pb2.WebhookSecrets.FromString(entry.value), now)

    async def attempt(self, record: records_pb2.RequestRecord) -> webhooks.Attempt:
        """POST the record's final JSON (what `GET /<api>/<id>` answers) to its webhook URL, signed; what came of it.

        The URL is checked against the policy again (it may have changed since the submit), and so is each
        address the host resolves to. The message id is the request id, the same on every retry.
        """
        now = time.time()
        try:
            url = webhooks.check_url(record.webhook.url, self._settings.policy)
        except webhooks.WebhookUrlError as exc:
            return webhooks.Attempt(webhooks.REFUSED, now, str(exc))
        secrets = await self._signing_secrets(record.api, now)
        if not secrets:
            return webhooks.Attempt(webhooks.FAILED, now, f"API {record.api} has no webhook signing secret")
        body = records.render_json(records.view(record), record.api)
        try:
            signed = webhooks.signature_headers(secrets, record.id, int(now), body)
        except ValueError as exc:
            return webhooks.Attempt(webhooks.FAILED, now, f"API {record.api}'s webhook signing secret: {exc}")
        headers = {"content-type": "application/json", **signed}
        request = self._client.build_request("POST", url, content=body, headers=headers)
        try:
            async with asyncio.timeout(self._settings.timeout_seconds):
                response = await self._client.send(request, stream=True)
        except webhooks.WebhookUrlError as exc:
            return webhooks.Attempt(webhooks.REFUSED, now, str(exc))
        except (TimeoutError, httpx.TimeoutException):
            return webhooks.Attempt(webhooks.FAILED, now, f"timed out after {self._settings.timeout_seconds:g} s")
        except httpx.HTTPError as exc:
            return webhooks.Attempt(webhooks.FAILED, now, describe_error(exc)[:MAX_ERROR_CHARS])
        try:
            if response.is_success:
                return webhooks.Attempt(webhooks.DELIVERED, now)
            start = await answer_start(response)
            error = f"HTTP {response.status_code}: {start}" if start else f"HTTP {response.status_code}"
            outcome = webhooks.GONE if response.status_code == 410 else webhooks.FAILED
            return webhooks.Attempt(outcome, now, error)
        finally:
            await response.aclose()
