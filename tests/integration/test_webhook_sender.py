"""The webhook sender against a real nats-server and real HTTP receivers on loopback.

Each test gets its own nats-server (JetStream in a temporary folder, free port) with two users: the operator's,
which plays ingest and the executor (writes records, publishes jobs, watches every record write), and
`webhooks`, which the sender runs as, allowed only the subjects it needs.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from prometheus_client import REGISTRY
from standardwebhooks.webhooks import Webhook

from cortado import names, natsauth, natsutil, records, webhooks
from cortado.env import Env
from cortado.mesh import ManagedProcess, find_binary, free_port, grpc_serving, nats_config, tcp_open, wait_until
from cortado.v1 import control_pb2, records_pb2
from services.webhooks.config import WebhookSettings
from services.webhooks.sender import (
    WebhookSender,
)
from tests.deploy.manifests import ROOT
from tests.helpers import unique_name

pytestmark = pytest.mark.integration

T = TypeVar("T")

WEBHOOKS_USER = "webhooks"
WEBHOOKS_PERMISSIONS = natsauth.PERMISSIONS[WEBHOOKS_USER]
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
    credentials: dict[str, natsauth.NatsCredentials]
    credentials_dir: Path


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[Nats]:
    """A nats-server with JetStream on a free port: users `admin` (everything) and `webhooks` (the sender's)."""
    port = free_port()
    folder = tmp_path / "credentials"
    credentials = natsauth.generate(folder, [natsauth.ADMIN, WEBHOOKS_USER])
    users = []
    for user, permissions in ((natsauth.ADMIN, {"publish": [">"], "subscribe": [">"]}), (WEBHOOKS_USER, None)):
        allowed = permissions or WEBHOOKS_PERMISSIONS
        rules = {"publish": {"allow": allowed["publish"]}, "subscribe": {"allow": allowed["subscribe"]}}
        password = json.dumps(credentials[user].password)
        users.append(f"{{user: {json.dumps(user)}, password: {password}, permissions: {json.dumps(rules)}}}")
    config = tmp_path / "nats.conf"
    config.write_text(
        nats_config(port, tmp_path / "jetstream") + "authorization {\n  users: [\n" + "\n".join(users) + "\n  ]\n}\n"
    )
    process = ManagedProcess(
        "nats", [find_binary("nats-server"), "-c", str(config)], dict(os.environ), tmp_path / "n.log"
    )
    process.start()
    try:
        wait_until(lambda: tcp_open(port), 30, "nats-server")
        yield Nats(f"nats://127.0.0.1:{port}", credentials, folder)
    finally:
        process.stop()


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
        await natsutil.kv_put_if(
            self.js, "cortado_requests", record.id, record.SerializeToString(), 0, msg_ttl=RECORD_TTL
        )
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
        info = await self.js.consumer_info(names.WEBHOOKS_STREAM, names.WEBHOOKS_CONSUMER)
        stream = await self.js.stream_info(names.WEBHOOKS_STREAM)
        return info.num_pending == 0 and info.num_ack_pending == 0 and stream.state.messages == 0


@pytest.fixture
async def mesh(nats_server: Nats) -> AsyncIterator[Mesh]:
    """The operator's connection, with the requests and secrets buckets made and every record write watched."""
    nc = await natsutil.connect(nats_server.url, "test", credentials=nats_server.credentials[natsauth.ADMIN])
    js = nc.jetstream()
    await js.create_key_value(KeyValueConfig(bucket="cortado_requests", history=1, max_bytes=64 * 1024**2))
    await js.create_key_value(KeyValueConfig(bucket=names.WEBHOOK_SECRETS_BUCKET, history=1, max_bytes=64 * 1024**2))
    running = Mesh(nc, js)

    async def written(msg: Msg) -> None:
        if msg.data:
            running.writes.append(records_pb2.RequestRecord.FromString(msg.data))

    await nc.subscribe("$KV.cortado_requests.>", cb=written)
    await nc.flush()
    yield running
    await natsutil.drain(nc)


async def add_secrets(mesh: Mesh, api: str, rotated: bool = True) -> list[str]:
    """Give the API signing secrets: a current one and (rotated) a previous one still signing for an hour."""
    current, previous = webhooks.new_secret(), webhooks.new_secret()
    stored = control_pb2.WebhookSecrets(current=current)
    if rotated:
        stored.previous = previous
        stored.previous_until.GetCurrentTime()
        stored.previous_until.seconds += 3600
    kv = await mesh.js.key_value(names.WEBHOOK_SECRETS_BUCKET)
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


@pytest.fixture
async def start_sender(nats_server: Nats) -> AsyncIterator[Callable[..., Awaitable[WebhookSender]]]:
    """start_sender(**CORTADO_settings) -> a sender running in this process as the `webhooks` user."""
    started: list[tuple[WebhookSender, Client]] = []

    async def start(**settings: str) -> WebhookSender:
        env = Env(sender_env(nats_server.url, **settings))
        nc = await natsutil.connect(nats_server.url, "webhooks", credentials=nats_server.credentials[WEBHOOKS_USER])
        sender = WebhookSender(nc.jetstream(), WebhookSettings.from_env(env))
        await sender.__aenter__()
        started.append((sender, nc))
        return sender

    yield start
    for sender, nc in started:
        await sender.__aexit__(None, None, None)
        await natsutil.drain(nc)


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


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    """receiver(script, down_after) -> a started Receiver, stopped after the test."""
    made: list[Receiver] = []

    def make(script: list[int] | None = None, down_after: int | None = None, started: bool = True) -> Receiver:
        receiver = Receiver(script, down_after)
        made.append(receiver)
        if started:
            receiver.start()
        return receiver

    yield make
    for receiver in made:
        receiver.stop()


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


# Tests ------------------------------------------------------------------------------------------------------------


async def test_every_webhook_is_delivered_through_failures_and_an_outage_signed_and_recorded(
    mesh: Mesh, start_sender: Callable[..., Awaitable[WebhookSender]], receivers: Callable[..., Receiver]
) -> None:
    api = unique_name("hooks")
    secrets = await add_secrets(mesh, api)
    # Fewer at once than there are webhooks: jobs wait for a free slot.
    await start_sender(CORTADO_WEBHOOK_CONCURRENCY="2")
    hooks = [receivers([500, 500], down_after=2) for _ in range(3)]
    submitted = [await mesh.submit(api, hook.url) for hook in hooks]

    async def down_a_while() -> bool:
        # Two 500s, then at least two attempts that found the port closed.
        for record in submitted:
            delivery = await mesh.webhook(record.id)
            if delivery.attempts < 4 or not is_connection_error(delivery.last_error):
                return False
        return True

    await eventually(down_a_while, what="every webhook failed twice with 500, then twice on a closed port")
    for hook in hooks:
        assert [r.status for r in hook.received] == [500, 500]
        hook.start(script=[])

    async def all_delivered() -> bool:
        states = [(await mesh.webhook(r.id)).state for r in submitted]
        return all(s == records_pb2.WEBHOOK_STATE_DELIVERED for s in states)

    await eventually(all_delivered, what="every webhook delivered")
    await eventually(mesh.drained, what="every job acknowledged")

    for record, hook in zip(submitted, hooks, strict=True):
        stored, headers = await mesh.stored(record.id)
        # Only the webhook's state changed, and the record keeps its TTL.
        bare = records_pb2.RequestRecord()
        bare.CopyFrom(stored)
        bare.ClearField("webhook")
        original = records_pb2.RequestRecord()
        original.CopyFrom(record)
        original.ClearField("webhook")
        assert bare == original
        assert headers["Nats-TTL"] == str(RECORD_TTL)

        assert [r.status for r in hook.received] == [500, 500, 200]
        for received in hook.received:
            verify(received, secrets, stored)
        assert len({r.headers["webhook-id"] for r in hook.received}) == 1

        delivery = stored.webhook
        assert delivery.state == records_pb2.WEBHOOK_STATE_DELIVERED
        assert delivery.last_error == ""
        assert delivery.first_attempt_at.ToNanoseconds() < delivery.last_attempt_at.ToNanoseconds()

        history = await eventually(
            lambda record=record: _delivered_history(mesh, record.id), what="the last write of the record seen"
        )
        # The test's own write, then one write per attempt.
        assert [h.attempts for h in history] == list(range(delivery.attempts + 1))
        errors = [h.last_error for h in history[1:]]
        assert errors[:2] == ["HTTP 500: boom", "HTTP 500: boom"]
        assert all(is_connection_error(e) for e in errors[2:-1]), errors
        assert len(errors[2:-1]) >= 2
        assert errors[-1] == ""
        assert [h.state for h in history[1:-1]] == [records_pb2.WEBHOOK_STATE_PENDING] * (len(history) - 2)

    assert attempts_counted(api, "delivered") == 3
    assert attempts_counted(api, "failed") == sum(len(mesh.history(r.id)) - 2 for r in submitted)


async def _delivered_history(mesh: Mesh, request_id: str) -> list[records_pb2.WebhookDelivery] | None:
    history = mesh.history(request_id)
    return history if history and history[-1].state == records_pb2.WEBHOOK_STATE_DELIVERED else None


async def test_a_receiver_answering_410_stops_delivery_with_no_more_attempts(
    mesh: Mesh, start_sender: Callable[..., Awaitable[WebhookSender]], receivers: Callable[..., Receiver]
) -> None:
    api = unique_name("hooks")
    secrets = await add_secrets(mesh, api, rotated=False)
    await start_sender()
    hook = receivers([410])
    record = await mesh.submit(api, hook.url)

    async def stopped() -> records_pb2.WebhookDelivery | None:
        delivery = await mesh.webhook(record.id)
        return delivery if delivery.state == records_pb2.WEBHOOK_STATE_STOPPED else None

    delivery = await eventually(stopped, what="delivery stopped")
    assert (delivery.attempts, delivery.last_error) == (1, "HTTP 410: gone")
    # The job is gone from JetStream: nothing can try again.
    await eventually(mesh.drained, what="the job acknowledged")
    # A job published again for it (a retried publish) is dropped as a duplicate.
    assert (await mesh.publish_job(record)).duplicate
    assert [r.status for r in hook.received] == [410]
    verify(hook.received[0], secrets, (await mesh.stored(record.id))[0])
    assert attempts_counted(api, "gone") == 1


async def test_a_webhook_failing_for_the_whole_retry_period_is_given_up(
    mesh: Mesh, start_sender: Callable[..., Awaitable[WebhookSender]], receivers: Callable[..., Receiver]
) -> None:
    api = unique_name("hooks")
    await add_secrets(mesh, api)
    await start_sender(CORTADO_WEBHOOK_RETRY_SECONDS="1")
    hook = receivers([500] * 1000)
    record = await mesh.submit(api, hook.url)

    async def given_up() -> records_pb2.WebhookDelivery | None:
        delivery = await mesh.webhook(record.id)
        return delivery if delivery.state == records_pb2.WEBHOOK_STATE_GAVE_UP else None

    delivery = await eventually(given_up, what="delivery given up")
    await eventually(mesh.drained, what="the job acknowledged")
    assert delivery.attempts >= 2
    assert delivery.last_error == "HTTP 500: boom"
    span = delivery.last_attempt_at.ToNanoseconds() - delivery.first_attempt_at.ToNanoseconds()
    assert span > 1e9
    assert len(hook.received) == delivery.attempts
    assert attempts_counted(api, "gave_up") == 1
    assert attempts_counted(api, "failed") == delivery.attempts - 1


async def test_unknown_urls_refused_by_policy_stop_without_a_post(
    mesh: Mesh, start_sender: Callable[..., Awaitable[WebhookSender]]
) -> None:
    api = unique_name("hooks")
    await add_secrets(mesh, api)
    await start_sender()
    record = await mesh.submit(api, "http://169.254.169.254/latest/meta-data/")

    async def stopped() -> records_pb2.WebhookDelivery | None:
        delivery = await mesh.webhook(record.id)
        return delivery if delivery.state == records_pb2.WEBHOOK_STATE_STOPPED else None

    delivery = await eventually(stopped, what="delivery refused")
    assert delivery.attempts == 0
    assert delivery.last_error.startswith("webhook URL host 169.254.169.254 is a link-local address")
    await eventually(mesh.drained, what="the job acknowledged")
    assert attempts_counted(api, "refused") == 1


def _start_process(nats_server: Nats, tmp_path: Path, name: str, **settings: str) -> tuple[ManagedProcess, str]:
    address = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORTADO_")}
    env.update(sender_env(nats_server.url, **settings))
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "CORTADO_NATS_USER": WEBHOOKS_USER,
            "CORTADO_NATS_PASSWORD_FILE": str(natsauth.password_file(nats_server.credentials_dir, WEBHOOKS_USER)),
            "CORTADO_WEBHOOKS_ADDRESS": address,
        }
    )
    process = ManagedProcess(name, [sys.executable, "-m", "services.webhooks"], env, tmp_path / f"{name}.log", ROOT)
    process.start()
    return process, address


