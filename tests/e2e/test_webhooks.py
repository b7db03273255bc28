"""Webhooks end to end: requests through Envoy, a real HTTP receiver on loopback, signatures checked with the
`standardwebhooks` package, delivery state read over gRPC and through the CLI, secrets made, rotated and deleted.

The receiver is a thread with http.server on 127.0.0.1 and a free port, which the mesh's URL policy allows (only
loopback ports of the mesh itself are refused). Retries follow the sender's settings: with the defaults (first
retry within 1 s, doubling) the slowest test here takes some 15 s; the test mesh may make them quicker
(CORTADO_WEBHOOK_FIRST_RETRY_SECONDS, CORTADO_WEBHOOK_MAX_RETRY_SECONDS).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import grpc
import httpx
import pytest
from standardwebhooks.webhooks import WebhookVerificationError

from cortado.client import Client, SchedulerClient
from cortado.mesh import LocalMesh, free_port
from cortado.v1 import records_pb2
from tests.e2e.webhookreceiver import SECRET_LINE, Cli, Delivery, Receiver, verify, webhook_of
from tests.helpers import eventually, unique_name, write_project
from tests.meshcalls import Deploy, submit

ECHO = """
class Handler:
    def handle_async(self, payload, request_id):
        return {"echo": payload, "big": 123456789012345678901234567890}
