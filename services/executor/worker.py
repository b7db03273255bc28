"""The handler process: loads the user's Handler and runs the jobs its executor hands it.

Started by the executor as `python -P -m services.executor.worker` with the project
folder as working directory, under an unprivileged user when the executor runs as
root. It holds no broker connection and no credential: jobs come in and outcomes go
out over one end of a socket pair (`services.executor.channel`); the executor pulls,
records and acknowledges. A crash here never takes the executor down.

A request cancelled while it runs (`ToHandler.cancel`): an `async def` call is cancelled (a batch's
once every request in it is), a plain one cannot be and sees `cortado.cancelled(request_id)` turn
true instead; either way its outcome is `RequestCancelled`, which the executor drops. One that does
not stop is the executor's to deal with (it restarts the process after its grace period).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import json
import logging
import os
import signal
import socket
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cortado import cancellation, tracing
from cortado.env import Env
from cortado.logs import PrintToLog, configure_handler_logging, request_id_var
from cortado.metrics import MetricsClient
from cortado.result import JSON_TYPE, PreparedResult, prepare_result
from cortado.runtime import (
    HandlerInstance,
    InvalidResultError,
    decode_payload,
    describe_exception,
    load_handler_class,
    split_batch_result,
)
from cortado.service import run_event_loop
from cortado.v1 import control_pb2, handler_pb2, records_pb2
from services.executor.channel import ChannelClosedError, frame, open_channel, read_frame
from services.executor.exitcodes import EXIT_INIT_FAILED, EXIT_TIMED_OUT

log = logging.getLogger("cortado.worker")


@dataclass(frozen=True)
class WorkerSettings:
    """What the handler process is told by its executor."""

    spec_file: Path
    channel_fd: int
    grace_seconds: float

    @classmethod
    def from_env(cls, env: Env | None = None) -> WorkerSettings:
        """Read the `CORTADO_WORKER_*` variables the executor sets."""
        env = env or Env()
        return cls(
            spec_file=Path(env.text("WORKER_SPEC_FILE", "")),
            channel_fd=env.integer("WORKER_CHANNEL_FD", -1),
            grace_seconds=env.number("GRACE_SECONDS", 30.0, minimum=0),
        )


class Outbox:
    """Frames to the executor: outcomes go together, once per event-loop turn."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._outcomes: list[handler_pb2.Outcome] = []
        self._returned: list[str] = []
        self._scheduled = False

    def send_now(self, message: handler_pb2.FromHandler) -> None:
        """Write message at once, after anything pending."""
        self.flush()
        self._write(message)

    def outcome(self, outcome: handler_pb2.Outcome) -> None:
        """Queue one job's outcome for the next frame."""
        self._outcomes.append(outcome)
        self._schedule()

    def returned(self, job_id: str) -> None:
        """Queue one job handed back unstarted."""
        self._returned.append(job_id)
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write what is pending as one frame."""
        self._scheduled = False
        if self._outcomes or self._returned:
            message = handler_pb2.FromHandler(outcomes=self._outcomes, returned=self._returned)
            self._outcomes, self._returned = [], []
            self._write(message)

    def _write(self, message: handler_pb2.FromHandler) -> None:
        if not self._writer.is_closing():
            self._writer.write(frame(message))

    async def drained(self) -> None:
        """Wait until everything written reached the socket (a closed channel is ignored)."""
        self.flush()
        with contextlib.suppress(Exception):
            await self._writer.drain()


class HandlerTimedOutError(Exception):
    """A plain handler ran past the API's timeout; its thread cannot be stopped."""


CANCELLED_ERROR = "RequestCancelled"
"""Error type of the outcome of a job whose request was cancelled (the executor drops it)."""

CANCELLED_MESSAGE = "the request was cancelled"


@dataclass(frozen=True)
class _Call:
    """A running `async def` call: its task and every request it serves (one, or a batch's)."""

    task: asyncio.Future[Any]
    ids: tuple[str, ...]


