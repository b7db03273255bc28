"""The handler process's loop (services.executor.handlerprocess) in this event loop, no subprocess: fed over an
in-memory socket pair as its executor feeds it, with small in-test handlers."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from cortado.runtime import HandlerInstance
from cortado.v1 import control_pb2, handler_pb2
from services.executor.channel import frame, open_channel, read_frame
from services.executor.contract import CANCELLED_ERROR, CANCELLED_MESSAGE, EXIT_TIMED_OUT, TIMED_OUT_ERROR
from services.executor.handlerprocess import Outbox, Worker


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Executor:
    """The executor's end of the channel: sends jobs and cancels, collects what the process sends back."""

    worker: Worker
    writer: asyncio.StreamWriter
    reader: asyncio.StreamReader
    running: asyncio.Task[None]
    exits: list[int]
    outcomes: dict[str, handler_pb2.Outcome] = field(default_factory=dict)
    returned: list[str] = field(default_factory=list)
    frames: list[handler_pb2.FromHandler] = field(default_factory=list)

    def run(self, *payloads: Any) -> list[str]:
        """Send one job per payload, in one frame; their ids."""
        ids = [new_id() for _ in payloads]
        jobs = [
            handler_pb2.Job(id=i, content_type="application/json", payload=json.dumps(p).encode())
            for i, p in zip(ids, payloads, strict=True)
        ]
        self.writer.write(frame(handler_pb2.ToHandler(jobs=jobs)))
        return ids

    def cancel(self, *ids: str) -> None:
        self.writer.write(frame(handler_pb2.ToHandler(cancel=ids)))

    async def until(self, done: Callable[[], bool], timeout: float = 5.0) -> None:
        """Read frames until done() holds."""
        async with asyncio.timeout(timeout):
            while not done():
                message = await read_frame(self.reader, handler_pb2.FromHandler)
                self.frames.append(message)
                self.outcomes.update({outcome.id: outcome for outcome in message.outcomes})
                self.returned.extend(message.returned)

    async def outcome(self, request_id: str) -> handler_pb2.Outcome:
        await self.until(lambda: request_id in self.outcomes)
        return self.outcomes[request_id]