"""


SLOW_RETRIES = 60.0
"""Longest a test waits for something retries bring about (the sender's defaults take ~15 s for four attempts)."""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    running.up()
    yield running
    running.down()


# Delivery through failures ------------------------------------------------------------------------------------------


def test_every_webhook_arrives_signed_through_failures_and_an_outage(
    mesh: LocalMesh,
    http: httpx.Client,
    grpc_client: Client,
    scheduler: SchedulerClient,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    cli = Cli(mesh)
    # Each request's first two attempts fail (500), then the receiver answers 503 until it goes down.
    receiver.failures = 2
    receiver.accepting = False
    name = unique_name("hooks")
    project = write_project(tmp_path, name, ECHO, {"webhook": {"url": receiver.url("/api-hook")}})
    code, out, err = cli("deploy", str(project))
    assert code == 0, (out, err)
    assert out == f"{name}: live (version 1)\n"
    # The secret is shown once, with the progress, and a line saying to keep it.
    [shown] = [m.groupdict() for m in SECRET_LINE.finditer(err)]
    assert shown["api"] == name
    secret = shown["secret"]
    assert "keep it now, where your webhook receiver can read it: it is shown only this once" in err
    assert f"`cortado webhook-secret rotate {name}` makes a new one" in err
    try:
        code, out, err = cli("deploy", str(project))
        assert code == 0 and "webhook signing secret" not in out + err, (out, err)

        by_api = [submit(http, name, json={"n": n}) for n in range(3)]
        by_header = [
            submit(http, name, json={"n": n}, headers={"Cortado-Webhook": receiver.url(f"/own-hook?n={n}")})
            for n in range(3)
        ]
        by_grpc = grpc_client.submit(name, b'{"n": 9}', "application/json", webhook=receiver.url("/grpc-hook"))
        ids = [*by_api, *by_header, by_grpc]

        # Two failed attempts each: pending, the failure recorded, every attempt signed.
        eventually(lambda: all(len(receiver.of(i)) >= 2 for i in ids), SLOW_RETRIES, what="two attempts each")
        for request_id in ids:
            delivery = webhook_of(grpc_client, name, request_id)
            assert delivery.state == records_pb2.WEBHOOK_STATE_PENDING, delivery
            assert delivery.attempts >= 2
            assert delivery.last_error.startswith("HTTP 50"), delivery.last_error
            for attempt in receiver.of(request_id):
                verify(secret, attempt)
        assert scheduler.describe(name).webhooks_undelivered == len(ids)

        # Down: attempts fail to connect, and `cortado describe` counts the webhooks waiting.
        receiver.down()

        def refused_each() -> bool:
            return all("Connection refused" in webhook_of(grpc_client, name, i).last_error for i in ids)

        eventually(refused_each, SLOW_RETRIES, interval=0.2, what="an attempt refused each while down")
        code, out, _ = cli("describe", name)
        assert code == 0 and f"webhooks:    {len(ids)} undelivered (pending or retrying)" in out, out
        code, out, _ = cli("get", name, "-o", "json")
        assert code == 0 and json.loads(out)["webhooks_undelivered"] == len(ids), out
        code, out, _ = cli("get", "-o", "json")
        [listed] = [api for api in json.loads(out) if api["name"] == name]
        assert listed["webhooks_undelivered"] == len(ids)

        # Back up, accepting: every webhook arrives, its body what GET /<api>/<id> answers, byte for byte.
        receiver.accepting = True
        receiver.up()
        eventually(lambda: all(receiver.accepted(i) for i in ids), SLOW_RETRIES, what="every webhook delivered")
        for request_id in ids:
            delivered = receiver.accepted(request_id)
            assert delivered is not None
            verify(secret, delivered)
            answer = http.get(f"/{name}/{request_id}")
            assert answer.status_code == 200
            assert delivered.body == answer.content
            assert json.loads(delivered.body)["status"] == "completed"
            assert b"123456789012345678901234567890" in delivered.body
            assert delivered.headers["content-type"] == "application/json"
            assert delivered.headers["webhook-id"] == request_id
            assert len(delivered.headers["webhook-signature"].split()) == 1
            # The same message id on every attempt, so receivers can drop duplicates.
            assert {d.id for d in receiver.of(request_id)} == {request_id}

            def settled(request_id: str = request_id) -> records_pb2.WebhookDelivery | None:
                delivery = webhook_of(grpc_client, name, request_id)
                return delivery if delivery.state == records_pb2.WEBHOOK_STATE_DELIVERED else None

            delivery = eventually(settled, what=f"{request_id} recorded as delivered")
            assert delivery.attempts >= 4, delivery  # two 500s, at least one refused, the one that landed
            assert delivery.last_error == ""
            assert delivery.first_attempt_at.seconds <= delivery.last_attempt_at.seconds
        # The request's own URL wins over the API's.
        assert {receiver.path(i) for i in by_api} == {"/api-hook"}
        assert {receiver.path(i) for i in by_header} == {f"/own-hook?n={n}" for n in range(3)}
        assert receiver.path(by_grpc) == "/grpc-hook"
        eventually(lambda: scheduler.describe(name).webhooks_undelivered == 0, what="none undelivered")
        code, out, _ = cli("describe", name)
        assert "webhooks:    0 undelivered" in out, out
    finally:
        with contextlib.suppress(grpc.RpcError):
            scheduler.delete(name, force=True)


def test_a_410_stops_retrying(
    http: httpx.Client, grpc_client: Client, deploy: Deploy, receiver: Receiver, scheduler: SchedulerClient
) -> None:
    name = deploy(ECHO)
    request_id = submit(http, name, json={}, headers={"Cortado-Webhook": receiver.url("/gone")})

    def stopped() -> records_pb2.WebhookDelivery | None:
        delivery = webhook_of(grpc_client, name, request_id)
        return delivery if delivery.state == records_pb2.WEBHOOK_STATE_STOPPED else None

    delivery = eventually(stopped, SLOW_RETRIES, what="delivery stopped by a 410")
    assert delivery.attempts == 1
    assert delivery.last_error == "HTTP 410: receiver says 410"
    # Longer than the first retry's wait (1 s at most by default): no second attempt comes.
    time.sleep(2.0)
    assert len(receiver.of(request_id)) == 1
    assert scheduler.describe(name).webhooks_undelivered == 0


def test_a_request_without_a_webhook_has_none(http: httpx.Client, grpc_client: Client, deploy: Deploy) -> None:
    name = deploy(ECHO)
    request_id = submit(http, name, json={})
    eventually(lambda: http.get(f"/{name}/{request_id}", params={"wait": 30}).json()["status"] == "completed")
    view = grpc_client.get(name, request_id)
    assert not view.HasField("webhook") or view.webhook.url == ""


# Refused URLs --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "is a link-local address"),
        ("http://metadata.google.internal/computeMetadata/v1/", "is a cloud metadata service"),
        ("ftp://hooks.example.com/", "must start with http:// or https://"),
        ("http://ingest:50051/", "is a service of the mesh itself"),
    ],
)
def test_a_refused_webhook_url_is_a_400_at_submit_and_nothing_is_queued(
    http: httpx.Client, grpc_client: Client, deploy: Deploy, scheduler: SchedulerClient, url: str, reason: str
) -> None:
    name = deploy(ECHO)
    answer = http.post(f"/{name}", json={}, headers={"Cortado-Webhook": url})
    assert answer.status_code == 400, answer.text
    message = answer.json()["message"]
    assert message.startswith("webhook URL") and reason in message, message
    with pytest.raises(grpc.RpcError) as refused:
        grpc_client.submit(name, b"{}", "application/json", webhook=url)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason in str(refused.value.details())
    assert scheduler.describe(name).queued == 0