class Worker:
    """Runs the jobs it receives through the handler, up to max_concurrency calls at once.

    The executor sends at most as many jobs as the process has room for (max_concurrency
    times max_batch_size), so a job that arrives starts at once or joins the batch being
    collected. Single and batched calls share one execution path (`_execute`).
    """

    def __init__(self, spec: control_pb2.ApiSpec, handler: HandlerInstance, outbox: Outbox, grace: float) -> None:
        self._spec = spec
        self._handler = handler
        self._outbox = outbox
        self._grace = grace
        self._root = Path.cwd()  # returned files must lie under it
        self._concurrency = max(1, spec.max_concurrency)
        self._max_batch = max(1, spec.max_batch_size) if handler.has_batch else 1
        self._batch_interval = spec.batch_interval.ToTimedelta().total_seconds()
        self._timeout = spec.timeout.ToTimedelta().total_seconds() if spec.HasField("timeout") else None
        self._threads = ThreadPoolExecutor(max_workers=self._concurrency, thread_name_prefix="handler")
        self._queue: asyncio.Queue[handler_pb2.Job] = asyncio.Queue()
        self._running: set[asyncio.Task[None]] = set()
        self._active: set[str] = set()
        """Ids of jobs received whose outcome (or hand-back) has not been sent yet."""
        self._calls: dict[str, _Call] = {}
        """Running `async def` calls, by each of their request ids (what a cancel cancels)."""
        self._stopping = asyncio.Event()
        self._traced = tracing.enabled()

    @property
    def room(self) -> int:
        """Jobs this process takes at once: each call's slot, times the batch size for a batch handler."""
        return self._concurrency * self._max_batch

    def stop(self) -> None:
        """Take no new job: running ones get the grace period, the rest go back (SIGTERM, or the executor gone)."""
        self._stopping.set()

    async def receive(self, reader: asyncio.StreamReader) -> None:
        """Queue every job the executor sends, until the channel closes."""
        try:
            while True:
                message = await read_frame(reader, handler_pb2.ToHandler)
                for job in message.jobs:
                    self._active.add(job.id)
                    self._queue.put_nowait(job)
                for job_id in message.cancel:
                    self.cancel(job_id)
        except (ChannelClosedError, ConnectionError):
            log.info("the executor closed the channel; stopping")
        finally:
            self.stop()

    def cancel(self, job_id: str) -> None:
        """The job's request was cancelled: flag it, and cancel its `async def` call once all the call serves are.

        A job not started yet never starts; every cancelled job's outcome is RequestCancelled.
        """
        if job_id not in self._active:
            return  # finished already (its outcome is on the way), or never sent here
        cancellation.mark(job_id)
        call = self._calls.get(job_id)
        if call is not None and all(cancellation.cancelled(i) for i in call.ids):
            call.task.cancel()

    def _done(self, job_id: str) -> None:
        self._active.discard(job_id)
        cancellation.forget(job_id)

    async def run(self) -> None:
        """Run jobs until stopped, then hand back what has not started and let running jobs finish."""
        slots = [asyncio.create_task(self._slot()) for _ in range(self._concurrency)]
        await self._stopping.wait()
        while not self._queue.empty():
            self._hand_back(self._queue.get_nowait().id)
        running = [t for t in self._running if not t.done()]
        if running:
            await asyncio.wait(running, timeout=self._grace)
        for slot in slots:
            slot.cancel()
        await asyncio.gather(*slots, return_exceptions=True)
        await self._outbox.drained()
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def _slot(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            job = await self._queue.get()
            if self._stopping.is_set():
                self._hand_back(job.id)
                continue
            batch = [job]
            # Dynamic batching: up to max_batch_size requests, or whatever came within batch_interval.
            deadline = loop.time() + self._batch_interval
            while len(batch) < self._max_batch and (remaining := deadline - loop.time()) > 0:
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            task = asyncio.create_task(self._run_jobs(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            await asyncio.wait([task])

    def _hand_back(self, job_id: str) -> None:
        self._done(job_id)
        self._outbox.returned(job_id)

    async def _run_jobs(self, jobs: list[handler_pb2.Job]) -> None:
        try:
            if len(jobs) == 1 and jobs[0].trace_headers:
                # Continue the request's trace (exported or not): the handler's span and log lines join it.
                with tracing.attached(tracing.extract(jobs[0].trace_headers)):
                    executed = await self._execute(jobs)
            else:
                executed = await self._execute(jobs)
            outcomes = [await self._send_large(outcome, large) for outcome, large in executed]
        except HandlerTimedOutError:
            # The thread cannot be stopped: report the failures, then let the executor restart this process.
            message = self._timeout_message()
            timed_out = [_failed(job.id, "TimedOut", message, self._timeout or 0.0) for job in jobs]
            timed_out = [_unless_cancelled(outcome) for outcome in timed_out]
            self._outbox.send_now(handler_pb2.FromHandler(outcomes=timed_out, restarting=True))
            await self._outbox.drained()
            log.error("a plain handler timed out; restarting the handler process", extra={"ids": [j.id for j in jobs]})
            os._exit(EXIT_TIMED_OUT)
        for outcome in outcomes:
            self._outbox.outcome(_unless_cancelled(outcome))
            self._done(outcome.id)

    async def _send_large(self, outcome: handler_pb2.Outcome, large: PreparedResult | None) -> handler_pb2.Outcome:
        """outcome, once a result too large for it went ahead in chunks (or the failure that stopped them)."""
        if large is None:
            return outcome
        chunks = iter(large.chunks())
        sent = 0
        try:
            while not cancellation.cancelled(outcome.id):
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
            return _failed(outcome.id, "InvalidResult", f"the result could not be read: {exc}", outcome.handler_seconds)
        outcome.result_streamed_bytes = sent
        return outcome

    async def _execute(self, jobs: list[handler_pb2.Job]) -> list[tuple[handler_pb2.Outcome, PreparedResult | None]]:
        """Decode, call the handler once (handle_async, or handle_batch for several), prepare each result.

        One outcome per job, each with the result still to send in chunks when it is too large for the outcome.
        """
        outcomes: dict[str, handler_pb2.Outcome] = {}
        large: dict[str, PreparedResult] = {}
        payloads: list[Any] = []
        runnable: list[handler_pb2.Job] = []
        for job in jobs:
            if cancellation.cancelled(job.id):
                # Cancelled before it started (waiting for its batch): it never runs.
                outcomes[job.id] = _failed(job.id, CANCELLED_ERROR, CANCELLED_MESSAGE, 0.0)
                continue
            try:
                payloads.append(decode_payload(job.content_type, job.payload))
                runnable.append(job)
            except Exception as exc:
                outcomes[job.id] = _failed(job.id, *describe_exception(exc), 0.0)
        if runnable:
            ids = [job.id for job in runnable]
            batched = self._handler.has_batch and self._max_batch > 1
            method = "handle_batch" if batched else "handle_async"
            began = time.perf_counter()
            trace = ""
            try:
                with _tracer.start_as_current_span("handler", attributes=_attributes(self._spec.name, ids)):
                    value = await self._call(payloads, ids, batched)
                results = split_batch_result(value, len(runnable)) if batched else [value]
                failure: tuple[str, str] | None = None
            except HandlerTimedOutError:
                raise
            except asyncio.CancelledError:
                # Our own cancel of the call (every request it served was cancelled), or this process stopping.
                if _being_cancelled() or not all(cancellation.cancelled(i) for i in ids):
                    raise
                results, failure = [], (CANCELLED_ERROR, CANCELLED_MESSAGE)
            except TimeoutError:
                results, failure = [], ("TimedOut", self._timeout_message())
            except InvalidResultError as exc:
                results, failure = [], ("InvalidResult", str(exc))
            except Exception as exc:
                log.info("handler raised", extra={"ids": ids, "error": repr(exc)})
                results, failure = [], describe_exception(exc)
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
                    outcomes[job.id] = _failed(job.id, "InvalidResult", str(exc), seconds)
                    continue
                outcomes[job.id] = _completed(job.id, prepared, seconds)
                if not prepared.inline:
                    large[job.id] = prepared
        return [(outcomes[job.id], large.get(job.id)) for job in jobs]

    async def _call(self, payloads: list[Any], ids: list[str], batched: bool) -> Any:
        """The handler's return value; TimeoutError (async) or HandlerTimedOutError (plain) past the timeout."""
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
            raise HandlerTimedOutError from None

    async def _cancellable(self, call: Any, ids: list[str]) -> Any:
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

    def _timeout_message(self) -> str:
        return f"timed out: the handler ran longer than the API's timeout of {self._timeout:g}s"


_tracer = tracing.tracer(__name__)


def user_traceback(exc: BaseException, root: Path) -> str:
    """The exception's traceback from the first frame in the user's project (under root) on: the frames of
    Cortado's own call into the handler say nothing to its author. The whole traceback when no frame is theirs."""
    root = root.resolve()
    tb = exc.__traceback__
    while tb is not None and not (root / tb.tb_frame.f_code.co_filename).resolve().is_relative_to(root):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


def _failed(job_id: str, kind: str, message: str, seconds: float, trace: str = "") -> handler_pb2.Outcome:
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


def _unless_cancelled(outcome: handler_pb2.Outcome) -> handler_pb2.Outcome:
    """outcome, or RequestCancelled when its request was cancelled (whatever the handler returned or raised)."""
    if not cancellation.cancelled(outcome.id):
        return outcome
    return _failed(outcome.id, CANCELLED_ERROR, CANCELLED_MESSAGE, outcome.handler_seconds)


def _being_cancelled() -> bool:
    """Whether the current task itself is being cancelled (not just something it awaited)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _attributes(api: str, ids: list[str]) -> dict[str, Any]:
    if len(ids) == 1:
        return {"cortado.api": api, "cortado.request_id": ids[0]}
    return {"cortado.api": api, "cortado.batch_size": len(ids)}


def load_handler(spec: control_pb2.ApiSpec) -> HandlerInstance:
    """Import the project's handler and construct it; exceptions propagate for the caller to report."""
    root = Path.cwd()
    python_path = (root / spec.python_path) if spec.python_path else root
    handler_type = spec.handler_type or "python"
    tensorflow_client = None
    if handler_type == "tensorflow":
        # TensorFlow is imported only here: a python handler's process never loads it.
        from cortado.tfclient import TensorFlowClient

        tensorflow_client = TensorFlowClient.load(spec, root)
    handler_class = load_handler_class(root / spec.handler_path, python_path, handler_type=handler_type)
    config = json.loads(spec.handler_config_json or b"{}")
    return HandlerInstance.create(handler_class, config, MetricsClient(spec.name), tensorflow_client)


def _stop_with_executor() -> None:
    """Have the kernel send SIGTERM (drain) when the executor dies, so no handler process outlives it."""
    parent = os.environ.get("CORTADO_WORKER_PARENT_PID")
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    # The executor may have died before the request above took effect.
    if parent and os.getppid() != int(parent):
        os.kill(os.getpid(), signal.SIGTERM)


PR_SET_PDEATHSIG = 1


async def main() -> int:
    """Load the handler, tell the executor ready or failed, then run jobs until SIGTERM or the channel closes."""
    _stop_with_executor()
    settings = WorkerSettings.from_env()
    labels = {"replica": os.environ.get("CORTADO_WORKER_REPLICA", "0")}
    # What the executor told this process is not the handler's business.
    for name in [n for n in os.environ if n.startswith("CORTADO_")]:
        del os.environ[name]
    reader, writer = await open_channel(socket.socket(fileno=settings.channel_fd))
    outbox = Outbox(writer)
    spec = control_pb2.ApiSpec.FromString(settings.spec_file.read_bytes())
    labels = {"api": spec.name, **labels}
    tracing.setup_tracing(f"handler-{spec.name}")
    tracing.instrument_outbound_http()
    configure_handler_logging(labels, spec.log_level or "info")
    # print() in a handler becomes a log line of its request.
    sys.stdout = PrintToLog()
    try:
        handler = load_handler(spec)
    except BaseException:
        outbox.send_now(handler_pb2.FromHandler(failed=traceback.format_exc()))
        await outbox.drained()
        return EXIT_INIT_FAILED
    worker = Worker(spec, handler, outbox, settings.grace_seconds)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    outbox.send_now(handler_pb2.FromHandler(ready=True, room=worker.room))
    receiving = asyncio.create_task(worker.receive(reader))
    await worker.run()
    receiving.cancel()
    writer.close()
    tracing.shutdown_tracing()
    return 0


if __name__ == "__main__":
    sys.exit(run_event_loop(main()))
