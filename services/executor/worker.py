"""The handler process: loads the user's Handler, pulls the API's requests, runs them and records outcomes.

Started by the executor as `python -P -m services.executor.worker` with the
project folder as working directory; a crash here never takes the executor down.
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
import sys
import time
import traceback
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from cortado import metrics, names, natsutil, records, tracing
from cortado.env import Env
from cortado.logs import PrintToLog, configure_handler_logging, request_id_var
from cortado.metrics import MetricsClient
from cortado.runtime import (
    HandlerInstance,
    InvalidResultError,
    decode_payload,
    describe_exception,
    encode_result,
    load_handler_class,
    split_batch_result,
)
from cortado.service import run_event_loop
from cortado.v1 import control_pb2, records_pb2
from services.executor.exitcodes import EXIT_TIMED_OUT
from services.executor.pullfeed import PullFeed

log = logging.getLogger("cortado.worker")


@dataclass(frozen=True)
class WorkerSettings:
    """What the handler process is told by its executor."""

    nats_url: str
    spec_file: Path
    status_fd: int
    ack_wait_seconds: float
    grace_seconds: float

    @classmethod
    def from_env(cls, env: Env | None = None) -> WorkerSettings:
        """Read `CORTADO_*` variables set by the executor."""
        env = env or Env()
        return cls(
            nats_url=env.text("NATS_URL", "nats://127.0.0.1:4222"),
            spec_file=Path(env.text("WORKER_SPEC_FILE", "")),
            status_fd=env.integer("WORKER_STATUS_FD", -1),
            ack_wait_seconds=env.number("ACK_WAIT_SECONDS", 30.0, minimum=1),
            grace_seconds=env.number("GRACE_SECONDS", 30.0, minimum=0),
        )


class StatusPipe:
    """Tells the executor where this process stands, one line per event.

    `ready` and `failed` are JSON lines written at once; which requests the process
    holds goes as compact `+<ack subject>` / `-<ack subject>` lines, written together
    once per event-loop turn, so the executor can hand them back if the process dies.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pending: list[str] = []
        self._scheduled = False

    def _write(self, text: str) -> None:
        if self._fd < 0:
            return
        data = text.encode()
        with contextlib.suppress(OSError):
            while data:
                data = data[os.write(self._fd, data) :]

    def send(self, state: str, message: str = "") -> None:
        """Write one state event now; a closed pipe (executor gone) is ignored."""
        self.flush()
        self._write(json.dumps({"state": state, "message": message}) + "\n")

    def holding(self, ack_subject: str, held: bool) -> None:
        """Record that the process took (held) or let go of a request.

        A take is written at once (the executor must know it before the process can die);
        releases are written together once per event-loop turn.
        """
        self._pending.append(("+" if held else "-") + ack_subject + "\n")
        if held:
            self.flush()
            return
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def outcome(self, completed: bool) -> None:
        """Count one finished request (`=c` completed, `=f` failed), written with the next batch."""
        self._pending.append("=c\n" if completed else "=f\n")
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write the pending holding events."""
        self._scheduled = False
        if self._pending:
            text = "".join(self._pending)
            self._pending.clear()
            self._write(text)


class RecordStore:
    """Forward-only writes of request records, with compare-and-set on the key's revision."""

    def __init__(self, js: JetStreamContext, kv: KeyValue, retention_seconds: float) -> None:
        self._js = js
        self._kv = kv
        self._retention = max(1.0, retention_seconds)

    async def read(self, request_id: str) -> tuple[records_pb2.RequestRecord | None, int]:
        """The record and its revision; (None, 0) when absent."""
        try:
            entry = await self._kv.get(request_id)
        except KeyNotFoundError:
            return None, 0
        if not entry.value:
            return None, entry.revision or 0
        return records_pb2.RequestRecord.FromString(entry.value), entry.revision or 0

    async def put(self, request_id: str, new: records_pb2.RequestRecord) -> int:
        """Write new whatever is stored (only for states nothing else can have overtaken); its revision."""
        return await self._kv.put(request_id, new.SerializeToString())

    async def advance(
        self, request_id: str, new: records_pb2.RequestRecord, revision: int
    ) -> tuple[bool, records_pb2.RequestRecord | None, int]:
        """Write new if the stored record may move to it; (written, stored record, revision) after the attempt.

        A concurrent write makes it re-read and decide again, so a final state is never overwritten.
        """
        ttl = self._retention if records.is_final(new.status) else None
        current: records_pb2.RequestRecord | None = None
        for _ in range(10):
            try:
                revision = await natsutil.kv_put_if(
                    self._js, names.REQUESTS_BUCKET, request_id, new.SerializeToString(), revision, ttl
                )
                return True, new, revision
            except KeyWrongLastSequenceError:
                current, revision = await self.read(request_id)
                if current is not None and not records.may_move(current.status, new.status):
                    return False, current, revision
        raise RuntimeError(f"request {request_id}: too many concurrent writes")


