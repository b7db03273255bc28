"""The executor's side of cancelling, and the webhooks of the final records it writes: real NATS, the real executor.

Ingest's part of a cancel is played here with the operator's NATS credentials, as the contract has it: the
`cancelled` record written with compare-and-set, the work item deleted from the API's queue, then the id
announced on `cortado.cancel.<api>`. Every handler appends a line per call to a file, so a test can tell
which requests ran, in which process, and how they ended.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from cortado._env import Env
from cortado.client import SchedulerClient
from cortado.mesh import LocalMesh
from cortado.v1 import records_pb2
from services.executor.config import ExecutorSettings
from tests.helpers import eventually
from tests.integration.canceloperator import Api, Operator, deploy_api, new_id, status_of
from tests.meshcalls import MESH_ENV, Deploy, result, submit

pytestmark = pytest.mark.integration


CANCEL_GRACE_SECONDS = float(
    MESH_ENV.get("CORTADO_CANCEL_GRACE_SECONDS", ExecutorSettings.from_env(Env({})).cancel_grace_seconds)
)
"""The session mesh's executor setting (10 s unless tests/meshcalls.py's MESH_ENV shortens it)."""


# A plain handler; what it does depends on the payload's "mode":
#   quick: returns at once; hold: runs until the file `release` exists, never looking at cancelled();
#   poll: runs until cortado.cancelled(request_id) turns true, then notes "stopped"; sleep: sleeps "seconds".
PLAIN = """
import os
import time

from cortado import cancelled


class Handler:
    def __init__(self, config):
        self.log = config["log"]
        self.release = config["release"]

    def note(self, *words):
        with open(self.log, "a") as f:
            f.write(" ".join(str(w) for w in words) + "\\n")

    def handle_async(self, payload, request_id):
        mode = payload.get("mode", "quick")
        self.note("start", request_id, os.getpid())
        deadline = time.monotonic() + 60
        if mode == "poll":
            while not cancelled(request_id) and time.monotonic() < deadline:
                time.sleep(0.02)
            self.note("stopped", request_id, cancelled(request_id))
        elif mode == "hold":
            while not os.path.exists(self.release) and time.monotonic() < deadline:
                time.sleep(0.02)
        elif mode == "sleep":
            time.sleep(payload["seconds"])
        return {"pid": os.getpid()}
"""


# An async def handler: "sleep" sleeps a minute unless cancelled, noting "cancelled" when it is.
ASYNC = """
import asyncio
import os


class Handler:
    def __init__(self, config):
        self.log = config["log"]

    def note(self, *words):
        with open(self.log, "a") as f:
            f.write(" ".join(str(w) for w in words) + "\\n")

    async def handle_async(self, payload, request_id):
        self.note("start", request_id, os.getpid())
        if payload.get("mode") == "sleep":
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                self.note("cancelled", request_id, os.getpid())
                raise
        return {"pid": os.getpid()}
