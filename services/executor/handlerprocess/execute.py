"""One execution path for the handler's calls, single or batched, and the outcomes they give.

A call serves one job, or a batch of them for a batch handler (`handle_batch`). Everything a call
can end with is decided here, once: the payloads that do not decode, the API's timeout (an `async def`
call is cancelled at it; a plain one runs in a thread that cannot be stopped, so the process must
restart), cancellation (`cortado._cancellation`: a job cancelled before its call never runs, a call
whose requests are all cancelled is cancelled, and any job whose request was cancelled ends
`RequestCancelled` whatever the handler did), the handler's exceptions, and its results (prepared,
and sent ahead in chunks when too large for the outcome).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import traceback
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cortado import _cancellation, _tracing
from cortado._logs import request_id_var
from cortado.result import JSON_TYPE, PreparedResult, prepare_result
from cortado.runtime import (
    HandlerInstance,
    InvalidResultError,
    decode_payload,
    describe_exception,
    split_batch_result,
)
from cortado.v1 import control_pb2, handler_pb2, records_pb2
from services.executor.contract import CANCELLED_ERROR, CANCELLED_MESSAGE, INVALID_RESULT_ERROR, TIMED_OUT_ERROR
from services.executor.handlerprocess.outbox import Outbox

log = logging.getLogger("cortado.worker")

_tracer = _tracing.tracer(__name__)


class HandlerTimedOutError(Exception):
    """A plain handler ran past the API's timeout; its thread cannot be stopped, only its process.

    `outcomes` are the call's jobs' outcomes, to send before the process restarts.
    """

    def __init__(self, outcomes: list[handler_pb2.Outcome]) -> None:
        super().__init__("a plain handler timed out")
        self.outcomes = outcomes


class _ThreadTimedOutError(Exception):
    """A plain call's thread is still running past the timeout."""


@dataclass(frozen=True)
class _Call:
    """A running `async def` call: its task and every request it serves (one, or a batch's)."""

    task: asyncio.Future[Any]
    ids: tuple[str, ...]