RECORD_ATTEMPTS = 5
"""Tries to write a request's outcome (over about 8 s) before it goes back to the queue."""


class HandlerTimedOutError(Exception):
    """A plain handler ran past the API's timeout; its thread cannot be stopped."""


class Worker:
    """Pulls an API's requests and runs each through the handler, up to max_concurrency at once.

    A handler slot is busy only while the handler runs: recording the outcome and
    acknowledging the message continue in the background, and the next request is
    already fetched (prefetch) when a slot frees. Every held message is announced
    to the executor, which hands it back to the queue if this process dies.
    """

    def __init__(
        self,
        spec: control_pb2.ApiSpec,
        handler: HandlerInstance,
        js: JetStreamContext,
        store: RecordStore,
        settings: WorkerSettings,
        status: StatusPipe,
    ) -> None:
        self._spec = spec
        self._handler = handler
        self._js = js
        self._store = store
        self._settings = settings
        self._status = status
        self._concurrency = max(1, spec.max_concurrency)
        self._max_batch = max(1, spec.max_batch_size) if handler.has_batch else 1
        self._batch_interval = spec.batch_interval.ToTimedelta().total_seconds()
        self._capacity = self._concurrency * self._max_batch * 2
        self._timeout = spec.timeout.ToTimedelta().total_seconds() if spec.HasField("timeout") else None
        self._threads = ThreadPoolExecutor(max_workers=self._concurrency, thread_name_prefix="handler")
        self._queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._held: dict[str, tuple[Msg, float]] = {}
        self._space = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._finishing: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._payloads: Any = None
        self._traced = tracing.enabled()

    def stop(self) -> None:
        """Stop pulling; running requests get the grace period, the rest go back to the queue (SIGTERM)."""
        self._stopping.set()
        self._space.set()

    async def run(self) -> None:
        """Pull and handle until stopped, then drain: finish, hand back, and record what is pending."""
        feed = PullFeed(self._js._nc, names.work_stream(self._spec.name), names.WORK_CONSUMER, self._take)
        await feed.start()
        slots = [asyncio.create_task(self._slot()) for _ in range(self._concurrency)]
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            await self._pull(feed)
            # An open pull request may still deliver: wait for it to end, handing back what comes.
            while feed.outstanding and not feed.expired():
                feed.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(feed.changed.wait(), 0.5)
        finally:
            await feed.stop()
            # Not started yet: straight back to the queue.
            while not self._queue.empty():
                await self._release(self._queue.get_nowait(), nak=True)
            running = [t for t in self._running if not t.done()]
            if running:
                await asyncio.wait(running, timeout=self._settings.grace_seconds)
            for slot in slots:
                slot.cancel()
            await asyncio.gather(*slots, return_exceptions=True)
            if self._finishing:
                await asyncio.wait(self._finishing, timeout=self._settings.grace_seconds)
            for msg, _ in list(self._held.values()):
                await self._release(msg, nak=True)
            heartbeat.cancel()
            self._threads.shutdown(wait=False, cancel_futures=True)

    def _take(self, msg: Msg) -> None:
        self._held[msg.reply] = (msg, asyncio.get_running_loop().time())
        self._status.holding(msg.reply, True)
        self._queue.put_nowait(msg)

    async def _pull(self, feed: PullFeed) -> None:
        while not self._stopping.is_set():
            if feed.expired():
                feed.forget()
            space = self._capacity - len(self._held) - feed.outstanding
            if feed.outstanding == 0 and space > 0:
                try:
                    await feed.request(space)
                except Exception as exc:
                    log.warning("pull request failed", extra={"error": repr(exc)})
                    await asyncio.sleep(0.2)
                    continue
            feed.changed.clear()
            self._space.clear()
            waits = [asyncio.ensure_future(feed.changed.wait()), asyncio.ensure_future(self._space.wait())]
            try:
                await asyncio.wait(waits, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()

    async def _slot(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            msg = await self._queue.get()
            if self._stopping.is_set():
                await self._release(msg, nak=True)
                continue
            if self._max_batch > 1:
                # Dynamic batching: up to max_batch_size requests, or whatever came within batch_interval.
                batch = [msg]
                deadline = loop.time() + self._batch_interval
                while len(batch) < self._max_batch and (remaining := deadline - loop.time()) > 0:
                    try:
                        batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                    except TimeoutError:
                        break
                task = asyncio.create_task(self._process_batch(batch))
            else:
                task = asyncio.create_task(self._process(msg))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            await asyncio.wait([task])

    async def _release(self, msg: Msg, nak: bool = False) -> None:
        """Stop holding msg; with nak, hand it back for immediate redelivery."""
        if self._held.pop(msg.reply, None) is None:
            return
        if nak:
            with contextlib.suppress(Exception):
                await msg.nak()
        self._status.holding(msg.reply, False)
        self._space.set()

    async def _heartbeat(self) -> None:
        # Tell JetStream every held request is still being worked on, so a long handler is not redelivered.
        interval = self._settings.ack_wait_seconds / 3
        while True:
            await asyncio.sleep(interval)
            now = asyncio.get_running_loop().time()
            for msg, since in list(self._held.values()):
                if now - since >= interval * 0.9:
                    with contextlib.suppress(Exception):
                        await msg.in_progress()

    def _finish_later(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _payload(self, item: records_pb2.WorkItem) -> bytes:
        if not item.payload_object:
            return item.payload
        if self._payloads is None:
            self._payloads = await natsutil.object_store(self._js, names.PAYLOADS_STORE)
        result = await self._payloads.get(item.payload_object)
        return bytes(result.data or b"")

    async def _process(self, msg: Msg) -> None:
        try:
            if self._traced:
                # Continue the trace ingest started: queue wait, handler and result write become its spans.
                with tracing.attached(tracing.extract(msg.headers)):
                    await self._process_unsafe(msg)
            else:
                await self._process_unsafe(msg)
        except Exception:
            log.exception("request could not be processed; it goes back to the queue")
            await self._release(msg, nak=True)

    async def _prepare(self, msg: Msg) -> _Job | None:
        """Mark the request in_progress; None when there is nothing to run (finished already, or given up)."""
        item = records_pb2.WorkItem.FromString(msg.data)
        delivered = int(msg.metadata.num_delivered or 1)
        base = records_pb2.RequestRecord(id=item.id, api=item.api, submitted_at=item.submitted_at)
        started = records_pb2.RequestRecord()
        started.CopyFrom(base)
        started.status = records_pb2.REQUEST_STATUS_IN_PROGRESS
        started.attempts = 1
        started.started_at.CopyFrom(records.now_timestamp())
        marked: asyncio.Future[int]
        if delivered == 1:
            # A first delivery can only find the request absent or in_queue, so the in_progress write
            # needs no read before it. It lands before the handler starts: should the handler kill its
            # process, the record says it started, and the retry count sees it.
            marked = asyncio.get_running_loop().create_future()
            marked.set_result(await self._store.put(item.id, started))
        else:
            stored, revision = await self._store.read(item.id)
            if stored is not None and records.is_final(stored.status):
                # Finished by an earlier delivery whose ack was lost.
                await self._ack(msg)
                return None
            # Deliveries also count hand-backs of requests that never started (prefetched by a process
            # that died or drained): only an in_progress record says a handler started and died.
            died = (
                stored.attempts if stored is not None and stored.status == records_pb2.REQUEST_STATUS_IN_PROGRESS else 0
            )
            if died > self._spec.max_retries:
                await self._give_up(msg, item, base, died, revision)
                return None
            started.attempts = died + 1
            written, _, revision = await self._store.advance(item.id, started, revision)
            if not written:
                await self._ack(msg)
                return None
            marked = asyncio.get_running_loop().create_future()
            marked.set_result(revision)
        if self._traced:
            wait = _tracer.start_span("queue wait", start_time=_nanos(item.submitted_at), attributes=_attributes(item))
            wait.end(end_time=_nanos(started.started_at))
        return _Job(msg, item, started, marked)

    async def _process_unsafe(self, msg: Msg) -> None:
        job = await self._prepare(msg)
        if job is None:
            return
        try:
            with _tracer.start_as_current_span("handler", attributes=_attributes(job.item)):
                outcome = await self._run_handler(job.item, job.started)
        except HandlerTimedOutError:
            await self._restart_after_timeout([job])
        # The slot is free as soon as the handler returned; recording and acking continue meanwhile.
        self._finish_later(self._record(job.msg, job.item, outcome, job.marked))

    async def _restart_after_timeout(self, jobs: list[_Job]) -> NoReturn:
        # The thread cannot be stopped: record the failure, then let the executor restart this process.
        for job in jobs:
            outcome = self._failed(job.started, "TimedOut", self._timeout_message())
            await self._record(job.msg, job.item, outcome, job.marked)
        await self._js._nc.flush(timeout=5)
        log.error("a plain handler timed out; restarting the handler process", extra={"ids": [j.item.id for j in jobs]})
        os._exit(EXIT_TIMED_OUT)

    async def _process_batch(self, msgs: list[Msg]) -> None:
        """Run up to max_batch_size requests through one handle_batch call; each still gets its own outcome."""
        prepared = await asyncio.gather(*(self._prepare(m) for m in msgs), return_exceptions=True)
        jobs: list[_Job] = []
        for msg, job in zip(msgs, prepared, strict=True):
            if isinstance(job, BaseException):
                log.error("request could not be prepared; it goes back to the queue", exc_info=job)
                await self._release(msg, nak=True)
            elif job is not None:
                jobs.append(job)
        if not jobs:
            return
        with _tracer.start_as_current_span("handler batch", attributes={"cortado.batch_size": len(jobs)}):
            try:
                outcomes = await self._run_batch(jobs)
            except HandlerTimedOutError:
                await self._restart_after_timeout(jobs)
        for job, outcome in zip(jobs, outcomes, strict=True):
            self._finish_later(self._record(job.msg, job.item, outcome, job.marked))

    async def _run_batch(self, jobs: list[_Job]) -> list[records_pb2.RequestRecord]:
        api = self._spec.name
        payloads: list[Any] = []
        decodable: list[_Job] = []
        outcomes: dict[str, records_pb2.RequestRecord] = {}
        for job in jobs:
            metrics.QUEUE_WAIT.labels(api).observe(_seconds_between(job.item.submitted_at, job.started.started_at))
            try:
                payloads.append(decode_payload(job.item.content_type, await self._payload(job.item)))
                decodable.append(job)
            except Exception as exc:
                outcomes[job.item.id] = self._failed(job.started, *describe_exception(exc))
        if decodable:
            ids = [job.item.id for job in decodable]
            began = time.perf_counter()
            try:
                if self._handler.batch_is_async:
                    value = await asyncio.wait_for(self._handler.call_batch_async(payloads, ids), self._timeout)
                else:
                    loop = asyncio.get_running_loop()
                    call = loop.run_in_executor(self._threads, self._handler.call_batch, payloads, ids)
                    try:
                        value = await asyncio.wait_for(asyncio.shield(call), self._timeout)
                    except TimeoutError:
                        raise HandlerTimedOutError from None
                results = split_batch_result(value, len(decodable))
            except HandlerTimedOutError:
                raise
            except TimeoutError:
                results = None
                failure = ("TimedOut", self._timeout_message())
            except InvalidResultError as exc:
                results = None
                failure = ("InvalidResult", str(exc))
            except Exception as exc:
                results = None
                failure = describe_exception(exc)
            finally:
                for _ in decodable:
                    metrics.HANDLER_DURATION.labels(api).observe(time.perf_counter() - began)
            for index, job in enumerate(decodable):
                if results is None:
                    outcomes[job.item.id] = self._failed(job.started, *failure)
                    continue
                try:
                    encoded = _fitting(encode_result(results[index], method="handle_batch", index=index))
                except InvalidResultError as exc:
                    outcomes[job.item.id] = self._failed(job.started, "InvalidResult", str(exc))
                    continue
                done = self._final(job.started, job.started.attempts)
                done.status = records_pb2.REQUEST_STATUS_COMPLETED
                done.result_json = encoded
                outcomes[job.item.id] = done
        return [outcomes[job.item.id] for job in jobs]

    async def _record(
        self,
        msg: Msg,
        item: records_pb2.WorkItem,
        outcome: records_pb2.RequestRecord,
        marked: asyncio.Future[int],
    ) -> None:
        written = False
        for attempt in range(RECORD_ATTEMPTS):
            try:
                with _tracer.start_as_current_span("result write", attributes={"cortado.request_id": item.id}):
                    written, _, _ = await self._store.advance(item.id, outcome, await marked)
                break
            except Exception:
                # A NATS fail-over takes seconds: retry before giving the request back (it would run again).
                if attempt == RECORD_ATTEMPTS - 1:
                    log.exception("outcome not recorded; the request goes back to the queue", extra={"id": item.id})
                    await self._release(msg, nak=True)
                    return
                await asyncio.sleep(0.5 * 2**attempt)
        if written:
            count_outcome(self._spec.name, outcome)
            self._status.outcome(outcome.status == records_pb2.REQUEST_STATUS_COMPLETED)
        await self._ack(msg)
        await self._drop_payload(item)

    async def _ack(self, msg: Msg) -> None:
        with contextlib.suppress(Exception):
            await msg.ack()
        await self._release(msg)

    def _timeout_message(self) -> str:
        return f"timed out: the handler ran longer than the API's timeout of {self._timeout:g}s"

    async def _give_up(
        self, msg: Msg, item: records_pb2.WorkItem, base: records_pb2.RequestRecord, died: int, revision: int
    ) -> None:
        failed = self._final(base, died)
        failed.status = records_pb2.REQUEST_STATUS_FAILED
        failed.error.type = "HandlerProcessDied"
        failed.error.message = (
            f"the handler's process died while handling this request {died} times; "
            f"giving up after max_retries={self._spec.max_retries}"
        )
        written, _, _ = await self._store.advance(item.id, failed, revision)
        if written:
            count_outcome(self._spec.name, failed)
            self._status.outcome(False)
        await self._ack(msg)
        await self._drop_payload(item)

    async def _drop_payload(self, item: records_pb2.WorkItem) -> None:
        if item.payload_object and self._payloads is not None:
            with contextlib.suppress(Exception):
                await self._payloads.delete(item.payload_object)

    @staticmethod
    def _final(started: records_pb2.RequestRecord, attempts: int) -> records_pb2.RequestRecord:
        out = records_pb2.RequestRecord()
        out.CopyFrom(started)
        out.attempts = attempts
        out.finished_at.CopyFrom(records.now_timestamp())
        return out

    async def _run_handler(
        self, item: records_pb2.WorkItem, started: records_pb2.RequestRecord
    ) -> records_pb2.RequestRecord:
        api = self._spec.name
        metrics.QUEUE_WAIT.labels(api).observe(_seconds_between(item.submitted_at, started.started_at))
        began = time.perf_counter()
        try:
            outcome = await self._call_handler(item, started)
        finally:
            metrics.HANDLER_DURATION.labels(api).observe(time.perf_counter() - began)
        return outcome

    async def _call_handler(
        self, item: records_pb2.WorkItem, started: records_pb2.RequestRecord
    ) -> records_pb2.RequestRecord:
        try:
            payload = decode_payload(item.content_type, await self._payload(item))
            request_id_var.set(item.id)
            if self._handler.is_async:
                try:
                    value = await asyncio.wait_for(self._handler.call_async(payload, item.id), self._timeout)
                except TimeoutError:
                    return self._failed(started, "TimedOut", self._timeout_message())
            else:
                # The thread runs in a copy of this task's context, so log lines carry the request id.
                context = contextvars.copy_context()
                loop = asyncio.get_running_loop()
                call = loop.run_in_executor(self._threads, context.run, self._handler.call_sync, payload, item.id)
                try:
                    value = await asyncio.wait_for(asyncio.shield(call), self._timeout)
                except TimeoutError:
                    raise HandlerTimedOutError from None
            result_json = _fitting(encode_result(value))
        except HandlerTimedOutError:
            raise
        except InvalidResultError as exc:
            return self._failed(started, "InvalidResult", str(exc))
        except Exception as exc:
            log.info("handler raised", extra={"id": item.id, "error": repr(exc)})
            return self._failed(started, *describe_exception(exc))
        done = self._final(started, started.attempts)
        done.status = records_pb2.REQUEST_STATUS_COMPLETED
        done.result_json = result_json
        return done

    def _failed(self, started: records_pb2.RequestRecord, kind: str, message: str) -> records_pb2.RequestRecord:
        out = self._final(started, started.attempts)
        out.status = records_pb2.REQUEST_STATUS_FAILED
        out.error.type = kind
        out.error.message = message
        return out


_tracer = tracing.tracer(__name__)


@dataclass
class _Job:
    """A request marked in_progress and ready for the handler."""

    msg: Msg
    item: records_pb2.WorkItem
    started: records_pb2.RequestRecord
    marked: asyncio.Future[int]


def _attributes(item: records_pb2.WorkItem) -> dict[str, str]:
    return {"cortado.api": item.api, "cortado.request_id": item.id}


MAX_RESULT_BYTES = 7 * 1024 * 1024
"""Largest result JSON a request record holds (NATS's message limit in Cortado's deployments is 8 MB)."""


def _fitting(result_json: bytes) -> bytes:
    if len(result_json) > MAX_RESULT_BYTES:
        raise InvalidResultError(
            f"the result is {len(result_json) / 2**20:.1f} MiB of JSON; at most {MAX_RESULT_BYTES // 2**20} MiB "
            "can be stored: return a reference (say, an object storage URL) instead"
        )
    return result_json


def _nanos(ts: Timestamp) -> int:
    return ts.seconds * 1_000_000_000 + ts.nanos


def _seconds_between(start: Timestamp, end: Timestamp) -> float:
    return max(0.0, (end.seconds - start.seconds) + (end.nanos - start.nanos) / 1e9)


def count_outcome(api: str, record: records_pb2.RequestRecord) -> None:
    """Count a request's final record in the built-in metrics."""
    status = records.STATUS_NAMES.get(record.status, "unknown")
    metrics.REQUESTS_FINISHED.labels(api, status).inc()
    metrics.END_TO_END.labels(api).observe(_seconds_between(record.submitted_at, record.finished_at))
    if record.status == records_pb2.REQUEST_STATUS_FAILED:
        metrics.FAILURES.labels(api, record.error.type).inc()


def load_handler(spec: control_pb2.ApiSpec) -> HandlerInstance:
    """Import the project's handler and construct it; exceptions propagate for the caller to report."""
    root = Path.cwd()
    python_path = (root / spec.python_path) if spec.python_path else root
    handler_class = load_handler_class(root / spec.handler_path, python_path)
    config = json.loads(spec.handler_config_json or b"{}")
    return HandlerInstance.create(handler_class, config, MetricsClient(spec.name))


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
    """Load the handler, report ready or failed to the executor, then serve until SIGTERM."""
    _stop_with_executor()
    settings = WorkerSettings.from_env()
    status = StatusPipe(settings.status_fd)
    spec = control_pb2.ApiSpec.FromString(settings.spec_file.read_bytes())
    labels = {"api": spec.name, "replica": os.environ.get("CORTADO_WORKER_REPLICA", "0")}
    tracing.setup_tracing(f"handler-{spec.name}")
    tracing.instrument_outbound_http()
    configure_handler_logging(labels, spec.log_level or "info")
    # print() in a handler becomes a log line of its request.
    sys.stdout = PrintToLog()
    try:
        handler = load_handler(spec)
    except BaseException:
        status.send("failed", traceback.format_exc())
        return 3
    nc = await natsutil.connect(settings.nats_url, f"cortado-worker-{spec.name}")
    js = nc.jetstream()
    store = RecordStore(js, await js.key_value(names.REQUESTS_BUCKET), spec.retention.ToTimedelta().total_seconds())
    worker = Worker(spec, handler, js, store, settings, status)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    status.send("ready")
    await worker.run()
    await natsutil.drain(nc)
    tracing.shutdown_tracing()
    return 0


if __name__ == "__main__":
    sys.exit(run_event_loop(main()))
