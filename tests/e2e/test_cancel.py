"""Cancel: `DELETE /<api>/<id>`, Requests/Cancel over gRPC, `cortado cancel`, `Client.cancel`, through Envoy.

A queued request ends `cancelled` at once and never runs; cancelling twice answers the same; a finished
request answers 409 with its final state and changes nothing; an unknown id answers 404. `cancelled` is
final: it ends `?wait=` and Watch, is kept and shown like any final state, and is counted in metrics.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from cortado import records
from cortado.client import Client, SchedulerClient
from cortado.mesh import LocalMesh
from cortado.v1 import records_pb2
from tests.e2e.cli_support import Cli
from tests.e2e.test_metrics import scrape, value
from tests.helpers import eventually
from tests.meshcalls import Deploy, result, submit

pytestmark = pytest.mark.e2e

# Records every call; holds each request until the file `release` beside the calls log exists.
HELD = """
import os
import time


class Handler:
    def __init__(self, config):
        self.calls = config["calls"]
        self.release = config["release"]

    def handle_async(self, payload, request_id):
        with open(self.calls, "a") as log:
            log.write(request_id + "\\n")
        while not os.path.exists(self.release) and not payload.get("quick"):
            time.sleep(0.02)
        return {"ok": True}
"""


class Held:
    """An API of HELD running one request at a time on one replica."""

    def __init__(self, name: str, folder: Path) -> None:
        self.name = name
        self.calls = folder / "calls.log"
        self.release = folder / "release"

    def called(self) -> list[str]:
        """The request ids the handler was called with."""
        return self.calls.read_text().split() if self.calls.exists() else []


@pytest.fixture
def held(deploy: Deploy, tmp_path: Path) -> Iterator[Held]:
    folder = tmp_path / "held"
    folder.mkdir()
    config = {"calls": str(folder / "calls.log"), "release": str(folder / "release")}
    api = deploy(
        HELD,
        api={
            "handler": {"max_concurrency": 1, "config": config},
            "autoscaling": {"min_replicas": 1, "max_replicas": 1},
        },
    )
    deployed = Held(api, folder)
    yield deployed
    deployed.release.touch()


def queued_behind(http: httpx.Client, scheduler: SchedulerClient, held: Held, count: int) -> tuple[str, list[str]]:
    """Submit a request that holds the handler, then `count` more that wait in the queue (not prefetched)."""
    first = submit(http, held.name, json={})
    eventually(lambda: held.called() == [first], what="the first request running")
    # The replica fetches one request ahead (it holds two of a priority, one running): held by the executor.
    ahead = [submit(http, held.name, json={})]
    eventually(lambda: scheduler.describe(held.name).in_flight == 2, what="a request fetched ahead")
    waiting = [submit(http, held.name, json={}) for _ in range(count)]
    assert scheduler.describe(held.name).queued == count
    return first, ahead + waiting


def test_a_queued_request_ends_cancelled_at_once_never_runs_and_a_second_cancel_answers_the_same(
    http: httpx.Client, scheduler: SchedulerClient, held: Held
) -> None:
    first, later = queued_behind(http, scheduler, held, 2)
    target = later[-1]
    cancelled = http.delete(f"/{held.name}/{target}")
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert set(body) == {"id", "status", "timestamp"}
    assert (body["id"], body["status"]) == (target, "cancelled")
    assert http.get(f"/{held.name}/{target}").json() == body
    again = http.delete(f"/{held.name}/{target}")
    assert (again.status_code, again.json()) == (200, body)
    # It left the queue at once; the others run; it never does.
    assert scheduler.describe(held.name).queued == 1
    held.release.touch()
    for request_id in [first, *later[:-1]]:
        assert result(http, held.name, request_id)["status"] == "completed"
    assert target not in held.called()
    assert http.get(f"/{held.name}/{target}").json() == body


def test_a_request_an_executor_already_fetched_ahead_never_runs(
    http: httpx.Client, scheduler: SchedulerClient, held: Held
) -> None:
    first, later = queued_behind(http, scheduler, held, 1)
    prefetched = later[0]
    reply = http.delete(f"/{held.name}/{prefetched}")
    assert (reply.status_code, reply.json()["status"]) == (200, "cancelled")
    held.release.touch()
    assert result(http, held.name, first)["status"] == "completed"
    assert result(http, held.name, later[1])["status"] == "completed"
    assert prefetched not in held.called()
    assert http.get(f"/{held.name}/{prefetched}").json()["status"] == "cancelled"


def test_cancelling_a_finished_request_answers_409_with_its_final_state_and_changes_nothing(
    http: httpx.Client, held: Held, grpc_client: Client
) -> None:
    done = submit(http, held.name, json={"quick": True})
    final = result(http, held.name, done)
    assert final["status"] == "completed"
    refused = http.delete(f"/{held.name}/{done}")
    assert refused.status_code == 409, refused.text
    body = refused.json()
    assert body["message"] == (
        f"request {done!r} of API {held.name!r} already completed: only a queued or running request can be cancelled"
    )
    assert {k: v for k, v in body.items() if k != "message"} == final
    assert http.get(f"/{held.name}/{done}").json() == final
    with pytest.raises(grpc.RpcError) as error:
        grpc_client.cancel(held.name, done)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.value.details() == body["message"]


def test_an_unknown_id_or_api_answers_404_with_a_message(http: httpx.Client, held: Held, grpc_client: Client) -> None:
    unknown = "0" * 32
    reply = http.delete(f"/{held.name}/{unknown}")
    assert reply.status_code == 404
    assert reply.json() == {
        "id": unknown,
        "status": "not_found",
        "message": records.not_found_message(held.name, unknown),
    }
    assert http.delete(f"/{held.name}/not-an-id").status_code == 404
    no_api = http.delete(f"/no-such-api/{unknown}")
    assert (no_api.status_code, no_api.json()["message"]) == (404, "API 'no-such-api' is not deployed")
    with pytest.raises(grpc.RpcError) as error:
        grpc_client.cancel(held.name, unknown)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_grpc_the_client_the_cli_curl_and_urllib_cancel_the_same_way(
    http: httpx.Client, scheduler: SchedulerClient, held: Held, grpc_client: Client, cli: Cli, mesh: LocalMesh
) -> None:
    _, later = queued_behind(http, scheduler, held, 4)
    by_client, by_cli, by_curl, by_urllib = later[1:]
    view = grpc_client.cancel(held.name, by_client)
    assert (view.id, view.status) == (by_client, records_pb2.REQUEST_STATUS_CANCELLED)
    assert view.HasField("finished_at")

    printed = cli("cancel", held.name, by_cli, "--output", "json")
    assert printed.code == 0, printed
    assert json.loads(printed.out)["status"] == "cancelled"

    curl = subprocess.run(
        ["curl", "-sS", "-X", "DELETE", f"{mesh.http_url}/{held.name}/{by_curl}", "-w", "\\n%{http_code}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    curl_body, curl_status = curl.stdout.rsplit("\n", 1)
    assert (curl_status, json.loads(curl_body)["status"]) == ("200", "cancelled")

    request = urllib.request.Request(f"{mesh.http_url}/{held.name}/{by_urllib}", method="DELETE")
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert (answer.status, json.loads(answer.read())["status"]) == (200, "cancelled")
    finished = urllib.request.Request(f"{mesh.http_url}/{held.name}/{'0' * 32}", method="DELETE")
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(finished, timeout=30)
    assert missing.value.code == 404
    missing.value.close()

    for request_id in (by_client, by_cli, by_curl, by_urllib):
        assert http.get(f"/{held.name}/{request_id}").json()["status"] == "cancelled"
    assert scheduler.describe(held.name).queued == 0


def test_a_cancel_ends_a_waiting_get_and_a_watch_with_the_cancelled_state(
    http: httpx.Client, scheduler: SchedulerClient, held: Held, grpc_client: Client
) -> None:
    _, later = queued_behind(http, scheduler, held, 1)
    target = later[-1]
    answers: dict[str, Any] = {}

    def wait_get() -> None:
        answers["get"] = http.get(f"/{held.name}/{target}", params={"wait": 30}).json()

    watching = threading.Event()

    def watch() -> None:
        states = []
        for view in grpc_client.watch(held.name, target, timeout=30):
            states.append(view.status)
            watching.set()
        answers["watch"] = states

    threads = [threading.Thread(target=wait_get), threading.Thread(target=watch)]
    for thread in threads:
        thread.start()
    assert watching.wait(30), "the watch sent no first state"
    time.sleep(0.5)  # the waiting GET is on its way too
    assert http.delete(f"/{held.name}/{target}").status_code == 200
    for thread in threads:
        thread.join(30)
    assert answers["get"]["status"] == "cancelled"
    assert answers["watch"] == [records_pb2.REQUEST_STATUS_IN_QUEUE, records_pb2.REQUEST_STATUS_CANCELLED]


def test_cancels_are_counted_in_ingests_metrics(
    http: httpx.Client, scheduler: SchedulerClient, held: Held, mesh: LocalMesh
) -> None:
    _, later = queued_behind(http, scheduler, held, 1)
    before = value(scrape(mesh, "ingest"), "cortado_requests_finished_total", api=held.name, status="cancelled") or 0
    assert http.delete(f"/{held.name}/{later[-1]}").status_code == 200
    http.delete(f"/{held.name}/{later[-1]}")  # a second cancel changes nothing and counts nothing
    after = value(scrape(mesh, "ingest"), "cortado_requests_finished_total", api=held.name, status="cancelled")
    assert after == before + 1


# A running request of each kind: an async handler awaiting, a plain one polling cortado.cancelled().
RUNNING_ASYNC = """
import asyncio


