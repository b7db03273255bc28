"""What the webhook sender's tests run it against: a nats-server with the operator's user and the sender's, the
operator's side of the mesh (buckets, record writes, jobs), scripted HTTP receivers on loopback, and the checks of
what they received."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

from nats.aio.client import Client
from nats.js import JetStreamContext
from prometheus_client import REGISTRY
from standardwebhooks.webhooks import Webhook

from cortado import _names, _nats, _natsauth, records, webhooks
from cortado.mesh import free_port
from cortado.v1 import control_pb2, records_pb2
from tests.helpers import unique_name

T = TypeVar("T")


WEBHOOKS_USER = "webhooks"


WEBHOOKS_PERMISSIONS = _natsauth.PERMISSIONS[WEBHOOKS_USER]
"""What the sender's NATS user may do: JetStream's API, acks, record writes; nothing else."""


RECORD_TTL = 3600


RESULT = b'{"answer":42,"big":123456789012345678901234,"text":"caf\xc3\xa9"}'


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float = 90.0, what: str = "") -> T:
    """Poll check() until it answers something truthy (answered), or fail after timeout seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"not true after {timeout}s: {what}")
        await asyncio.sleep(0.05)


# NATS -------------------------------------------------------------------------------------------------------------


@dataclass
class Nats:
    """A running nats-server and the passwords of its users."""

    url: str
    credentials: dict[str, _natsauth.NatsCredentials]
    credentials_dir: Path


@dataclass
class Mesh:
    """The operator's connection, the buckets, and every write of a request record as it was published."""

    nc: Client
    js: JetStreamContext
    writes: list[records_pb2.RequestRecord] = field(default_factory=list)

    def history(self, request_id: str) -> list[records_pb2.WebhookDelivery]:
        """The webhook state of each write of the request's record, in order (the test's own first one included)."""
        return [record.webhook for record in self.writes if record.id == request_id]

    async def submit(self, api: str, url: str) -> records_pb2.RequestRecord:
        """Write a completed request's record, with a webhook, and publish its job (as the executor does)."""
        record = records_pb2.RequestRecord(
            id=unique_name("r"), api=api, status=records_pb2.REQUEST_STATUS_COMPLETED, attempts=1, result_json=RESULT
        )
        record.submitted_at.GetCurrentTime()
        record.finished_at.GetCurrentTime()
        record.webhook.url = url
        record.webhook.state = records_pb2.WEBHOOK_STATE_PENDING
        await _nats.kv_put_if(self.js, "cortado_requests", record.id, record.SerializeToString(), 0, msg_ttl=RECORD_TTL)
        ack = await self.publish_job(record)
        assert not ack.duplicate
        return record

    async def publish_job(self, record: records_pb2.RequestRecord) -> Any:
        job = records_pb2.WebhookJob(api=record.api, id=record.id)
        subject = f"cortado.webhooks.{record.api}.{record.id}"
        return await self.js.publish(subject, job.SerializeToString(), headers={"Nats-Msg-Id": record.id})

    async def stored(self, request_id: str) -> tuple[records_pb2.RequestRecord, dict[str, str]]:
        """The request's record as stored now, and the headers it was written with."""
        msg = await self.js.get_msg("KV_cortado_requests", subject=f"$KV.cortado_requests.{request_id}")
        assert msg.data is not None
        return records_pb2.RequestRecord.FromString(msg.data), dict(msg.headers or {})

    async def webhook(self, request_id: str) -> records_pb2.WebhookDelivery:
        """The request's webhook delivery as stored now."""
        return (await self.stored(request_id))[0].webhook

    async def drained(self) -> bool:
        """Whether every job was acknowledged: none waits, none is held or due for a retry."""
        info = await self.js.consumer_info(_names.WEBHOOKS_STREAM, _names.WEBHOOKS_CONSUMER)
        stream = await self.js.stream_info(_names.WEBHOOKS_STREAM)
        return info.num_pending == 0 and info.num_ack_pending == 0 and stream.state.messages == 0


async def add_secrets(mesh: Mesh, api: str, rotated: bool = True) -> list[str]:
    """Give the API signing secrets: a current one and (rotated) a previous one still signing for an hour."""
    current, previous = webhooks.new_secret(), webhooks.new_secret()
    stored = control_pb2.WebhookSecrets(current=current)
    if rotated:
        stored.previous = previous
        stored.previous_until.GetCurrentTime()
        stored.previous_until.seconds += 3600
    kv = await mesh.js.key_value(_names.WEBHOOK_SECRETS_BUCKET)
    await kv.put(api, stored.SerializeToString())
    return [current, previous] if rotated else [current]


def sender_env(nats_url: str, **settings: str) -> dict[str, str]:
    """The sender's settings for tests: loopback allowed, quick retries."""
    return {
        "CORTADO_NATS_URL": nats_url,
        "CORTADO_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
        "CORTADO_WEBHOOK_FIRST_RETRY_SECONDS": "0.05",
        "CORTADO_WEBHOOK_MAX_RETRY_SECONDS": "0.4",
        "CORTADO_WEBHOOK_TIMEOUT_SECONDS": "5",
        "CORTADO_WEBHOOK_CONCURRENCY": "4",
        "CORTADO_GRACE_SECONDS": "2",
        "CORTADO_METRICS_ADDRESS": "",
        **settings,
    }


# The receiver -----------------------------------------------------------------------------------------------------


@dataclass
class Received:
    """One POST as the receiver got it, and the status it answered."""

    headers: dict[str, str]
    body: bytes
    status: int


class Receiver:
    """A webhook receiver on 127.0.0.1: answers each POST with the next status of script (200 once it runs out).

    With down_after, it closes its port right after answering that many POSTs (one arriving meanwhile gets its
    connection closed unanswered); start() opens the same port again.
    """

    ANSWERS = {200: b"ok", 410: b"gone", 500: b"boom"}

    def __init__(self, script: list[int] | None = None, down_after: int | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks/cortado?x=1"
        self.script = list(script or [])
        self.down_after = down_after
        self.received: list[Received] = []
        self.down = True
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def start(self, script: list[int] | None = None) -> None:
        """Listen (again), answering with script from now on."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = receiver.answer({k.lower(): v for k, v in self.headers.items()}, body)
                if status is None:
                    self.close_connection = True
                    return
                answer = receiver.ANSWERS.get(status, b"")
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        with self._lock:
            if script is not None:
                self.script, self.down_after = list(script), None
            self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
            self._server.daemon_threads = True
            self.down = False
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        """Close the port: connections are refused."""
        with self._lock:
            self.down = True
            server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def answer(self, headers: dict[str, str], body: bytes) -> int | None:
        with self._lock:
            if self.down:
                return None
            index = len(self.received)
            status = self.script[index] if index < len(self.script) else 200
            self.received.append(Received(headers, body, status))
            if self.down_after is not None and len(self.received) >= self.down_after:
                self.down = True
                threading.Thread(target=self.stop, daemon=True).start()
            return status


def verify(received: Received, secrets: list[str], record: records_pb2.RequestRecord) -> None:
    """The POST is signed with each secret, carries the request id, and its body is the record's final JSON."""
    assert received.headers["content-type"] == "application/json"
    assert received.headers["webhook-id"] == record.id
    for secret in secrets:
        Webhook(secret).verify(received.body, received.headers)
    assert received.body == records.render_json(records.view(record), record.api)


def attempts_counted(api: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("cortado_webhook_attempts_total", {"api": api, "outcome": outcome}) or 0.0


def is_connection_error(error: str) -> bool:
    return not error.startswith("HTTP") and "Error" in error