Start = Callable[..., Awaitable[Executor]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    started: list[tuple[Executor, asyncio.Task[None], list[asyncio.StreamWriter]]] = []

    async def start(handler_class: type, grace: float = 1.0, **spec: Any) -> Executor:
        ours, theirs = socket.socketpair()
        their_reader, their_writer = await open_channel(theirs)
        our_reader, our_writer = await open_channel(ours)
        exits: list[int] = []
        worker = Worker(
            control_pb2.ApiSpec(name="t", **spec),
            HandlerInstance.create(handler_class, {}, None),
            Outbox(their_writer),
            grace=grace,
            exit_process=exits.append,
        )
        receiving = asyncio.create_task(worker.receive(their_reader))
        executor = Executor(worker, our_writer, our_reader, asyncio.create_task(worker.run()), exits)
        started.append((executor, receiving, [their_writer, our_writer]))
        return executor

    yield start
    for executor, receiving, writers in started:
        executor.worker.stop()
        await asyncio.wait_for(executor.running, 5)
        receiving.cancel()
        await asyncio.gather(receiving, return_exceptions=True)
        for writer in writers:
            writer.close()
            await writer.wait_closed()


async def test_a_single_call_answers_its_job_with_the_result_inline(start: Start) -> None:
    class Handler:
        async def handle_async(self, payload: Any, request_id: str) -> dict[str, Any]:
            return {"doubled": payload["x"] * 2, "id": request_id}

    executor = await start(Handler, max_concurrency=2)
    assert executor.worker.room == 2
    (request_id,) = executor.run({"x": 21})
    outcome = await executor.outcome(request_id)
    assert outcome.completed and outcome.handler_seconds >= 0
    assert json.loads(outcome.result_json) == {"doubled": 42, "id": request_id}


async def test_a_batch_is_one_call_and_each_job_gets_its_own_result_or_its_own_error(start: Start) -> None:
    calls: list[list[str]] = []

    class Handler:
        def handle_batch(self, payloads: list[Any], request_ids: list[str]) -> list[Any]:
            calls.append(list(request_ids))
            return [{"y": p["x"] + 1} for p in payloads]

    executor = await start(Handler, max_batch_size=3, batch_interval={"seconds": 5})
    assert executor.worker.room == 3
    first, second, third = executor.run({"x": 1}, {"x": 2}, {"x": 3})
    assert [json.loads((await executor.outcome(i)).result_json)["y"] for i in (first, second, third)] == [2, 3, 4]
    assert calls == [[first, second, third]]
    # A body that is not JSON fails alone; the rest of its batch runs.
    bad = new_id()
    executor.writer.write(
        frame(handler_pb2.ToHandler(jobs=[handler_pb2.Job(id=bad, content_type="application/json", payload=b"{")]))
    )
    good, other = executor.run({"x": 10}, {"x": 20})
    assert not (await executor.outcome(bad)).completed
    assert [json.loads((await executor.outcome(i)).result_json)["y"] for i in (good, other)] == [11, 21]
    assert calls[1] == [good, other]


async def test_an_async_call_past_the_timeout_is_cancelled_and_times_out(start: Start) -> None:
    stopped = asyncio.Event()

    class Handler:
        async def handle_async(self) -> None:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                stopped.set()
                raise

    executor = await start(Handler, timeout={"nanos": 200_000_000})
    (request_id,) = executor.run({})
    outcome = await executor.outcome(request_id)
    assert (outcome.completed, outcome.error.type) == (False, TIMED_OUT_ERROR)
    assert outcome.error.message == "timed out: the handler ran longer than the API's timeout of 0.2s"
    assert stopped.is_set()
    assert executor.exits == [] and not any(f.restarting for f in executor.frames)


async def test_a_plain_call_past_the_timeout_reports_its_jobs_then_ends_the_process(start: Start) -> None:
    release = threading.Event()

    class Handler:
        def handle_async(self) -> None:
            release.wait(10)

    executor = await start(Handler, timeout={"nanos": 200_000_000})
    (request_id,) = executor.run({})
    try:
        outcome = await executor.outcome(request_id)
    finally:
        release.set()
    assert (outcome.completed, outcome.error.type) == (False, TIMED_OUT_ERROR)
    assert [f.restarting for f in executor.frames if f.outcomes] == [True]
    assert executor.exits == [EXIT_TIMED_OUT]


async def test_a_cancelled_call_answers_request_cancelled(start: Start) -> None:
    started = asyncio.Event()

    class Handler:
        async def handle_async(self) -> dict[str, Any]:
            started.set()
            await asyncio.sleep(30)
            return {}

    executor = await start(Handler)
    (request_id,) = executor.run({})
    await asyncio.wait_for(started.wait(), 5)
    executor.cancel(request_id)
    outcome = await executor.outcome(request_id)
    assert (outcome.completed, outcome.error.type, outcome.error.message) == (False, CANCELLED_ERROR, CANCELLED_MESSAGE)


async def test_stop_hands_back_what_has_not_started_and_lets_the_running_call_finish(start: Start) -> None:
    started = asyncio.Event()
    finish = asyncio.Event()

    class Handler:
        async def handle_async(self, payload: Any) -> dict[str, Any]:
            started.set()
            await finish.wait()
            return {"payload": payload}

    executor = await start(Handler, grace=5.0, max_concurrency=1)
    running, waiting = executor.run("first", "second")
    await asyncio.wait_for(started.wait(), 5)
    executor.worker.stop()
    await executor.until(lambda: waiting in executor.returned)
    assert running not in executor.returned and not executor.running.done()
    finish.set()
    assert json.loads((await executor.outcome(running)).result_json) == {"payload": "first"}
    await asyncio.wait_for(executor.running, 5)
    assert waiting not in executor.outcomes


async def test_the_executor_closing_the_channel_stops_the_process(start: Start) -> None:
    class Handler:
        async def handle_async(self) -> None:
            return None

    executor = await start(Handler)
    executor.writer.close()
    await asyncio.wait_for(executor.running, 5)
