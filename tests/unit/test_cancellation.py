"""Cancelling requests inside the executor, without NATS: the handler process's side (services.executor.worker,
`cortado.cancelled`) over a real socket pair, and the Dispatcher's decisions with a fake broker and store."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from nats.js.errors import KeyWrongLastSequenceError

import cortado
from cortado import cancellation, names, records
from cortado.runtime import HandlerInstance
from cortado.v1 import control_pb2, handler_pb2, records_pb2
from services.executor import dispatch
from services.executor.channel import frame, open_channel, read_frame
from services.executor.dispatch import Dispatcher, RecentIds
from services.executor.worker import CANCELLED_ERROR, Outbox, Worker

NORMAL = records_pb2.PRIORITY_NORMAL


def new_id() -> str:
    return uuid.uuid4().hex


# --- cortado.cancelled ------------------------------------------------------------------------------------------------


def test_cancelled_is_false_outside_a_handler_process_and_true_only_between_mark_and_forget() -> None:
    request_id = new_id()
    assert cortado.cancelled is cancellation.cancelled
    assert cortado.cancelled(request_id) is False
    cancellation.mark(request_id)
    assert cortado.cancelled(request_id) is True
    assert cortado.cancelled(new_id()) is False
    cancellation.forget(request_id)
    assert cortado.cancelled(request_id) is False


# --- RecentIds --------------------------------------------------------------------------------------------------------


def test_recent_ids_keep_at_most_size_ids_each_for_ttl_seconds() -> None:
    now = [0.0]
    recent = RecentIds(size=3, ttl=10.0, clock=lambda: now[0])
    for name in ("a", "b", "c", "d"):
        recent.add(name)
    assert "a" not in recent  # pushed out by the fourth
    assert all(name in recent for name in ("b", "c", "d")) and len(recent) == 3
    now[0] = 5.0
    recent.add("b")  # seen again: its time starts over
    now[0] = 10.0
    assert "c" not in recent and "d" not in recent
    assert "b" in recent
    now[0] = 15.0
    assert "b" not in recent and len(recent) == 0


# --- the handler process ----------------------------------------------------------------------------------------------


@dataclass
class Process:
    """A Worker running in this event loop, fed over a real socket pair as the executor feeds it."""

    worker: Worker
    to_worker: asyncio.StreamWriter
    from_worker: asyncio.StreamReader
    outcomes: dict[str, handler_pb2.Outcome] = field(default_factory=dict)

    def send(self, message: handler_pb2.ToHandler) -> None:
        self.to_worker.write(frame(message))

    def run(self, request_id: str, payload: bytes = b"{}") -> None:
        self.send(
            handler_pb2.ToHandler(
                jobs=[handler_pb2.Job(id=request_id, content_type="application/json", payload=payload)]
            )
        )

    def cancel(self, *request_ids: str) -> None:
        self.send(handler_pb2.ToHandler(cancel=request_ids))

    async def outcome(self, request_id: str, timeout: float = 5.0) -> handler_pb2.Outcome:
        async with asyncio.timeout(timeout):
            while request_id not in self.outcomes:
                message = await read_frame(self.from_worker, handler_pb2.FromHandler)
                for outcome in message.outcomes:
                    self.outcomes[outcome.id] = outcome
        return self.outcomes[request_id]


@pytest.fixture
async def start_worker() -> AsyncIterator[Any]:
    started: list[tuple[Worker, asyncio.Task[None], asyncio.Task[None], list[asyncio.StreamWriter]]] = []

    async def start(handler_class: type, **spec: Any) -> Process:
        ours, theirs = socket.socketpair()
        their_reader, their_writer = await open_channel(theirs)
        our_reader, our_writer = await open_channel(ours)
        api = control_pb2.ApiSpec(name="t", **spec)
        worker = Worker(api, HandlerInstance.create(handler_class, {}, None), Outbox(their_writer), grace=1.0)
        tasks = (asyncio.create_task(worker.receive(their_reader)), asyncio.create_task(worker.run()))
        started.append((worker, *tasks, [their_writer, our_writer]))
        return Process(worker, our_writer, our_reader)

    yield start
    for worker, receiving, running, writers in started:
        worker.stop()
        await asyncio.wait_for(running, 5)
        receiving.cancel()
        await asyncio.gather(receiving, return_exceptions=True)
        for writer in writers:
            writer.close()
            await writer.wait_closed()


async def test_an_async_handlers_call_is_cancelled_and_its_outcome_is_request_cancelled(start_worker: Any) -> None:
    seen: list[str] = []
    both_started = asyncio.Event()

    class Handler:
        async def handle_async(self, payload: Any, request_id: str) -> dict[str, Any]:
            seen.append(f"start {request_id}")
            if len(seen) == 2:
                both_started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                seen.append(f"cancelled {request_id}")
                raise
            return {"slept": True}

    process = await start_worker(Handler, max_concurrency=2)
    doomed, other = new_id(), new_id()
    process.run(doomed)
    process.run(other)
    await asyncio.wait_for(both_started.wait(), 5)
    process.cancel(doomed)
    outcome = await process.outcome(doomed)
    assert (outcome.completed, outcome.error.type) == (False, CANCELLED_ERROR)
    assert f"cancelled {doomed}" in seen
    assert f"cancelled {other}" not in seen  # the other call goes on
    assert not cancellation.cancelled(doomed)  # forgotten once answered


async def test_a_plain_handler_sees_cancelled_turn_true_and_whatever_it_returns_is_request_cancelled(
    start_worker: Any,
) -> None:
    polled = threading.Event()

    class Handler:
        def handle_async(self, payload: Any, request_id: str) -> dict[str, Any]:
            deadline = time.monotonic() + 10
            while not cortado.cancelled(request_id) and time.monotonic() < deadline:
                polled.set()
                time.sleep(0.01)
            return {"stopped_early": cortado.cancelled(request_id)}

    process = await start_worker(Handler)
    request_id = new_id()
    process.run(request_id)
    await asyncio.to_thread(polled.wait, 5)
    began = time.monotonic()
    process.cancel(request_id)
    outcome = await process.outcome(request_id)
    assert time.monotonic() - began < 2
    assert (outcome.completed, outcome.error.type) == (False, CANCELLED_ERROR)


async def test_a_batch_goes_on_for_its_other_requests_and_only_the_cancelled_one_is_request_cancelled(
    start_worker: Any,
) -> None:
    flags: dict[str, bool] = {}
    entered = threading.Event()
    go = threading.Event()

    class Handler:
        def handle_batch(self, payloads: list[Any], request_ids: list[str]) -> list[dict[str, Any]]:
            entered.set()
            go.wait(10)
            flags.update({i: cortado.cancelled(i) for i in request_ids})
            return [{"ok": True} for _ in request_ids]

    process = await start_worker(Handler, max_batch_size=2, batch_interval={"seconds": 5})
    kept, doomed = new_id(), new_id()
    process.run(kept)
    process.run(doomed)
    await asyncio.to_thread(entered.wait, 5)
    process.cancel(doomed)
    await asyncio.sleep(0.1)  # the cancel frame reaches the process
    go.set()
    assert (await process.outcome(doomed)).error.type == CANCELLED_ERROR
    assert (await process.outcome(kept)).completed
    assert flags == {kept: False, doomed: True}


async def test_a_job_cancelled_before_it_starts_never_runs_and_an_unknown_cancel_is_ignored(
    start_worker: Any,
) -> None:
    calls: list[str] = []
    called = threading.Event()
    go = threading.Event()

    class Handler:
        def handle_async(self, payload: Any, request_id: str) -> dict[str, Any]:
            calls.append(request_id)
            called.set()
            go.wait(10)
            return {}

    process = await start_worker(Handler, max_concurrency=1)
    first, waiting, unknown = new_id(), new_id(), new_id()
    process.run(first)
    process.run(waiting)  # waits for the one slot
    await asyncio.to_thread(called.wait, 5)
    process.cancel(waiting, unknown)
    await asyncio.sleep(0.1)
    assert not cancellation.cancelled(unknown)  # never sent here: nothing to remember
    go.set()
    assert (await process.outcome(first)).completed
    assert (await process.outcome(waiting)).error.type == CANCELLED_ERROR
    assert calls == [first]


# --- the Dispatcher ---------------------------------------------------------------------------------------------------


class FakeMsg:
    """A JetStream message as the Dispatcher uses it; records acks and naks."""

    def __init__(self, item: records_pb2.WorkItem, delivered: int = 1) -> None:
        self.data = item.SerializeToString()
        self.headers: dict[str, str] = {}
        self.metadata = SimpleNamespace(num_delivered=delivered)
        self.acked = self.naked = 0

    async def ack(self) -> None:
        self.acked += 1

    async def nak(self, delay: float | None = None) -> None:
        self.naked += 1

    async def in_progress(self) -> None:
        pass

    async def term(self) -> None:
        pass


class FakeStore:
    """RecordStore over a dict, with compare-and-set on revisions."""

    def __init__(self) -> None:
        self.records: dict[str, tuple[records_pb2.RequestRecord, int]] = {}

    async def read(self, request_id: str) -> tuple[records_pb2.RequestRecord | None, int]:
        return self.records.get(request_id, (None, 0))

    async def create(self, request_id: str, new: records_pb2.RequestRecord, retention_seconds: float) -> int:
        if request_id in self.records:
            raise KeyWrongLastSequenceError
        self.records[request_id] = (new, 1)
        return 1

    async def advance(
        self, request_id: str, new: records_pb2.RequestRecord, revision: int, retention_seconds: float
    ) -> tuple[bool, records_pb2.RequestRecord | None, int]:
        current, stored = self.records.get(request_id, (None, 0))
        if current is not None and not records.may_move(current.status, new.status):
            return False, current, stored
        self.records[request_id] = (new, stored + 1)
        return True, new, stored + 1


class FakeJs:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, str | None]] = []

    async def publish(self, subject: str, payload: bytes, stream: str | None = None, headers: Any = None) -> None:
        self.published.append((subject, payload, stream))


class FakeWriter:
    def __init__(self) -> None:
        self.sent: list[handler_pb2.ToHandler] = []

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.sent.append(handler_pb2.ToHandler.FromString(data[4:]))

    def jobs(self) -> list[str]:
        return [job.id for message in self.sent for job in message.jobs]

    def cancels(self) -> list[str]:
        return [i for message in self.sent for i in message.cancel]


@dataclass
class Fixture:
    dispatcher: Dispatcher
    store: FakeStore
    js: FakeJs
    writer: FakeWriter
    stuck: list[bool]

    def deliver(self, request_id: str, delivered: int = 1, webhook: str = "") -> FakeMsg:
        item = records_pb2.WorkItem(id=request_id, api="t", content_type="application/json", payload=b"{}")
        item.priority = NORMAL
        item.webhook_url = webhook
        msg = FakeMsg(item, delivered)
        self.dispatcher._taker(NORMAL)(msg)  # type: ignore[arg-type]
        return msg


def make(room: int = 1, grace: float = 5.0, **spec: Any) -> Fixture:
    store, js, writer, stuck = FakeStore(), FakeJs(), FakeWriter(), []
    api = control_pb2.ApiSpec(name="t", max_retries=3, **spec)
    api.retention.FromSeconds(60)
    dispatcher = Dispatcher(
        api,
        js,
        store,
        writer,
        room,
        30.0,
        lambda _: None,  # type: ignore[arg-type]
        cancel_grace_seconds=grace,
        on_stuck=lambda: stuck.append(True),
    )
    return Fixture(dispatcher, store, js, writer, stuck)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def cancelled_record(request_id: str) -> records_pb2.RequestRecord:
    return records_pb2.RequestRecord(id=request_id, api="t", status=records_pb2.REQUEST_STATUS_CANCELLED)


async def test_a_prefetched_request_that_is_cancelled_is_acked_and_never_sent() -> None:
    f = make(room=1)
    running, prefetched = new_id(), new_id()
    f.deliver(running)
    ahead = f.deliver(prefetched)
    await settle()
    assert f.writer.jobs() == [running]  # the process has room for one: the other waits here
    f.dispatcher.cancel(prefetched)
    await settle()
    assert ahead.acked == 1 and prefetched not in f.dispatcher._held
    f.dispatcher.on_frame(handler_pb2.FromHandler(outcomes=[handler_pb2.Outcome(id=running, completed=True)]))
    await settle()
    assert f.writer.jobs() == [running]
    assert f.writer.cancels() == []


async def test_a_request_announced_before_it_arrives_is_acked_and_never_held() -> None:
    f = make()
    request_id = new_id()
    f.dispatcher.cancel(request_id)
    msg = f.deliver(request_id)
    await settle()
    assert msg.acked == 1 and f.writer.jobs() == [] and not f.dispatcher._held


async def test_a_running_request_is_cancelled_in_the_process_and_its_outcome_dropped_uncounted() -> None:
    f = make(grace=5.0)
    request_id = new_id()
    counted: list[bool] = []
    f.dispatcher._on_outcome = counted.append
    msg = f.deliver(request_id)
    await settle()
    f.store.records[request_id] = (cancelled_record(request_id), 7)  # what ingest wrote
    f.dispatcher.cancel(request_id)
    assert f.writer.cancels() == [request_id]
    failed = handler_pb2.Outcome(id=request_id, error=records_pb2.RequestError(type=CANCELLED_ERROR))
    f.dispatcher.on_frame(handler_pb2.FromHandler(outcomes=[failed]))
    await settle()
    assert msg.acked == 1 and not f.dispatcher._held
    assert f.store.records[request_id][0].status == records_pb2.REQUEST_STATUS_CANCELLED
    assert counted == [] and f.js.published == [] and f.stuck == []


async def test_a_cancelled_job_still_running_after_the_grace_period_stops_its_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    f = make(room=2, grace=0.05)
    doomed, other = new_id(), new_id()
    msgs = [f.deliver(doomed), f.deliver(other)]
    await settle()
    f.store.records[doomed] = (cancelled_record(doomed), 7)
    f.dispatcher.cancel(doomed)
    await asyncio.sleep(0.2)
    assert f.stuck == [True]
    # The process is stopped: the cancelled request is acked, the other goes back to the queue.
    await f.dispatcher.finish(process_died=True, grace=1.0)
    assert (msgs[0].acked, msgs[0].naked) == (1, 0)
    assert (msgs[1].acked, msgs[1].naked) == (0, 1)
    assert f.store.records[doomed][0].status == records_pb2.REQUEST_STATUS_CANCELLED


async def test_the_in_progress_write_that_finds_a_cancelled_record_cancels_the_running_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dispatch, "IN_PROGRESS_AFTER", 0.0)
    f = make()
    request_id = new_id()
    f.store.records[request_id] = (cancelled_record(request_id), 3)  # the announcement never came
    f.deliver(request_id)
    await asyncio.sleep(0.05)
    assert f.writer.jobs() == [request_id]
    assert f.writer.cancels() == [request_id]
    assert f.dispatcher._held[request_id].cancelled


async def test_a_final_record_carries_its_webhook_pending_and_its_delivery_is_queued() -> None:
    f = make()
    with_hook, without = new_id(), new_id()
    f.deliver(with_hook, webhook="https://hooks.example.com/x")
    await settle()
    f.dispatcher.on_frame(handler_pb2.FromHandler(outcomes=[handler_pb2.Outcome(id=with_hook, completed=True)]))
    await settle()
    f.deliver(without)
    await settle()
    f.dispatcher.on_frame(handler_pb2.FromHandler(outcomes=[handler_pb2.Outcome(id=without, completed=True)]))
    await settle()
    stored = f.store.records[with_hook][0]
    assert (stored.status, stored.priority) == (records_pb2.REQUEST_STATUS_COMPLETED, NORMAL)
    assert (stored.webhook.url, stored.webhook.state) == (
        "https://hooks.example.com/x",
        records_pb2.WEBHOOK_STATE_PENDING,
    )
    assert not f.store.records[without][0].HasField("webhook")
    assert [(s, stream) for s, _, stream in f.js.published] == [
        (names.webhook_subject("t", with_hook), names.WEBHOOKS_STREAM)
    ]
    assert records_pb2.WebhookJob.FromString(f.js.published[0][1]) == records_pb2.WebhookJob(api="t", id=with_hook)


async def test_the_apis_webhook_is_used_when_the_request_has_none() -> None:
    f = make(webhook_url="https://hooks.example.com/api")
    request_id = new_id()
    f.deliver(request_id)
    await settle()
    f.dispatcher.on_frame(handler_pb2.FromHandler(outcomes=[handler_pb2.Outcome(id=request_id, completed=True)]))
    await settle()
    assert f.store.records[request_id][0].webhook.url == "https://hooks.example.com/api"
    assert len(f.js.published) == 1


@pytest.mark.parametrize("state", [records_pb2.WEBHOOK_STATE_PENDING, records_pb2.WEBHOOK_STATE_DELIVERED])
async def test_a_redelivery_that_finds_a_final_record_acks_it_and_queues_a_pending_webhook_again(state: int) -> None:
    f = make()
    request_id = new_id()
    done = records_pb2.RequestRecord(id=request_id, api="t", status=records_pb2.REQUEST_STATUS_CANCELLED)
    done.webhook.url, done.webhook.state = "https://hooks.example.com/x", state
    f.store.records[request_id] = (done, 4)
    msg = f.deliver(request_id, delivered=2)
    await settle()
    assert msg.acked == 1 and f.writer.jobs() == []
    queued = [s for s, _, _ in f.js.published]
    assert queued == ([names.webhook_subject("t", request_id)] if state == records_pb2.WEBHOOK_STATE_PENDING else [])