class Execution:
    """Calls the handler for the jobs it is given, up to `concurrency` calls at once, each of up to `max_batch` jobs."""

    def __init__(self, spec: control_pb2.ApiSpec, handler: HandlerInstance, outbox: Outbox) -> None:
        self._spec = spec
        self._handler = handler
        self._outbox = outbox
        self._root = Path.cwd()  # returned files must lie under it
        self.concurrency = max(1, spec.max_concurrency)
        """Calls at once (the API's max_concurrency, at least 1)."""
        self.max_batch = max(1, spec.max_batch_size) if handler.has_batch else 1
        """Jobs per call: the API's max_batch_size for a batch handler, else 1."""
        self._timeout = spec.timeout.ToTimedelta().total_seconds() if spec.HasField("timeout") else None
        self._threads = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="handler")
        self._calls: dict[str, _Call] = {}
        """Running `async def` calls, by each of their request ids (what a cancel cancels)."""

    def cancel(self, job_id: str) -> None:
        """Cancel the `async def` call serving job_id once every request it serves is marked cancelled.

        Nothing happens for a plain call (it sees `cortado.cancelled` instead) or a job in no running call.
        """
        call = self._calls.get(job_id)
        if call is not None and all(_cancellation.cancelled(i) for i in call.ids):
            call.task.cancel()

    def close(self) -> None:
        """Drop the plain calls not started; running threads are left to end with the process."""
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def run(self, jobs: list[handler_pb2.Job]) -> list[handler_pb2.Outcome]:
        """Call the handler once for jobs (handle_async, or handle_batch for several); each job's outcome, in order.

        Results too large for an outcome go ahead in chunks through the outbox first. A job whose request is
        cancelled by the time its outcome is final ends `RequestCancelled`. Raises HandlerTimedOutError, with
        the outcomes, when a plain handler ran past the timeout.
        """
        if len(jobs) == 1 and jobs[0].trace_headers:
            # Continue the request's trace (exported or not): the handler's span and log lines join it.
            with _tracing.attached(_tracing.extract(jobs[0].trace_headers)):
                executed, stuck = await self._execute(jobs)
        else:
            executed, stuck = await self._execute(jobs)
        if stuck:
            raise HandlerTimedOutError(
                [_settled(job.id, outcome) for job, (outcome, _) in zip(jobs, executed, strict=True)]
            )
        sent = [await self._send_large(outcome, large) if outcome is not None else None for outcome, large in executed]
        return [_settled(job.id, outcome) for job, outcome in zip(jobs, sent, strict=True)]

    async def _execute(
        self, jobs: list[handler_pb2.Job]
    ) -> tuple[list[tuple[handler_pb2.Outcome | None, PreparedResult | None]], bool]:
        """Decode, call the handler once, prepare each result; and whether a plain call's thread is stuck.

        One (outcome, result still to send in chunks) per job; no outcome for a job cancelled before it ran.
        """
        outcomes: dict[str, handler_pb2.Outcome] = {}
        large: dict[str, PreparedResult] = {}
        payloads: list[Any] = []
        runnable: list[handler_pb2.Job] = []
        stuck = False
        for job in jobs:
            if _cancellation.cancelled(job.id):
                continue  # cancelled before it started (waiting for its batch): it never runs
            try:
                payloads.append(decode_payload(job.content_type, job.payload))
                runnable.append(job)
            except Exception as exc:
                outcomes[job.id] = _failed(job.id, *describe_exception(exc), 0.0)
        if runnable:
            ids = [job.id for job in runnable]
            batched = self._handler.has_batch and self.max_batch > 1
            method = "handle_batch" if batched else "handle_async"
            began = time.perf_counter()
            trace = ""
            failure: tuple[str, str] | None = None
            results: list[Any] = []
            try:
                with _tracer.start_as_current_span("handler", attributes=_attributes(self._spec.name, ids)):
                    value = await self._call(payloads, ids, batched)
                results = split_batch_result(value, len(runnable)) if batched else [value]
            except asyncio.CancelledError:
                # Our own cancel of the call (every request it served was cancelled), or this process stopping.
                if _being_cancelled() or not all(_cancellation.cancelled(i) for i in ids):
                    raise
                failure = (CANCELLED_ERROR, CANCELLED_MESSAGE)
            except (TimeoutError, _ThreadTimedOutError) as exc:
                stuck = isinstance(exc, _ThreadTimedOutError)
                failure = (TIMED_OUT_ERROR, self._timeout_message())
            except InvalidResultError as exc:
                failure = (INVALID_RESULT_ERROR, str(exc))
            except Exception as exc:
                log.info("handler raised", extra={"ids": ids, "error": repr(exc)})
                failure = describe_exception(exc)
                # The console shows it with the error (GET /<api>/<id> does not).
                trace = user_traceback(exc, self._root)
            seconds = time.perf_counter() - began
            for index, job in enumerate(runnable):
                if failure is not None:
                    outcomes[job.id] = _failed(job.id, *failure, seconds, trace)
                    continue
                try:
                    prepared = prepare_result(
                        results[index], root=self._root, method=method, index=index if batched else None
                    )
                except (InvalidResultError, OSError) as exc:
                    outcomes[job.id] = _failed(job.id, INVALID_RESULT_ERROR, str(exc), seconds)
                    continue
                outcomes[job.id] = _completed(job.id, prepared, seconds)
                if not prepared.inline:
                    large[job.id] = prepared
        return [(outcomes.get(job.id), large.get(job.id)) for job in jobs], stuck

    async def _call(self, payloads: list[Any], ids: list[str], batched: bool) -> Any:
        """The handler's return value; TimeoutError (async) or _ThreadTimedOutError (plain) past the timeout."""
        if not batched:
            # Log lines and print() of this call carry its request id.
            request_id_var.set(ids[0])
        if batched and self._handler.batch_is_async:
            return await self._cancellable(self._handler.call_batch_async(payloads, ids), ids)
        if not batched and self._handler.is_async:
            return await self._cancellable(self._handler.call_async(payloads[0], ids[0]), ids)
        # A plain handler runs in a thread, in a copy of this task's context (request id, trace).
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        if batched:
            call = loop.run_in_executor(self._threads, context.run, self._handler.call_batch, payloads, ids)
        else:
            call = loop.run_in_executor(self._threads, context.run, self._handler.call_sync, payloads[0], ids[0])
        try:
            return await asyncio.wait_for(asyncio.shield(call), self._timeout)
        except TimeoutError:
            raise _ThreadTimedOutError from None

    async def _cancellable(self, call: Awaitable[Any], ids: list[str]) -> Any:
        """Await an `async def` call in a task of its own (in this context), which cancel() may cancel."""
        task = asyncio.ensure_future(call)
        running = _Call(task, tuple(ids))
        for job_id in ids:
            self._calls[job_id] = running
        try:
            return await asyncio.wait_for(task, self._timeout)
        finally:
            for job_id in ids:
                self._calls.pop(job_id, None)

    async def _send_large(self, outcome: handler_pb2.Outcome, large: PreparedResult | None) -> handler_pb2.Outcome:
        """outcome, once a result too large for it went ahead in chunks (or the failure that stopped them).

        Sending stops early when the job's request is cancelled meanwhile.
        """
        if large is None:
            return outcome
        chunks = iter(large.chunks())
        sent = 0
        try:
            while not _cancellation.cancelled(outcome.id):
                # A file is read in a thread; bytes in memory are cut at once.
                data = await asyncio.to_thread(next, chunks, None) if large.path else next(chunks, None)
                if data is None:
                    break
                self._outbox.send_now(
                    handler_pb2.FromHandler(chunks=[handler_pb2.ResultChunk(id=outcome.id, data=data)])
                )
                sent += len(data)
                await self._outbox.drained()
        except (OSError, InvalidResultError) as exc:
            message = f"the result could not be read: {exc}"
            return _failed(outcome.id, INVALID_RESULT_ERROR, message, outcome.handler_seconds)
        outcome.result_streamed_bytes = sent
        return outcome

    def _timeout_message(self) -> str:
        return f"timed out: the handler ran longer than the API's timeout of {self._timeout:g}s"


