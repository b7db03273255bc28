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
import os
import re
import socket
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import httpcore
import httpx
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from prometheus_client import Counter

from cortado import names, natsutil, records, webhooks
from cortado.records.delivery import RequestRecords, StoredRecord
from cortado.v1 import control_pb2, records_pb2
from services.webhooks.config import WebhookSettings
from services.webhooks.stream import consumer_config, ensure_stream
from services.webhooks.stream import stream_config as stream_config  # what tests and older callers import

log = logging.getLogger(__name__)

WEBHOOK_ATTEMPTS = Counter(
    "cortado_webhook_attempts",
    "Webhook attempts by outcome: delivered (2xx), failed (retried), gone (410), gave_up (the retry period ran "
    "out), refused (the URL policy refused it).",
    ["api", "outcome"],
)

USER_AGENT = "Cortado-Webhooks/1"

FETCH_SECONDS = 1.0
"""Longest a pull for new jobs waits (how soon a stop is noticed when nothing comes)."""

ANSWER_READ_SECONDS = 2.0
"""Longest the start of a failed attempt's answer is read for its error message."""

ANSWER_START_BYTES = 1024
"""Bytes of a failed attempt's answer read; its first ERROR_ANSWER_CHARS characters go into last_error."""

ERROR_ANSWER_CHARS = 200

MAX_ERROR_CHARS = 500
"""Longest last_error (a connection error can be wordy)."""

_REQUEST_ID = re.compile(r"[A-Za-z0-9_=-]{1,200}")


async def subscribe(js: JetStreamContext, settings: WebhookSettings) -> JetStreamContext.PullSubscription:
    """Create the webhooks stream (if absent) and the senders' consumer (or update its settings); bind to it."""
    await ensure_stream(js, settings.stream_max_bytes)
    config = consumer_config(settings.ack_wait_seconds)
    await natsutil.while_jetstream_starts(
        names.WEBHOOKS_CONSUMER, lambda: js.add_consumer(names.WEBHOOKS_STREAM, config)
    )
    subscription: JetStreamContext.PullSubscription = await js.pull_subscribe_bind(
        names.WEBHOOKS_CONSUMER, names.WEBHOOKS_STREAM
    )
    return subscription


# HTTP --------------------------------------------------------------------------------------------------------------


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections only to addresses the URL policy allows (`webhooks.check_resolved`).

    The name is resolved here, checked, and the connection made to a checked address: DNS answering
    differently between a check and the connection cannot slip past it. TLS still verifies the name.
    """

    def __init__(self, policy: webhooks.UrlPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """A connection to host:port; WebhookUrlError when host resolves to an address the policy refuses."""
        try:
            async with asyncio.timeout(timeout):
                found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
        webhooks.check_resolved(host, addresses, self._policy, port=port)
        failure: Exception = httpcore.ConnectError(f"{host} resolves to no address")
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectTimeout:
                failure = httpcore.ConnectTimeout(f"connecting to {_bracketed(address)}:{port} timed out")
            except httpcore.ConnectError as exc:
                failure = httpcore.ConnectError(f"cannot connect to {_bracketed(address)}:{port}: {_root_cause(exc)}")
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        """Never: webhooks go over TCP."""
        raise httpcore.ConnectError("webhooks are not sent over Unix sockets")

    async def sleep(self, seconds: float) -> None:
        """Sleep (httpcore waits with it)."""
        await self._inner.sleep(seconds)


def _bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _root_cause(exc: BaseException) -> str:
    """The error at the bottom of exc's chain (anyio's "All connection attempts failed" hides ECONNREFUSED)."""
    seen = exc
    while (below := seen.__cause__ or seen.__context__) is not None:
        seen = below
    if isinstance(seen, OSError) and seen.errno:
        return os.strerror(seen.errno)
    return str(seen) or type(seen).__name__


class CheckedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport, connecting through CheckedBackend, never through a proxy from the environment."""

    def __init__(self, policy: webhooks.UrlPolicy, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=CheckedBackend(policy),
        )


def http_client(settings: WebhookSettings) -> httpx.AsyncClient:
    """The client webhooks are POSTed with: the policy checked on every connection, no redirect followed."""
    limits = httpx.Limits(max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency)
    return httpx.AsyncClient(
        transport=CheckedTransport(settings.policy, limits),
        timeout=httpx.Timeout(settings.timeout_seconds),
        follow_redirects=False,
        trust_env=False,
        headers={"user-agent": USER_AGENT},
    )


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    kind = type(exc).__name__
    return f"{kind}: {text}" if text else kind


async def _answer_start(response: httpx.Response) -> str:
    """The first characters of the answer's body, for last_error (empty when it cannot be read in time)."""
    received = b""
    try:
        async with asyncio.timeout(ANSWER_READ_SECONDS):
            async for chunk in response.aiter_raw():
                received += chunk
                if len(received) >= ANSWER_START_BYTES:
                    break
    except (TimeoutError, httpx.HTTPError):
        pass
    text = received[:ANSWER_START_BYTES].decode("utf-8", errors="replace")
    return " ".join(text.split())[:ERROR_ANSWER_CHARS]


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
        self._secrets = await natsutil.key_value(self._js, names.WEBHOOK_SECRETS_BUCKET, history=1)
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
            return webhooks.Attempt(webhooks.FAILED, now, _describe(exc)[:MAX_ERROR_CHARS])
        try:
            if response.is_success:
                return webhooks.Attempt(webhooks.DELIVERED, now)
            start = await _answer_start(response)
            error = f"HTTP {response.status_code}: {start}" if start else f"HTTP {response.status_code}"
            outcome = webhooks.GONE if response.status_code == 410 else webhooks.FAILED
            return webhooks.Attempt(outcome, now, error)
        finally:
            await response.aclose()
