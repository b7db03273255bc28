"""Nothing lost (README, "Guarantees"): services and the broker killed or stopped while clients submit, and graceful
drain.

Clients POST through Envoy in a loop and retry what is refused (503, connection errors): every request answered
200 must complete with its own result. The handler logs each run, so runs can be counted per request id.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from cortado import _names, records
from cortado.v1 import records_pb2
from tests.faults import ClientLoop, assert_all_completed, final, is_handler_process
from tests.helpers import eventually
from tests.meshcalls import submit
from tests.reliability.support import Private, RecordingApi, private_mesh, status_of

pytestmark = pytest.mark.reliability

GRACE_SECONDS = 8
ACK_WAIT_SECONDS = 4
BEFORE = 30
"""Requests accepted before the fault."""
AFTER = 40
"""Requests accepted after the restart."""


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    with private_mesh(
        tmp_path_factory.mktemp("restarts"),
        CORTADO_ACK_WAIT_SECONDS=str(ACK_WAIT_SECONDS),
        CORTADO_GRACE_SECONDS=str(GRACE_SECONDS),
    ) as running:
        yield running


@pytest.fixture(scope="module")
def api(private: Private) -> RecordingApi:
    return private.deploy({"handler": {"max_concurrency": 4}})


def restart(private: Private, name: str) -> None:
    if name == "nats":
        private.mesh.start_nats()
    else:
        private.mesh.start_service(name)


@pytest.mark.parametrize(
    ("name", "sig"),
    [
        ("ingest", signal.SIGKILL),
        ("ingest", signal.SIGTERM),
        ("results", signal.SIGKILL),
        ("results", signal.SIGTERM),
        ("scheduler", signal.SIGKILL),
        ("scheduler", signal.SIGTERM),
        ("nats", signal.SIGTERM),
        ("executor", signal.SIGKILL),
    ],
    ids=lambda v: v.name if isinstance(v, signal.Signals) else v,
)
def test_every_accepted_request_completes_across_a_restart(
    private: Private, api: RecordingApi, name: str, sig: signal.Signals
) -> None:
    process = private.mesh.processes[name]
    with ClientLoop(private.mesh.http_url, api.name) as clients:
        clients.reach(BEFORE)
        process.signal(sig)
        assert process.popen is not None
        code = process.popen.wait(GRACE_SECONDS * 3)
        if sig == signal.SIGTERM:
            assert code == 0, f"{name} exited {code} on SIGTERM; its log ends:\n{process.log_tail()}"
        restart(private, name)
        mark = clients.count()
        clients.reach(mark + AFTER)

    accepted = clients.accepted
    print(f"{name} {sig.name}: {len(accepted)} accepted, retried {dict(clients.retried)}")
    assert_all_completed(private.http, api.name, accepted)
    assert not clients.unexpected, f"answers other than 200, 429 and 503: {clients.unexpected[:5]}"
    runs = {request_id: len(api.starts(request_id)) for request_id in accepted}
    assert all(count >= 1 for count in runs.values()), runs
    if name in ("ingest", "results", "scheduler"):
        # No handler process died: no request may run twice.
        twice = {request_id: count for request_id, count in runs.items() if count > 1}
        assert not twice, f"ran more than once although no handler process died: {twice}"


def test_handler_processes_do_not_outlive_a_killed_executor(private: Private, api: RecordingApi) -> None:
    # A handler process whose executor is gone would keep pulling work (and hold its GPU) unsupervised,
    # beside the one the restarted executor starts for the same replica.
    before = [pid for pid in api.handler_pids() if is_handler_process(pid)]
    assert before
    executor = private.mesh.processes["executor"]
    executor.signal(signal.SIGKILL)
    assert executor.popen is not None
    executor.popen.wait(10)
    restart(private, "executor")
    request_id = submit(private.http, api.name, json={"n": 1})
    assert final(private.http, api.name, request_id)["result"] == {"n": 1}

    def gone() -> bool:
        left = [pid for pid in before if is_handler_process(pid)]
        assert not left, f"handler processes {left} still run after their executor was killed"
        return True

    eventually(gone, timeout=10, what="the killed executor's handler processes exited")


def test_sigterm_drains_an_executor_in_flight_work_finishes_and_queued_work_waits_for_the_next(
    private: Private,
) -> None:
    api = private.deploy({"handler": {"max_concurrency": 2}})
    http = private.http
    ids = {submit(http, api.name, json={"n": n, "sleep": 1}): n for n in range(8)}
    eventually(lambda: len(api.starts()) >= 2, what="two requests in flight")

    executor = private.mesh.processes["executor"]
    executor.signal(signal.SIGTERM)
    signalled = time.monotonic()
    assert executor.popen is not None
    code = executor.popen.wait(GRACE_SECONDS * 3)
    took = time.monotonic() - signalled
    assert code == 0, f"the executor exited {code}; its log ends:\n{executor.log_tail()}"
    assert took < GRACE_SECONDS, f"the executor took {took:.1f}s to drain (grace {GRACE_SECONDS}s)"

    # Whatever had begun finished before the executor exited; the rest is back in the queue, untouched.
    started = {request_id for request_id, _ in api.starts()}
    assert started and started < ids.keys(), started
    assert api.ends() == dict.fromkeys(started, 1), api.events()
    for request_id in started:
        assert status_of(http, api.name, request_id) == "completed"
    for request_id in ids.keys() - started:
        assert status_of(http, api.name, request_id) == "in_queue"

    restart(private, "executor")
    assert_all_completed(http, api.name, ids)
    # A drain hands work back without running it: every request ran exactly once.
    assert api.ends() == dict.fromkeys(ids, 1), api.events()
    assert sorted(request_id for request_id, _ in api.starts()) == sorted(ids)


class FinalWrites:
    """Counts the final records written to the requests bucket, from before a fault to after it.

    A durable consumer of the bucket's stream, created before the load and stored on disk like the stream (so it
    outlives a killed broker), receives every write; a final record is never overwritten, so each one stays in the
    stream until it is delivered. A request written final twice would be counted twice.
    """

    def __init__(self, nats_url: str) -> None:
        self.finals: Counter[str] = Counter()
        self._seen: set[int] = set()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(nats_url),), daemon=True)

    def __enter__(self) -> FinalWrites:
        self._thread.start()
        assert self._ready.wait(30), self._errors
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def count(self, request_id: str) -> int:
        with self._lock:
            return self.finals[request_id]

    async def _run(self, nats_url: str) -> None:
        try:
            nc = await nats.connect(nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
            stream = f"KV_{_names.REQUESTS_BUCKET}"
            subscription = await nc.jetstream().pull_subscribe(
                f"$KV.{_names.REQUESTS_BUCKET}.>",
                durable="test-final-writes",
                stream=stream,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW, ack_policy=AckPolicy.EXPLICIT),
            )
        except BaseException as exc:
            self._errors.append(exc)
            raise
        self._ready.set()
        while not self._stop.is_set():
            try:
                batch = await subscription.fetch(256, timeout=0.5)
            except Exception:  # no message yet, or the broker is away: try again
                await asyncio.sleep(0.05)
                continue
            for msg in batch:
                with self._lock:
                    fresh = msg.metadata.sequence.stream not in self._seen
                    self._seen.add(msg.metadata.sequence.stream)
                if fresh and msg.data:
                    record = records_pb2.RequestRecord.FromString(msg.data)
                    if records.is_final(record.status):
                        with self._lock:
                            self.finals[record.id] += 1
                with contextlib.suppress(Exception):
                    await msg.ack()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 5)


def test_a_sigkilled_broker_restarted_on_its_store_keeps_every_accepted_request_with_exactly_one_final_record(
    private: Private, api: RecordingApi
) -> None:
    nats_process = private.mesh.processes["nats"]
    with FinalWrites(private.mesh.admin_nats_url) as writes:
        with ClientLoop(private.mesh.http_url, api.name) as clients:
            clients.reach(BEFORE)
            # Mid-load: requests are being queued, run and recorded when the broker dies without warning.
            nats_process.signal(signal.SIGKILL)
            assert nats_process.popen is not None
            assert nats_process.popen.wait(10) == -signal.SIGKILL
            private.mesh.start_nats()
            mark = clients.count()
            clients.reach(mark + AFTER)

        accepted = clients.accepted
        print(f"nats SIGKILL: {len(accepted)} accepted, retried {dict(clients.retried)}")
        assert_all_completed(private.http, api.name, accepted)
        assert not clients.unexpected, f"answers other than 200, 429 and 503: {clients.unexpected[:5]}"
        eventually(
            lambda: all(writes.count(request_id) for request_id in accepted),
            timeout=30,
            what="the final record of every accepted request seen by the counting consumer",
        )
        # Nothing acknowledged was lost: every accepted request has its final record (above), and exactly one.
        # (A broker killed before it wrote an ack down delivers that request again as a first delivery: the
        # executor then finds its final record where it would create in_progress, and leaves it as it stands.)
        twice = {request_id: n for request_id in accepted if (n := writes.count(request_id)) != 1}
        assert not twice, f"final record written more than once after the broker's SIGKILL: {twice}"