@pytest.mark.timeout(300)
async def test_a_sender_killed_mid_retry_loses_nothing_the_next_one_delivers(
    mesh: Mesh, nats_server: Nats, receivers: Callable[..., Receiver], tmp_path: Path
) -> None:
    api = unique_name("hooks")
    secrets = await add_secrets(mesh, api)
    hook = receivers(started=False)
    metrics_port = free_port()
    settings = {"CORTADO_WEBHOOK_FIRST_RETRY_SECONDS": "0.2", "CORTADO_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}"}
    first, address = _start_process(nats_server, tmp_path, "webhooks1", **settings)
    try:
        await eventually(lambda: asyncio.to_thread(_serving, address), what=f"the sender serving\n{first.log_tail()}")
        record = await mesh.submit(api, hook.url)

        async def retrying() -> bool:
            delivery = await mesh.webhook(record.id)
            return delivery.attempts >= 2 and is_connection_error(delivery.last_error)

        await eventually(retrying, what="two failed attempts")
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        assert f'cortado_webhook_attempts_total{{api="{api}",outcome="failed"}}' in metrics
    finally:
        first.signal(signal.SIGKILL)
        first.stop()
    failed = (await mesh.webhook(record.id)).attempts

    hook.start()
    second, address = _start_process(nats_server, tmp_path, "webhooks2", **settings)
    try:

        async def delivered() -> records_pb2.WebhookDelivery | None:
            delivery = await mesh.webhook(record.id)
            return delivery if delivery.state == records_pb2.WEBHOOK_STATE_DELIVERED else None

        # A job held by the killed sender comes back after the consumer's ack wait (a minute).
        delivery = await eventually(delivered, timeout=200, what=f"delivered\n{second.log_tail()}")
        await eventually(mesh.drained, what="the job acknowledged")
    finally:
        second.stop()
    assert second.popen is not None and second.popen.returncode == 0, second.log_tail()
    assert delivery.attempts >= failed + 1
    assert [r.status for r in hook.received] == [200]
    verify(hook.received[0], secrets, (await mesh.stored(record.id))[0])
    errors = [h.last_error for h in mesh.history(record.id)[1:]]
    assert errors[-1] == ""
    assert all(is_connection_error(e) for e in errors[:-1]), errors


def _serving(address: str) -> bool:
    try:
        return grpc_serving(address)
    except Exception:
        return False