"""


@pytest.fixture(scope="module")
def operator(mesh: LocalMesh) -> Iterator[Operator]:
    running = Operator(mesh)
    yield running
    running.close()


def test_a_prefetched_request_never_runs_nor_one_announced_before_it_was_delivered(
    http: httpx.Client, scheduler: SchedulerClient, deploy: Deploy, tmp_path: Path, operator: Operator
) -> None:
    api = deploy_api(deploy, tmp_path, PLAIN)
    running = submit(http, api.name, json={"mode": "hold"})
    eventually(lambda: api.started() == [running], what="the first request running")
    prefetched = submit(http, api.name, json={})
    eventually(lambda: scheduler.describe(api.name).in_flight == 2, what="the second request fetched ahead")
    waiting = submit(http, api.name, json={})
    assert scheduler.describe(api.name).queued == 1  # the executor holds no more than two: this one waits

    # Announced while still in the queue (as if ingest's delete had not happened yet): the executor remembers it.
    operator.cancel(api.name, waiting, delete=False)
    # The prefetched one is let go, which makes room: the waiting one is delivered, and dropped on arrival.
    operator.cancel(api.name, prefetched)

    def both_let_go() -> bool:
        status = scheduler.describe(api.name)
        return (status.queued, status.in_flight) == (0, 1)

    eventually(both_let_go, what="the prefetched request let go, the announced one taken off the queue and dropped")
    api.release.touch()
    assert result(http, api.name, running)["status"] == "completed"
    after = submit(http, api.name, json={})
    assert result(http, api.name, after)["status"] == "completed"
    assert api.started() == [running, after]
    for request_id in (prefetched, waiting):
        assert status_of(http, api.name, request_id) == "cancelled"


def cancel_running_and_check_its_process_goes_on(
    http: httpx.Client, api: Api, operator: Operator, mode: str, stopped: Callable[[str], bool]
) -> None:
    """Cancel a request running in `mode`: stopped(id) comes true within 3 s, the request reads cancelled, and the
    same process (no restart) serves the next request; the cancelled one never runs again."""
    doomed = submit(http, api.name, json={"mode": mode})
    eventually(lambda: api.started() == [doomed], what="the handler running")
    began = time.monotonic()
    operator.cancel(api.name, doomed)
    eventually(lambda: stopped(doomed), timeout=5, what="the handler stopped")
    assert time.monotonic() - began < 3
    assert status_of(http, api.name, doomed) == "cancelled"
    after = submit(http, api.name, json={})
    assert result(http, api.name, after)["result"]["pid"] == int(api.pid_of(doomed)[0])  # no restart
    assert api.started() == [doomed, after]  # never retried


def test_a_running_async_handler_is_cancelled_and_its_process_goes_on(
    http: httpx.Client, deploy: Deploy, tmp_path: Path, operator: Operator
) -> None:
    api = deploy_api(deploy, tmp_path, ASYNC)
    cancel_running_and_check_its_process_goes_on(
        http, api, operator, "sleep", lambda doomed: [f[0] for f in api.lines("cancelled")] == [doomed]
    )


def test_a_job_whose_cancel_announcement_was_lost_is_cancelled_by_its_in_progress_write(
    http: httpx.Client, deploy: Deploy, tmp_path: Path, operator: Operator
) -> None:
    api = deploy_api(deploy, tmp_path, ASYNC)
    request_id = new_id()
    # Ingest wrote the record (the request was still queued) but neither deleted it nor announced it.
    operator.write_record(
        records_pb2.RequestRecord(id=request_id, api=api.name, status=records_pb2.REQUEST_STATUS_CANCELLED)
    )
    operator.enqueue(api.name, request_id, b'{"mode": "sleep"}')
    eventually(lambda: [f[0] for f in api.lines("cancelled")] == [request_id], timeout=5, what="the task cancelled")
    assert status_of(http, api.name, request_id) == "cancelled"
    after = submit(http, api.name, json={})
    assert result(http, api.name, after)["status"] == "completed"
    assert api.started() == [request_id, after]


def test_a_plain_handler_polling_cancelled_stops_early_and_the_request_reads_cancelled(
    http: httpx.Client, deploy: Deploy, tmp_path: Path, operator: Operator
) -> None:
    api = deploy_api(deploy, tmp_path, PLAIN)
    cancel_running_and_check_its_process_goes_on(
        http, api, operator, "poll", lambda doomed: api.lines("stopped") == [[doomed, "True"]]
    )


def test_a_plain_handler_ignoring_the_cancel_has_its_process_restarted_after_the_grace_period(
    http: httpx.Client, deploy: Deploy, tmp_path: Path, operator: Operator
) -> None:
    api = deploy_api(deploy, tmp_path, PLAIN, concurrency=2)
    doomed = submit(http, api.name, json={"mode": "hold"})
    bystander = submit(http, api.name, json={"mode": "hold"})
    eventually(lambda: sorted(api.started()) == sorted([doomed, bystander]), what="both running")
    [first_pid] = set(api.pid_of(doomed) + api.pid_of(bystander))
    cancelled_at = time.monotonic()
    operator.cancel(api.name, doomed)

    def bystander_again() -> bool:
        assert status_of(http, api.name, doomed) == "cancelled"  # never failed, at any point
        return len(api.pid_of(bystander)) == 2

    # The process is stopped after the grace period; the bystander goes back to the queue and runs again.
    eventually(bystander_again, timeout=CANCEL_GRACE_SECONDS + 30, interval=0.2, what="the bystander run again")
    assert time.monotonic() - cancelled_at >= CANCEL_GRACE_SECONDS * 0.9
    second_pid = api.pid_of(bystander)[1]
    assert second_pid != first_pid
    api.release.touch()
    assert result(http, api.name, bystander)["status"] == "completed"
    after = submit(http, api.name, json={})
    assert result(http, api.name, after)["result"]["pid"] == int(second_pid)
    assert api.started().count(doomed) == 1  # never retried
    assert status_of(http, api.name, doomed) == "cancelled"
    assert operator.record(doomed).status == records_pb2.REQUEST_STATUS_CANCELLED  # type: ignore[union-attr]


def test_a_final_record_the_executor_writes_carries_its_webhook_pending_and_queues_its_delivery(
    http: httpx.Client, deploy: Deploy, tmp_path: Path, operator: Operator
) -> None:
    api = deploy_api(deploy, tmp_path, PLAIN)
    hooked = submit(http, api.name, json={}, headers={"Cortado-Webhook": "https://hooks.example.com/done"})
    plain = submit(http, api.name, json={})
    for request_id in (hooked, plain):
        assert result(http, api.name, request_id)["status"] == "completed"
    record = eventually(lambda: operator.final_write(hooked), timeout=5, what="the final write seen")
    assert record.status == records_pb2.REQUEST_STATUS_COMPLETED
    assert (record.webhook.url, record.webhook.state) == (
        "https://hooks.example.com/done",
        records_pb2.WEBHOOK_STATE_PENDING,
    )
    assert not operator.record(plain).HasField("webhook")  # type: ignore[union-attr]
    job = records_pb2.WebhookJob(api=api.name, id=hooked)
    eventually(lambda: job in operator.webhook_jobs, timeout=5, what="the webhook job published")
    assert all(j.id != plain for j in operator.webhook_jobs)
    if operator.webhook_senders() == 0:
        assert operator.stored_webhook_job(api.name, hooked) == job  # it waits on the stream for a sender


def test_a_delivery_that_finds_a_final_record_pending_its_webhook_queues_it_again(
    http: httpx.Client, deploy: Deploy, tmp_path: Path, operator: Operator
) -> None:
    api = deploy_api(deploy, tmp_path, PLAIN)
    request_id = new_id()
    # Its final record was written, but the executor that wrote it stopped before queuing the webhook and acking.
    done = records_pb2.RequestRecord(
        id=request_id, api=api.name, status=records_pb2.REQUEST_STATUS_COMPLETED, result_json=b'{"first": true}'
    )
    done.webhook.url, done.webhook.state = "https://hooks.example.com/again", records_pb2.WEBHOOK_STATE_PENDING
    operator.write_record(done)
    operator.enqueue(api.name, request_id, b'{"mode": "sleep", "seconds": 0.3}')
    job = records_pb2.WebhookJob(api=api.name, id=request_id)
    eventually(lambda: job in operator.webhook_jobs, timeout=10, what="the webhook queued again")
    assert http.get(f"/{api.name}/{request_id}").json()["result"] == {"first": True}  # the first outcome stands
