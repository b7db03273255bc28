"""The Dispatcher's decisions (services.executor.dispatch), with a fake broker, store and handler process: cancels,
final records and their webhooks, redeliveries and the requests it gives up on."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

import pytest
from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError

from cortado import _names, records
from cortado.records import RecordStore
from cortado.v1 import control_pb2, handler_pb2, records_pb2
from services.executor import inprogress
from services.executor.contract import CANCELLED_ERROR
from services.executor.dispatch import Dispatcher
from services.executor.redelivery import DEAD_ERROR_TYPE

NORMAL = records_pb2.PRIORITY_NORMAL


def new_id() -> str:
    return uuid.uuid4().hex


class FakeMsg:
    """A JetStream message as the Dispatcher uses it; records acks, naks and their delays."""

    def __init__(self, item: records_pb2.WorkItem, delivered: int = 1) -> None:
        self.data = item.SerializeToString()
        self.headers: dict[str, str] = {}
        self.metadata = SimpleNamespace(num_delivered=delivered)
        self.acked = self.naked = 0
        self.delays: list[float | None] = []
        self.on_ack: Callable[[], None] = lambda: None

    async def ack(self) -> None:
        self.on_ack()
        self.acked += 1

    async def nak(self, delay: float | None = None) -> None:
        self.naked += 1
        self.delays.append(delay)

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
        self.headers: list[dict[str, str]] = []

    async def publish(self, subject: str, payload: bytes, stream: str | None = None, headers: Any = None) -> None:
        self.published.append((subject, payload, stream))
        self.headers.append(headers or {})


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
    outcomes: list[records_pb2.RequestRecord]
    """The final records the Dispatcher counted (its on_outcome)."""

    def deliver(self, request_id: str, delivered: int = 1, webhook: str = "") -> FakeMsg:
        item = records_pb2.WorkItem(id=request_id, api="t", content_type="application/json", payload=b"{}")
        item.priority = NORMAL
        item.webhook_url = webhook
        msg = FakeMsg(item, delivered)
        self.dispatcher._taker(NORMAL)(msg)  # type: ignore[arg-type]
        return msg


def make(room: int = 1, grace: float = 5.0, max_deliveries: int = 20, **spec: Any) -> Fixture:
    store, js, writer = FakeStore(), FakeJs(), FakeWriter()
    stuck: list[bool] = []
    outcomes: list[records_pb2.RequestRecord] = []
    api = control_pb2.ApiSpec(name="t", max_retries=3, **spec)
    api.retention.FromSeconds(60)
    dispatcher = Dispatcher(
        api,
        cast(JetStreamContext, js),
        cast(RecordStore, store),
        cast(asyncio.StreamWriter, writer),
        room,
        30.0,
        outcomes.append,
        max_deliveries=max_deliveries,
        cancel_grace_seconds=grace,
        on_stuck=lambda: stuck.append(True),
    )
    return Fixture(dispatcher, store, js, writer, stuck, outcomes)


@pytest.fixture
def prompt_marks(monkeypatch: pytest.MonkeyPatch) -> None:
    """in_progress records are written as soon as a job is sent (not IN_PROGRESS_AFTER later)."""
    monkeypatch.setattr(inprogress, "IN_PROGRESS_AFTER", 0.0)


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
    assert f.outcomes == [] and f.js.published == [] and f.stuck == []


async def test_a_cancelled_job_still_running_after_the_grace_period_stops_its_process() -> None:
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


@pytest.mark.usefixtures("prompt_marks")
async def test_the_in_progress_write_that_finds_a_cancelled_record_cancels_the_running_job() -> None:
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
        (_names.webhook_subject("t", with_hook), _names.WEBHOOKS_STREAM)
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
async def test_a_redelivery_that_finds_a_final_record_acks_it_and_queues_a_pending_webhook_again(
    state: records_pb2.WebhookState.ValueType,
) -> None:
    f = make()
    request_id = new_id()
    done = records_pb2.RequestRecord(id=request_id, api="t", status=records_pb2.REQUEST_STATUS_CANCELLED)
    done.webhook.url, done.webhook.state = "https://hooks.example.com/x", state
    f.store.records[request_id] = (done, 4)
    msg = f.deliver(request_id, delivered=2)
    await settle()
    assert msg.acked == 1 and f.writer.jobs() == []
    queued = [s for s, _, _ in f.js.published]
    assert queued == ([_names.webhook_subject("t", request_id)] if state == records_pb2.WEBHOOK_STATE_PENDING else [])


def in_progress_record(request_id: str, attempts: int) -> records_pb2.RequestRecord:
    return records_pb2.RequestRecord(
        id=request_id, api="t", status=records_pb2.REQUEST_STATUS_IN_PROGRESS, attempts=attempts
    )


async def test_an_outcome_is_recorded_and_counted_before_its_request_is_acked() -> None:
    f = make()
    request_id = new_id()
    msg = f.deliver(request_id)
    await settle()
    at_ack: list[int] = []
    msg.on_ack = lambda: at_ack.append(f.store.records[request_id][0].status)
    outcome = handler_pb2.Outcome(id=request_id, completed=True, result_json=b'{"ok": true}', handler_seconds=0.1)
    f.dispatcher.on_frame(handler_pb2.FromHandler(outcomes=[outcome]))
    await settle()
    stored = f.store.records[request_id][0]
    assert (stored.status, stored.result_json, stored.attempts) == (
        records_pb2.REQUEST_STATUS_COMPLETED,
        b'{"ok": true}',
        1,
    )
    assert stored.started_at.seconds > 0 and stored.finished_at.seconds > 0
    assert at_ack == [records_pb2.REQUEST_STATUS_COMPLETED] and msg.acked == 1
    assert f.outcomes == [stored] and not f.dispatcher._held


async def test_a_failed_outcome_keeps_the_handlers_error_and_traceback() -> None:
    f = make()
    request_id = new_id()
    f.deliver(request_id)
    await settle()
    error = records_pb2.RequestError(type="E" * 300, message="it broke", traceback="Traceback ...")
    f.dispatcher.on_frame(handler_pb2.FromHandler(outcomes=[handler_pb2.Outcome(id=request_id, error=error)]))
    await settle()
    stored = f.store.records[request_id][0]
    assert stored.status == records_pb2.REQUEST_STATUS_FAILED
    assert (stored.error.type, stored.error.message, stored.error.traceback) == ("E" * 200, "it broke", "Traceback ...")


@pytest.mark.usefixtures("prompt_marks")
async def test_a_redelivery_after_its_process_died_runs_as_the_next_attempt() -> None:
    f = make()
    request_id = new_id()
    f.store.records[request_id] = (in_progress_record(request_id, 2), 5)
    f.deliver(request_id, delivered=3)
    await asyncio.sleep(0.05)
    assert f.writer.jobs() == [request_id]
    stored, revision = f.store.records[request_id]
    assert (stored.status, stored.attempts, revision) == (records_pb2.REQUEST_STATUS_IN_PROGRESS, 3, 6)


async def test_a_request_whose_process_died_past_max_retries_fails_and_is_kept_as_a_dead_letter() -> None:
    f = make()
    request_id = new_id()
    f.store.records[request_id] = (in_progress_record(request_id, 4), 5)
    msg = f.deliver(request_id, delivered=5)
    await settle()
    assert f.writer.jobs() == [] and msg.acked == 1 and not f.dispatcher._held
    stored = f.store.records[request_id][0]
    assert (stored.status, stored.error.type, stored.attempts) == (
        records_pb2.REQUEST_STATUS_FAILED,
        "HandlerProcessDied",
        4,
    )
    assert [(s, stream) for s, _, stream in f.js.published] == [
        (_names.dead_subject("t", request_id), _names.DEAD_STREAM)
    ]
    assert f.js.published[0][1] == msg.data and f.js.headers[0][DEAD_ERROR_TYPE] == "HandlerProcessDied"
    assert f.outcomes == [stored]


async def test_a_request_delivered_past_the_limit_fails_with_delivery_limit_exceeded() -> None:
    f = make(max_deliveries=2)
    request_id = new_id()
    msg = f.deliver(request_id, delivered=3)
    await settle()
    stored = f.store.records[request_id][0]
    assert (stored.status, stored.error.type, stored.attempts) == (
        records_pb2.REQUEST_STATUS_FAILED,
        "DeliveryLimitExceeded",
        0,
    )
    assert msg.acked == 1 and f.writer.jobs() == [] and len(f.js.published) == 1


@pytest.mark.usefixtures("prompt_marks")
async def test_a_job_handed_back_unstarted_goes_back_to_the_queue_without_counting_an_attempt() -> None:
    f = make()
    request_id = new_id()
    msg = f.deliver(request_id, delivered=2)
    await asyncio.sleep(0.05)
    assert f.store.records[request_id][0].attempts == 1
    f.dispatcher.on_frame(handler_pb2.FromHandler(returned=[request_id]))
    await settle()
    assert (msg.naked, msg.delays, msg.acked) == (1, [0.5], 0)
    assert f.store.records[request_id][0].attempts == 0 and not f.dispatcher._held


async def test_requests_a_dead_process_held_go_back_with_their_attempt_counted() -> None:
    f = make(room=2)
    running, waiting = new_id(), new_id()
    msgs = [f.deliver(running), f.deliver(waiting)]
    await settle()
    assert f.writer.jobs() == [running, waiting]
    await f.dispatcher.finish(process_died=True, grace=1.0)
    for request_id, msg in zip((running, waiting), msgs, strict=True):
        stored = f.store.records[request_id][0]
        assert (stored.status, stored.attempts) == (records_pb2.REQUEST_STATUS_IN_PROGRESS, 1)
        assert (msg.naked, msg.delays, msg.acked) == (1, [None], 0)
    assert not f.dispatcher._held
