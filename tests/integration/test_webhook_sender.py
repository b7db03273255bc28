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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import KeyValueConfig

from cortado import _names, _nats, _natsauth
from cortado._env import Env
from cortado.mesh import ManagedProcess, find_binary, free_port, grpc_serving, nats_config, tcp_open, wait_until
from cortado.v1 import records_pb2
from services.webhooks.config import WebhookSettings
from services.webhooks.sender import (
    WebhookSender,
)
from tests.deploy.manifests import ROOT
from tests.helpers import unique_name
from tests.integration.webhooksetup import (
    RECORD_TTL,
    WEBHOOKS_PERMISSIONS,
    WEBHOOKS_USER,
    Mesh,
    Nats,
    Receiver,
    add_secrets,
    attempts_counted,
    eventually,
    is_connection_error,
    sender_env,
    verify,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[Nats]:
    """A nats-server with JetStream on a free port: users `admin` (everything) and `webhooks` (the sender's)."""
    port = free_port()
    folder = tmp_path / "credentials"
    credentials = _natsauth.generate(folder, [_natsauth.ADMIN, WEBHOOKS_USER])
    users = []
    for user, permissions in ((_natsauth.ADMIN, {"publish": [">"], "subscribe": [">"]}), (WEBHOOKS_USER, None)):
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


@pytest.fixture
async def mesh(nats_server: Nats) -> AsyncIterator[Mesh]:
    """The operator's connection, with the requests and secrets buckets made and every record write watched."""
    nc = await _nats.connect(nats_server.url, "test", credentials=nats_server.credentials[_natsauth.ADMIN])
    js = nc.jetstream()
    await js.create_key_value(KeyValueConfig(bucket="cortado_requests", history=1, max_bytes=64 * 1024**2))
    await js.create_key_value(KeyValueConfig(bucket=_names.WEBHOOK_SECRETS_BUCKET, history=1, max_bytes=64 * 1024**2))
    running = Mesh(nc, js)

    async def written(msg: Msg) -> None:
        if msg.data:
            running.writes.append(records_pb2.RequestRecord.FromString(msg.data))

    await nc.subscribe("$KV.cortado_requests.>", cb=written)
    await nc.flush()
    yield running
    await _nats.drain(nc)


@pytest.fixture
async def start_sender(nats_server: Nats) -> AsyncIterator[Callable[..., Awaitable[WebhookSender]]]:
    """start_sender(**CORTADO_settings) -> a sender running in this process as the `webhooks` user."""
    started: list[tuple[WebhookSender, Client]] = []

    async def start(**settings: str) -> WebhookSender:
        env = Env(sender_env(nats_server.url, **settings))
        nc = await _nats.connect(nats_server.url, "webhooks", credentials=nats_server.credentials[WEBHOOKS_USER])
        sender = WebhookSender(nc.jetstream(), WebhookSettings.from_env(env))
        await sender.__aenter__()
        started.append((sender, nc))
        return sender

    yield start
    for sender, nc in started:
        await sender.__aexit__(None, None, None)
        await _nats.drain(nc)


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
            partial(_delivered_history, mesh, record.id), what="the last write of the record seen"
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
            "CORTADO_NATS_PASSWORD_FILE": str(_natsauth.password_file(nats_server.credentials_dir, WEBHOOKS_USER)),
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