def user_traceback(exc: BaseException, root: Path) -> str:
    """The exception's traceback from the first frame in the user's project (under root) on: the frames of
    Cortado's own call into the handler say nothing to its author. The whole traceback when no frame is theirs."""
    root = root.resolve()
    tb = exc.__traceback__
    while tb is not None and not (root / tb.tb_frame.f_code.co_filename).resolve().is_relative_to(root):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


def _failed(job_id: str, kind: str, message: str, seconds: float, trace: str = "") -> handler_pb2.Outcome:
    """The outcome of a job that failed with error type kind and message after seconds in the handler."""
    error = records_pb2.RequestError(type=kind, message=message, traceback=trace)
    return handler_pb2.Outcome(id=job_id, completed=False, error=error, handler_seconds=seconds)


def _completed(job_id: str, prepared: PreparedResult, seconds: float) -> handler_pb2.Outcome:
    """The outcome of a job whose result is prepared: the result itself when it fits, else its media type."""
    outcome = handler_pb2.Outcome(id=job_id, completed=True, handler_seconds=seconds)
    if not prepared.inline:
        outcome.result_content_type = prepared.content_type or JSON_TYPE
    elif prepared.content_type:
        outcome.result_content_type = prepared.content_type
        outcome.result_data = prepared.data
    else:
        outcome.result_json = prepared.data
    return outcome


def _settled(job_id: str, outcome: handler_pb2.Outcome | None) -> handler_pb2.Outcome:
    """The job's final outcome: RequestCancelled when its request was cancelled (whatever the handler returned or
    raised, and for a job that never ran, which has no outcome), else outcome."""
    if outcome is not None and not _cancellation.cancelled(job_id):
        return outcome
    seconds = outcome.handler_seconds if outcome is not None else 0.0
    return _failed(job_id, CANCELLED_ERROR, CANCELLED_MESSAGE, seconds)


def _being_cancelled() -> bool:
    """Whether the current task itself is being cancelled (not just something it awaited)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _attributes(api: str, ids: list[str]) -> dict[str, Any]:
    """The handler span's attributes: the request's id, or the batch's size."""
    if len(ids) == 1:
        return {"cortado.api": api, "cortado.request_id": ids[0]}
    return {"cortado.api": api, "cortado.batch_size": len(ids)}
