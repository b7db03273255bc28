"""Cancelling requests in the handler process, without NATS: `cortado.cancelled`, and the process's side
(services.executor.handlerprocess) fed over a real socket pair as the executor feeds it.

The Dispatcher's side of a cancel (with a fake broker and store) is in test_dispatcher.py."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import cortado
from cortado import _cancellation
from cortado.runtime.calling import HandlerInstance
from cortado.v1 import control_pb2, handler_pb2
from services.executor.channel import frame, open_channel, read_frame
from services.executor.contract import CANCELLED_ERROR
from services.executor.handlerprocess import Outbox, Worker


def new_id() -> str:
    return uuid.uuid4().hex


# --- cortado.cancelled ------------------------------------------------------------------------------------------------


def test_cancelled_is_false_outside_a_handler_process_and_true_only_between_mark_and_forget() -> None:
    request_id = new_id()
    assert cortado.cancelled is _cancellation.cancelled
    assert cortado.cancelled(request_id) is False
    _cancellation.mark(request_id)
    assert cortado.cancelled(request_id) is True
    assert cortado.cancelled(new_id()) is False
    _cancellation.forget(request_id)
    assert cortado.cancelled(request_id) is False


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
    assert not _cancellation.cancelled(doomed)  # forgotten once answered


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
    assert not _cancellation.cancelled(unknown)  # never sent here: nothing to remember
    go.set()
    assert (await process.outcome(first)).completed
    assert (await process.outcome(waiting)).error.type == CANCELLED_ERROR
    assert calls == [first]