class Handler:
    def __init__(self, config):
        self.marks = config["marks"]

    async def handle_async(self, payload, request_id):
        with open(self.marks, "a") as out:
            out.write("started " + request_id + "\\n")
        if payload.get("quick"):
            return {"quick": True}
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            with open(self.marks, "a") as out:
                out.write("stopped " + request_id + "\\n")
            raise
        return {"stopped": False}
"""

RUNNING_PLAIN = """
import time

from cortado import cancelled


class Handler:
    def __init__(self, config):
        self.marks = config["marks"]

    def handle_async(self, payload, request_id):
        with open(self.marks, "a") as out:
            out.write("started " + request_id + "\\n")
        deadline = time.monotonic() + (0 if payload.get("quick") else 60)
        while time.monotonic() < deadline:
            if cancelled(request_id):
                with open(self.marks, "a") as out:
                    out.write("stopped " + request_id + "\\n")
                return {"stopped": True}
            time.sleep(0.02)
        return {"stopped": False}
"""


@pytest.mark.parametrize("source", [RUNNING_ASYNC, RUNNING_PLAIN], ids=["async", "plain"])
def test_a_running_request_is_stopped_ends_cancelled_and_is_not_retried(
    deploy: Deploy, http: httpx.Client, tmp_path: Path, source: str
) -> None:
    marks = tmp_path / "marks.log"
    api = deploy(source, api={"handler": {"config": {"marks": str(marks)}}})
    request_id = submit(http, api, json={})
    eventually(lambda: marks.exists() and f"started {request_id}" in marks.read_text(), what="the handler started")
    reply = http.delete(f"/{api}/{request_id}")
    assert (reply.status_code, reply.json()["status"]) == (200, "cancelled")
    eventually(lambda: f"stopped {request_id}" in marks.read_text(), what="the handler stopped")
    # Its outcome is dropped: it stays cancelled, and it never starts again; the replica serves the next one.
    assert result(http, api, submit(http, api, json={"quick": True}))["status"] == "completed"
    assert http.get(f"/{api}/{request_id}").json()["status"] == "cancelled"
    assert marks.read_text().count(f"started {request_id}") == 1
