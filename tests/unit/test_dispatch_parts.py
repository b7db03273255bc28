"""The Dispatcher's pieces that need no broker: remembered cancels, redelivery verdicts and delays, dead-letter
headers, the records it builds, results kept inline, the heartbeat, and the per-priority pull feeds."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cortado.result import INLINE_RESULT_BYTES
from cortado.v1 import handler_pb2, records_pb2
from services.executor.cancels import RecentIds
from services.executor.finals import (
    MAX_ERROR_MESSAGE_CHARS,
    MAX_TRACEBACK_CHARS,
    base_record,
    conclude,
    cut_message,
    failed_record,
    seconds_between,
)
from services.executor.held import Held, heartbeat, trace_headers
from services.executor.inprogress import started_record
from services.executor.pullfeed import LevelFeeds
from services.executor.redelivery import (
    DEAD_ERROR_MESSAGE,
    DEAD_ERROR_TYPE,
    REDELIVERY_MAX_DELAY,
    dead_letter_headers,
    judge,
    redelivery_delay,
)
from services.executor.resultstore import ResultKeeper
from services.executor.spool import ResultSpool

HIGH, NORMAL, LOW = records_pb2.PRIORITY_HIGH, records_pb2.PRIORITY_NORMAL, records_pb2.PRIORITY_LOW


def item(request_id: str = "r1") -> records_pb2.WorkItem:
    work = records_pb2.WorkItem(id=request_id, api="t", priority=HIGH)
    work.submitted_at.FromSeconds(100)
    return work


def record(status: records_pb2.RequestStatus.ValueType, attempts: int = 0) -> records_pb2.RequestRecord:
    return records_pb2.RequestRecord(id="r1", api="t", status=status, attempts=attempts)


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


# --- redelivery -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delivered", "delay"),
    [(0, None), (1, None), (2, 0.5), (3, 1.0), (7, 16.0), (8, REDELIVERY_MAX_DELAY), (100, REDELIVERY_MAX_DELAY)],
)
def test_the_first_hand_back_is_immediate_and_later_ones_back_off_up_to_the_maximum(
    delivered: int, delay: float | None
) -> None:
    assert redelivery_delay(delivered) == delay


@pytest.mark.parametrize("status", [records_pb2.REQUEST_STATUS_COMPLETED, records_pb2.REQUEST_STATUS_CANCELLED])
def test_a_redelivery_that_finds_a_final_record_does_not_run_even_past_the_limits(
    status: records_pb2.RequestStatus.ValueType,
) -> None:
    done = record(status, attempts=9)
    for delivered in (2, 50):
        verdict = judge(done, 4, delivered, max_deliveries=20, max_retries=3)
        assert verdict.final is done and verdict.failure is None and not verdict.runs


def test_a_redelivery_runs_as_the_attempt_after_the_in_progress_records() -> None:
    first = judge(None, 0, 2, max_deliveries=20, max_retries=3)
    assert (first.runs, first.attempts, first.revision) == (True, 1, 0)
    # Only an in_progress record says a handler started: a request handed back unstarted counts no attempt.
    queued = judge(record(records_pb2.REQUEST_STATUS_IN_QUEUE, attempts=5), 2, 3, 20, 3)
    assert (queued.runs, queued.attempts, queued.revision) == (True, 1, 2)
    died = judge(record(records_pb2.REQUEST_STATUS_IN_PROGRESS, attempts=3), 6, 4, 20, 3)
    assert (died.runs, died.attempts, died.revision) == (True, 4, 6)


def test_a_request_whose_process_died_more_than_max_retries_times_fails_with_handler_process_died() -> None:
    verdict = judge(record(records_pb2.REQUEST_STATUS_IN_PROGRESS, attempts=4), 7, 5, max_deliveries=20, max_retries=3)
    assert not verdict.runs and (verdict.attempts, verdict.revision) == (4, 7)
    assert verdict.failure == (
        "HandlerProcessDied",
        "the handler's process died while handling this request 4 times; giving up after max_retries=3",
    )


def test_a_request_delivered_past_the_limit_fails_with_delivery_limit_exceeded_counting_its_attempts() -> None:
    verdict = judge(record(records_pb2.REQUEST_STATUS_IN_QUEUE, attempts=2), 3, 21, max_deliveries=20, max_retries=3)
    assert verdict.failure is not None and verdict.failure[0] == "DeliveryLimitExceeded"
    assert "delivered 21 times" in verdict.failure[1] and "after 20 deliveries" in verdict.failure[1]
    assert (verdict.attempts, verdict.revision) == (2, 3)
    assert judge(None, 0, 21, 20, 3).attempts == 0


def test_a_dead_letter_keeps_the_trace_context_and_says_why_on_one_short_line() -> None:
    msg: Any = SimpleNamespace(headers={"traceparent": "00-a-b-01", "Nats-Msg-Id": "x", "tracestate": "k=v"})
    failed = record(records_pb2.REQUEST_STATUS_FAILED)
    failed.error.type, failed.error.message = "HandlerProcessDied", "first\r\nsecond" + "x" * 2000
    headers = dead_letter_headers(msg, failed)
    assert set(headers) == {"traceparent", "tracestate", DEAD_ERROR_TYPE, DEAD_ERROR_MESSAGE}
    assert headers[DEAD_ERROR_TYPE] == "HandlerProcessDied"
    assert headers[DEAD_ERROR_MESSAGE].startswith("first  second") and len(headers[DEAD_ERROR_MESSAGE]) == 1000
    assert dead_letter_headers(SimpleNamespace(headers=None), failed).keys() == {DEAD_ERROR_TYPE, DEAD_ERROR_MESSAGE}  # type: ignore[arg-type]


# --- records ----------------------------------------------------------------------------------------------------------


def test_a_message_over_its_limit_keeps_its_start_and_says_how_long_it_was() -> None:
    assert cut_message("short") == "short"
    exact = "x" * MAX_ERROR_MESSAGE_CHARS
    assert cut_message(exact) == exact
    assert cut_message("abcdef", limit=3) == "abc... (cut: the message was 6 characters)"


def test_conclude_completes_without_a_failure_and_fails_with_the_cut_error_and_traceback() -> None:
    completed = records_pb2.RequestRecord()
    conclude(completed, None)
    assert completed.status == records_pb2.REQUEST_STATUS_COMPLETED and not completed.HasField("error")
    failed = records_pb2.RequestRecord()
    conclude(failed, ("ValueError", "m" * (MAX_ERROR_MESSAGE_CHARS + 1)), "t" * (MAX_TRACEBACK_CHARS + 5))
    assert failed.status == records_pb2.REQUEST_STATUS_FAILED and failed.error.type == "ValueError"
    assert failed.error.message.endswith(f"(cut: the message was {MAX_ERROR_MESSAGE_CHARS + 1} characters)")
    assert failed.error.traceback.startswith("t" * MAX_TRACEBACK_CHARS + "... (cut")
    untraced = records_pb2.RequestRecord()
    conclude(untraced, ("InvalidResult", "why"))
    assert untraced.error.traceback == ""


def test_the_records_the_executor_builds_repeat_the_work_items_fields() -> None:
    work = item()
    base = base_record(work, 2)
    assert (base.id, base.api, base.attempts, base.priority) == ("r1", "t", 2, HIGH)
    assert base.submitted_at == work.submitted_at and base.status == records_pb2.REQUEST_STATUS_UNSPECIFIED
    started = started_record(work, 3)
    assert (started.status, started.attempts) == (records_pb2.REQUEST_STATUS_IN_PROGRESS, 3)
    assert started.started_at.seconds > 0
    failed = failed_record(work, 4, "DeliveryLimitExceeded", "why")
    assert (failed.status, failed.attempts, failed.error.type, failed.error.message) == (
        records_pb2.REQUEST_STATUS_FAILED,
        4,
        "DeliveryLimitExceeded",
        "why",
    )
    assert failed.finished_at.seconds > 0


def test_seconds_between_is_never_negative() -> None:
    start, end = item().submitted_at, records_pb2.RequestRecord().finished_at
    end.FromNanoseconds(101_500_000_000)
    assert seconds_between(start, end) == 1.5
    assert seconds_between(end, start) == 0.0


def test_a_job_carries_only_the_trace_context_headers_of_its_message() -> None:
    msg: Any = SimpleNamespace(headers={"tracestate": "k=v", "Nats-Msg-Id": "x"})
    assert trace_headers(msg) == {"tracestate": "k=v"}
    assert trace_headers(SimpleNamespace(headers=None)) == {}  # type: ignore[arg-type]


# --- results kept inline ----------------------------------------------------------------------------------------------


async def keep(outcome: handler_pb2.Outcome) -> tuple[tuple[str, str] | None, records_pb2.RequestRecord]:
    final = records_pb2.RequestRecord()
    keeper = ResultKeeper(None, "t", 60.0)  # type: ignore[arg-type]  # never reaches the object store here
    return await keeper.keep("r1", outcome, final), final


async def test_an_inline_result_goes_into_the_record() -> None:
    failure, final = await keep(handler_pb2.Outcome(id="r1", completed=True, result_json=b'{"a": 1}'))
    assert failure is None and (final.result_json, final.result_size) == (b'{"a": 1}', 8)
    failure, final = await keep(
        handler_pb2.Outcome(id="r1", completed=True, result_content_type="image/png", result_data=b"\x89PNG")
    )
    assert failure is None and (final.result_content_type, final.result_data, final.result_size) == (
        "image/png",
        b"\x89PNG",
        4,
    )


async def test_what_the_untrusted_process_sends_wrong_fails_the_request_with_invalid_result() -> None:
    bad_type, _ = await keep(handler_pb2.Outcome(id="r1", completed=True, result_content_type="not a type"))
    assert bad_type is not None and bad_type[0] == "InvalidResult"
    too_big = json.dumps("x" * INLINE_RESULT_BYTES).encode()
    over, final = await keep(handler_pb2.Outcome(id="r1", completed=True, result_json=too_big))
    assert over == (
        "InvalidResult",
        f"a result of {len(too_big)} bytes came inline; at most {INLINE_RESULT_BYTES} do",
    )
    assert not final.result_json
    unsent, _ = await keep(handler_pb2.Outcome(id="r1", completed=True, result_streamed_bytes=10))
    assert unsent == ("InvalidResult", "the result arrived incomplete from the handler process")


def files(directory: Path) -> list[Path]:
    return list(directory.iterdir())


async def test_streamed_chunks_that_do_not_add_up_fail_the_request_and_leave_no_file(tmp_path: Path) -> None:
    keeper = ResultKeeper(None, "t", 60.0, ResultSpool(str(tmp_path)))  # type: ignore[arg-type]
    keeper.add_chunk("r1", b"12345")
    outcome = handler_pb2.Outcome(id="r1", completed=True, result_streamed_bytes=6)
    failure = await keeper.keep("r1", outcome, records_pb2.RequestRecord())
    assert failure == ("InvalidResult", "the result arrived incomplete from the handler process")
    assert files(tmp_path) == []
    keeper.add_chunk("r2", b"x")
    assert len(files(tmp_path)) == 1
    keeper.discard("r2")
    assert files(tmp_path) == []


# --- the heartbeat ----------------------------------------------------------------------------------------------------


class Beats:
    def __init__(self) -> None:
        self.count = 0

    async def in_progress(self) -> None:
        self.count += 1


async def test_the_heartbeat_tells_jetstream_only_about_requests_held_a_while() -> None:
    now = asyncio.get_running_loop().time()
    old, new = Beats(), Beats()
    held: list[Held] = [
        Held(old, item("old"), since=now - 10),  # type: ignore[arg-type]
        Held(new, item("new"), since=now + 10),  # type: ignore[arg-type]
    ]
    beating = asyncio.create_task(heartbeat(lambda: held, ack_wait=0.03))
    await asyncio.sleep(0.1)
    beating.cancel()
    assert old.count >= 2 and new.count == 0


# --- the pull feeds ---------------------------------------------------------------------------------------------------


class FakeNc:
    """A NATS connection as PullFeed uses it: records the pull requests published."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.pulls: list[tuple[str, dict[str, int]]] = []

    def new_inbox(self) -> str:
        return "_INBOX.x"

    async def subscribe(self, subject: str, cb: Any) -> Any:
        return SimpleNamespace(unsubscribe=lambda: asyncio.sleep(0))

    async def publish(self, subject: str, payload: bytes, reply: str = "") -> None:
        if self.fail:
            raise ConnectionError("down")
        self.pulls.append((subject.rsplit(".", 1)[-1], json.loads(payload)))


async def test_each_level_with_room_and_no_open_request_asks_for_its_room() -> None:
    nc = FakeNc()
    feeds = LevelFeeds(nc, "WORK_t", lambda level: lambda msg: None)  # type: ignore[arg-type]
    await feeds.start()
    room: dict[int, int] = {HIGH: 3, NORMAL: 0, LOW: -1}
    assert await feeds.request(room.__getitem__) is False
    assert [(consumer, body["batch"]) for consumer, body in nc.pulls] == [("handlers-high", 3)]
    assert await feeds.request(room.__getitem__) is False  # the high request is still open
    assert len(nc.pulls) == 1
    await feeds.stop()


async def test_a_failed_pull_request_is_reported() -> None:
    feeds = LevelFeeds(FakeNc(fail=True), "WORK_t", lambda level: lambda msg: None)  # type: ignore[arg-type]
    await feeds.start()
    assert await feeds.request(lambda level: 1) is True