def test_a_loopback_port_of_the_mesh_is_refused(http: httpx.Client, deploy: Deploy, mesh: LocalMesh) -> None:
    name = deploy(ECHO)
    answer = http.post(f"/{name}", json={}, headers={"Cortado-Webhook": f"{mesh.http_url}/{name}"})
    assert answer.status_code == 400, answer.text
    assert "a port of the mesh itself" in answer.json()["message"]


def test_a_refused_webhook_url_in_the_configuration_fails_the_deploy(deploy: Deploy) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        deploy(ECHO, {"webhook": {"url": "http://169.254.169.254/"}}, wait=False)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = str(refused.value.details())
    assert "webhook.url is refused: webhook URL host 169.254.169.254 is a link-local address" in details, details


# Secrets -------------------------------------------------------------------------------------------------------------


def test_rotation_signs_with_both_secrets_until_the_previous_one_expires(
    mesh: LocalMesh,
    http: httpx.Client,
    scheduler: SchedulerClient,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    cli = Cli(mesh)
    name = unique_name("rotate")
    project = write_project(tmp_path, name, ECHO, {"webhook": {"url": receiver.url("/hook")}})
    reply = scheduler.deploy(project)
    first = reply.webhook_secrets[name]
    assert first.startswith("whsec_")
    assert dict(scheduler.deploy(project).webhook_secrets) == {}

    def delivered(request_id: str) -> Delivery:
        found = eventually(lambda: receiver.accepted(request_id), SLOW_RETRIES, what=f"webhook of {request_id}")
        assert found.body == http.get(f"/{name}/{request_id}").content
        return found

    try:
        eventually(lambda: scheduler.describe(name).ready_replicas, 60, what=f"{name} ready")
        before = delivered(submit(http, name, json={"when": "before"}))
        verify(first, before)

        code, out, err = cli("webhook-secret", "rotate", name, "--keep-previous", "4s", "-o", "json")
        assert code == 0, (out, err)
        rotated = json.loads(out)
        second = rotated["secret"]
        assert rotated["api"] == name and second.startswith("whsec_") and second != first
        until = datetime.fromisoformat(rotated["previous_until"].replace("Z", "+00:00")).timestamp()
        assert 0 < until - time.time() <= 4.5

        during = delivered(submit(http, name, json={"when": "during"}))
        assert len(during.headers["webhook-signature"].split()) == 2
        verify(second, during)
        verify(first, during)

        time.sleep(max(0.0, until - time.time()) + 0.5)
        after = delivered(submit(http, name, json={"when": "after"}))
        assert len(after.headers["webhook-signature"].split()) == 1
        verify(second, after)
        with pytest.raises(WebhookVerificationError):
            verify(first, after)

        # The CLI's own words, and a rotation that keeps no previous secret.
        code, out, _ = cli("webhook-secret", "rotate", name, "--keep-previous", "0")
        assert code == 0
        [line] = [m.groupdict() for m in SECRET_LINE.finditer(out)]
        third = line["secret"]
        assert line["api"] == name and third not in (first, second)
        assert "shown only this once" in out
        now = delivered(submit(http, name, json={"when": "now"}))
        verify(third, now)
        with pytest.raises(WebhookVerificationError):
            verify(second, now)
    finally:
        with contextlib.suppress(grpc.RpcError):
            scheduler.delete(name, force=True)

    # Deleting the API deletes its secret: rotating finds no API, and deploying it again makes a new secret.
    with pytest.raises(grpc.RpcError) as missing:
        scheduler.rotate_webhook_secret(name)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    again = scheduler.deploy(project)
    try:
        assert again.webhook_secrets[name] not in (first, second, third)
    finally:
        scheduler.delete(name, force=True)


def test_rotation_refuses_unknown_apis_and_bad_durations(
    mesh: LocalMesh, scheduler: SchedulerClient, deploy: Deploy
) -> None:
    cli = Cli(mesh)
    code, _, err = cli("webhook-secret", "rotate", unique_name("missing"))
    assert code == 1 and "is not deployed" in err, err
    name = deploy(ECHO, wait=False)
    code, _, err = cli("webhook-secret", "rotate", name, "--keep-previous", "soon")
    assert code == 1 and "--keep-previous must be a duration" in err, err
    with pytest.raises(grpc.RpcError) as refused:
        scheduler.rotate_webhook_secret(name, 31 * 86400)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "previous_valid_for must be from 0 to 30 days" in str(refused.value.details())


# The README's receiver ----------------------------------------------------------------------------------------------

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_receiver(port: int) -> str:
    """The README's webhook receiver, as a user copies it, listening on 127.0.0.1:port instead of 0.0.0.0:8000."""
    blocks: list[str] = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    [source] = [block for block in blocks if "standardwebhooks" in block]
    assert 'HTTPServer(("0.0.0.0", 8000), Receiver)' in source
    return source.replace('("0.0.0.0", 8000)', f'("127.0.0.1", {port})')


def test_the_readme_receiver_verifies_real_webhooks_and_refuses_forged_ones(
    mesh: LocalMesh, http: httpx.Client, grpc_client: Client, scheduler: SchedulerClient, tmp_path: Path
) -> None:
    port = free_port()
    name = unique_name("readme-hook")
    project = write_project(tmp_path, name, ECHO, {"webhook": {"url": f"http://127.0.0.1:{port}/hooks/cortado"}})
    secret = scheduler.deploy(project).webhook_secrets[name]
    script, printed = tmp_path / "receiver.py", tmp_path / "receiver.out"
    script.write_text(readme_receiver(port))
    env = {**os.environ, "WEBHOOK_SECRET": secret, "PYTHONUNBUFFERED": "1"}
    with printed.open("w") as printed_file:
        receiver = subprocess.Popen(
            [sys.executable, str(script)], env=env, stdout=printed_file, stderr=subprocess.DEVNULL
        )
    try:
        eventually(lambda: scheduler.describe(name).ready_replicas, 60, what=f"{name} ready")
        hook_url = f"http://127.0.0.1:{port}/hooks/cortado"
        forged_headers = {"webhook-id": "x", "webhook-timestamp": str(int(time.time())), "webhook-signature": "v1,AA"}

        def forged() -> int | None:
            with contextlib.suppress(httpx.TransportError):
                return httpx.post(hook_url, content=b'{"id":"x"}', headers=forged_headers).status_code
            return None

        assert eventually(forged, 10, what="the receiver listening") == 401
        request_id = submit(http, name, json={"n": 1})
        assert eventually(printed.read_text, SLOW_RETRIES, what="the receiver's line") == f"{request_id} completed\n"

        def delivered() -> records_pb2.WebhookDelivery | None:
            hook = webhook_of(grpc_client, name, request_id)
            return hook if hook.state == records_pb2.WEBHOOK_STATE_DELIVERED else None

        delivery = eventually(delivered, SLOW_RETRIES, what="the delivery recorded")
        assert delivery.attempts == 1 and delivery.last_error == ""
        # The CLI shows where delivery stands too.
        code, out, err = Cli(mesh)("result", name, request_id, "-o", "json")
        assert code == 0, err
        assert json.loads(out)["webhook"] == {"url": hook_url, "state": "delivered", "attempts": 1}
    finally:
        receiver.kill()
        receiver.wait()
        with contextlib.suppress(grpc.RpcError):
            scheduler.delete(name, force=True)
