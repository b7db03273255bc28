"""The trusted half of a replica: pulls the API's requests, feeds them to the handler process, records, acks.

The handler process runs user code and holds no broker connection. For each of its
processes the executor keeps one Dispatcher, which pulls from the API's durable
consumer, decides what may run (a redelivery whose request already finished is just
acknowledged; one past `max_retries` fails with HandlerProcessDied), sends jobs over
the channel while the process has room, marks them `in_progress` once they have
run IN_PROGRESS_AFTER seconds (a request that finishes sooner goes straight from the
queue to its final record: one write instead of two), keeps JetStream's ack timer
from firing on long handlers, writes each outcome with compare-and-set and the
retention TTL (with its webhook, queued once the record is written), and only then
acknowledges. When the process dies, the requests it held go back to the queue at once,
counted as an attempt.

Cancelled requests (ingest writes their `cancelled` record, then announces the id on
`names.cancel_subject`): one held but not sent to the process is acknowledged and dropped; one
announced before it is even delivered is dropped on arrival (ids announced lately are kept a while);
one running is cancelled in the process (`ToHandler.cancel`), which answers with an outcome that is
dropped, since the record is final. A job still running CANCEL_GRACE_SECONDS later has its process
stopped and restarted (as for a plain handler's timeout), and the other requests it held go back to
the queue. The deferred `in_progress` write that finds a `cancelled` record (an announcement missed)
cancels the job the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError

from cortado import metrics, names, natsutil, records, resultobjects, tracing, webhookjobs
from cortado.recordstore import RecordStore
from cortado.result import INLINE_RESULT_BYTES, JSON_TYPE, MAX_RESULT_BYTES, check_content_type
from cortado.v1 import control_pb2, handler_pb2, records_pb2
from services.executor.channel import frame
from services.executor.priority import LEVELS, PriorityQueues
from services.executor.pullfeed import PullFeed
from services.executor.spool import ResultSpool, Spooled, remove

log = logging.getLogger(__name__)

RECORD_ATTEMPTS = 5
"""Tries to write a request's outcome (over about 8 s) before it goes back to the queue."""

RESULT_PUT_ATTEMPTS = 3
"""Tries to store a large result (over about 1.5 s) before the request fails with ResultNotStored."""

MAX_ERROR_MESSAGE_CHARS = 64 * 1024
"""Longest error message a record keeps; a longer one keeps its start and says it was cut."""

TRACE_HEADERS = ("traceparent", "tracestate")

DEAD_ERROR_TYPE = "Cortado-Error-Type"
DEAD_ERROR_MESSAGE = "Cortado-Error-Message"
"""Headers of a dead letter: why Cortado gave up on the request (services/scheduler/deadletters.py reads them)."""

IN_PROGRESS_AFTER = 0.025
"""How long a job runs before its `in_progress` record is written (seconds); quicker ones never get one."""

REDELIVERY_MAX_DELAY = 30.0
"""Longest wait before a request handed back again and again is delivered anew (seconds)."""

CANCEL_GRACE_SECONDS = 10.0
"""Default time a cancelled job has to stop before its process is restarted (CORTADO_CANCEL_GRACE_SECONDS)."""

RECENT_CANCELS = 4096
RECENT_CANCEL_SECONDS = 300.0
"""Cancelled ids remembered (at most this many, for this long) for a message that arrives after its announcement."""


class RecentIds:
    """Ids seen lately: at most `size` of them, each forgotten `ttl` seconds after it was added."""

    def __init__(
        self,
        size: int = RECENT_CANCELS,
        ttl: float = RECENT_CANCEL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._size = size
        self._ttl = ttl
        self._clock = clock
        self._ids: OrderedDict[str, float] = OrderedDict()

    def add(self, item: str) -> None:
        """Remember item from now on (for ttl seconds, or until size newer ones push it out)."""
        now = self._clock()
        self._ids[item] = now
        self._ids.move_to_end(item)
        while len(self._ids) > self._size:
            self._ids.popitem(last=False)
        self._expire(now)

    def __contains__(self, item: object) -> bool:
        self._expire(self._clock())
        return item in self._ids

    def __len__(self) -> int:
        self._expire(self._clock())
        return len(self._ids)

    def _expire(self, now: float) -> None:
        while self._ids:
            oldest, added = next(iter(self._ids.items()))
            if now - added < self._ttl:
                return
            del self._ids[oldest]


@dataclass
class _Held:
    """A request this executor holds for the process: delivered by JetStream, not yet acknowledged."""

    msg: Msg
    item: records_pb2.WorkItem
    since: float
    level: int = records_pb2.PRIORITY_NORMAL
    """The priority whose consumer delivered it."""
    payload: bytes = b""
    revision: int = 0
    """The record's revision read at a redelivery (0 on a first delivery)."""
    attempts: int = 1
    started: records_pb2.RequestRecord = field(default_factory=records_pb2.RequestRecord)
    marked: asyncio.Task[int] | None = None
    """The in_progress write, due IN_PROGRESS_AFTER seconds after the job is sent; its result is the revision."""
    marking: bool = False
    """The in_progress write has begun (it is no longer just waiting for its moment)."""
    finished: bool = False
    """The in_progress write found a final record: a delivery the broker repeated (it lost the ack in a crash),
    or a request cancelled meanwhile."""
    cancelled: bool = False
    """Its request was cancelled (its record is final): it is dropped, or stopped in the process."""
    stopper: asyncio.Task[None] | None = None
    """Restarts the process if the cancelled job still runs after the grace period."""


class Dispatcher:
    """Feeds one handler process and records what it returns."""

    def __init__(
        self,
        spec: control_pb2.ApiSpec,
        js: JetStreamContext,
        store: RecordStore,
        writer: asyncio.StreamWriter,
        room: int,
        ack_wait_seconds: float,
        on_outcome: Callable[[records_pb2.RequestRecord], None],
        max_deliveries: int = 20,
        cancel_grace_seconds: float = CANCEL_GRACE_SECONDS,
        on_stuck: Callable[[], None] | None = None,
        recent_cancels: RecentIds | None = None,
    ) -> None:
        self._spec = spec
        self._js = js
        self._store = store
        self._writer = writer
        self._ack_wait = ack_wait_seconds
        self._on_outcome = on_outcome
        self._room = max(1, room)
        self._retention = spec.retention.ToTimedelta().total_seconds()
        self._max_deliveries = max_deliveries
        """Jobs the process may hold: all of them run, or join the batch being collected."""
        self._capacity = self._room * 2
        """Requests held at once per priority: the process's room plus as many prepared, ready to send."""
        self._held: dict[str, _Held] = {}
        self._held_by_level = dict.fromkeys(LEVELS, 0)
        self._arriving = dict.fromkeys(LEVELS, 0)
        """Per priority, messages delivered whose _prepare has not finished yet."""
        self._ready: PriorityQueues[_Held] = PriorityQueues()
        self._in_process: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._space = asyncio.Event()
        self._stopping = asyncio.Event()
        self._payloads: Any = None
        self._results: Any = None
        self._spool = ResultSpool()
        """Large results arriving in chunks, until their outcome comes."""
        self._traced = tracing.enabled()
        self._cancel_grace = cancel_grace_seconds
        self._on_stuck = on_stuck
        """Stops the process (it is restarted) when a cancelled job does not stop in time."""
        self._recent_cancels = recent_cancels if recent_cancels is not None else RecentIds()
        """Ids announced cancelled lately: a message that arrives after its announcement is dropped too."""

    def stop(self) -> None:
        """Stop pulling (the process is draining or gone)."""
        self._stopping.set()
        self._space.set()

    async def run(self) -> None:
        """Pull and feed until stopped; what was pulled but not sent goes back to the queue."""
        stream = names.work_stream(self._spec.name)
        feeds = {
            level: PullFeed(natsutil.client_of(self._js), stream, names.work_consumer(level), self._taker(level))
            for level in LEVELS
        }
        # Listening for cancels before anything is pulled, so no announcement about a held request is missed.
        announcements = await self._listen_for_cancels()
        for feed in feeds.values():
            await feed.start()
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            await self._pull(feeds)
            # An open pull request may still deliver: wait for it to end; what comes goes back.
            for feed in feeds.values():
                while feed.outstanding and not feed.expired():
                    feed.changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(feed.changed.wait(), 0.5)
        finally:
            for feed in feeds.values():
                await feed.stop()
            heartbeat.cancel()
            if announcements is not None:
                with contextlib.suppress(Exception):
                    await announcements.unsubscribe()
            await self._return_unsent()

    async def finish(self, process_died: bool, grace: float) -> None:
        """After the process exited: requests it still held go back (an attempt when it died), outcomes are written.

        Waits up to grace seconds for outcome writes in progress.
        """
        self.stop()
        await self._return_unsent()
        lost = [self._held[i] for i in list(self._in_process) if i in self._held]
        self._in_process.clear()
        if lost:
            log.warning(
                "handing back requests of a handler process that stopped",
                extra={"api": self._spec.name, "count": len(lost), "died": process_died},
            )
        for held in lost:
            if not held.cancelled:
                # The in_progress record (with its attempt count) must land before the redelivery reads it.
                with contextlib.suppress(Exception):
                    await self._settle_mark(held, write_now=True)
            if held.cancelled or held.finished:
                await self._drop(held)  # its record is final: nothing to run again
            else:
                await self._release(held, nak=True)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for held in list(self._held.values()):
            await self._release(held, nak=True)

    # Cancels.

    async def _listen_for_cancels(self) -> Any:
        """Subscribe to the API's cancel announcements; the subscription, or None if it failed."""
        try:
            return await natsutil.client_of(self._js).subscribe(
                names.cancel_subject(self._spec.name), cb=self._announced
            )
        except Exception as exc:
            # In-progress writes still find cancelled records; only a prefetched request may run anyway.
            log.warning("cancel announcements not heard", extra={"api": self._spec.name, "error": repr(exc)})
            return None

    async def _announced(self, msg: Msg) -> None:
        try:
            request_id = msg.data.decode()
        except UnicodeDecodeError:
            return
        self.cancel(request_id)

    def cancel(self, request_id: str) -> None:
        """The request was cancelled (its final record is written): never send it to the process, or stop it there."""
        self._recent_cancels.add(request_id)
        held = self._held.get(request_id)
        if held is None or held.cancelled:
            return
        held.cancelled = True
        if request_id in self._in_process:
            self._stop_job(held)
        elif self._ready.remove(held):
            self._spawn(self._drop(held))
        # Otherwise it is still being prepared: _prepare_arrived drops it once it is.

    def _stop_job(self, held: _Held) -> None:
        """Tell the process to cancel a running job, and restart the process if it still runs after the grace."""
        log.info("cancelling a running request", extra={"api": self._spec.name, "id": held.item.id})
        if not self._writer.is_closing():
            self._writer.write(frame(handler_pb2.ToHandler(cancel=[held.item.id])))
        held.stopper = asyncio.create_task(self._stop_when_stuck(held))

    async def _stop_when_stuck(self, held: _Held) -> None:
        await asyncio.sleep(self._cancel_grace)
        if self._held.get(held.item.id) is held and held.item.id in self._in_process and self._on_stuck is not None:
            log.warning(
                "a cancelled request's handler did not stop within the grace period (CORTADO_CANCEL_GRACE_SECONDS); "
                "restarting its process",
                extra={"api": self._spec.name, "id": held.item.id, "grace_seconds": self._cancel_grace},
            )
            self._on_stuck()

    async def _drop(self, held: _Held) -> None:
        """Let go of a request whose record is final without running it (again): acked; a cancelled one's body dropped.

        The ack may fail (ingest deleted a cancelled request's work item): that is fine either way. A body stays
        when the request was not cancelled: a dead letter may still name it.
        """
        with contextlib.suppress(Exception):
            await self._settle_mark(held, write_now=False)
        held.payload = b""
        await self._ack(held)
        if held.cancelled:
            await self._drop_payload(held.item)

    async def _requeue_webhook(self, stored: records_pb2.RequestRecord, request_id: str) -> None:
        """Queue again the webhook of a final record still pending delivery (its first queuing may have been lost)."""
        if stored.webhook.url and stored.webhook.state == records_pb2.WEBHOOK_STATE_PENDING:
            await webhookjobs.queue_delivery(self._js, self._spec.name, request_id)

    # Receiving from JetStream.

    def _taker(self, level: int) -> Callable[[Msg], None]:
        def take(msg: Msg) -> None:
            if self._stopping.is_set():
                self._spawn(_nak(msg))
                return
            # Counted at once: until _prepare holds it, it still takes a place the next pull must not ask for.
            self._arriving[level] += 1
            self._spawn(self._prepare(msg, level))

        return take

    async def _pull(self, feeds: dict[int, PullFeed]) -> None:
        # Each priority keeps its own requests prepared (up to the capacity), so that the dispatch order
        # (services/executor/priority.py) always has every waiting level to choose from.
        while not self._stopping.is_set():
            failed = False
            for level, feed in feeds.items():
                if feed.expired():
                    feed.forget()
                space = self._capacity - self._held_by_level[level] - self._arriving[level] - feed.outstanding
                if feed.outstanding == 0 and space > 0:
                    try:
                        await feed.request(space)
                    except Exception as exc:
                        log.warning("pull request failed", extra={"error": repr(exc)})
                        failed = True
            if failed:
                await asyncio.sleep(0.2)
                continue
            self._space.clear()
            waits = [asyncio.ensure_future(self._space.wait())]
            for feed in feeds.values():
                feed.changed.clear()
                waits.append(asyncio.ensure_future(feed.changed.wait()))
            try:
                await asyncio.wait(waits, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()

    async def _prepare(self, msg: Msg, level: int) -> None:
        """Decide whether the request runs, fetch its body, and queue it for the process."""
        try:
            await self._prepare_arrived(msg, level)
        finally:
            self._arriving[level] -= 1
            self._space.set()

    async def _prepare_arrived(self, msg: Msg, level: int) -> None:
        try:
            item = records_pb2.WorkItem.FromString(msg.data)
        except Exception:
            log.exception("a work item could not be read; it is dropped")
            await _term(msg)
            return
        if item.id in self._held:
            # A second delivery of a request this executor holds already (its ack is on the way).
            await _nak(msg, delay=self._ack_wait)
            return
        if item.id in self._recent_cancels:
            # Cancelled before it came: its record is final and ingest deleted it from the queue.
            with contextlib.suppress(Exception):
                await msg.ack()
            return
        held = _Held(msg, item, asyncio.get_running_loop().time(), level)
        self._held[item.id] = held
        self._held_by_level[level] += 1
        delivered = int(msg.metadata.num_delivered or 1)
        try:
            if delivered > self._max_deliveries:
                await self._give_up(held, delivered)
                return
            if delivered > 1 and not await self._check_redelivery(held):
                return
            held.payload = await self._payload(item)
        except Exception:
            log.exception("request could not be prepared; it goes back to the queue", extra={"id": item.id})
            await self._release(held, nak=True)
            return
        if self._held.get(item.id) is not held:
            return
        if held.cancelled or item.id in self._recent_cancels:
            held.cancelled = True
            await self._drop(held)
            return
        self._ready.append(held.level, held)
        self._send()

    async def _give_up(self, held: _Held, delivered: int) -> None:
        """Fail a request delivered more often than allowed without an outcome being recorded."""
        log.error(
            "request delivered too often without an outcome; it fails",
            extra={"id": held.item.id, "api": self._spec.name, "deliveries": delivered},
        )
        stored, revision = await self._store.read(held.item.id)
        if stored is not None and records.is_final(stored.status):
            await self._requeue_webhook(stored, held.item.id)
            await self._ack(held)
            return
        await self._abandon(
            held,
            stored.attempts if stored is not None else 0,
            revision,
            "DeliveryLimitExceeded",
            f"the request was delivered {delivered} times without an outcome being recorded (the store was full "
            f"or unreachable, or its executors kept stopping); giving up after {self._max_deliveries} deliveries "
            "(CORTADO_MAX_DELIVERIES)",
        )

    async def _abandon(self, held: _Held, attempts: int, revision: int, kind: str, message: str) -> None:
        """Fail a request Cortado gives up on: kept as a dead letter, then its final record (body kept for replay)."""
        failed = _base_record(held.item, attempts)
        failed.status = records_pb2.REQUEST_STATUS_FAILED
        failed.finished_at.CopyFrom(records.now_timestamp())
        failed.error.type = kind
        failed.error.message = message
        await self._bury(held, failed)
        await self._write_final(held, failed, revision, keep_payload=True)

    async def _bury(self, held: _Held, failed: records_pb2.RequestRecord) -> None:
        """Keep the request Cortado gives up on as a dead letter (its work item, body included) for replay."""
        headers = {k: v for k, v in (held.msg.headers or {}).items() if k in TRACE_HEADERS}
        headers[DEAD_ERROR_TYPE] = failed.error.type
        headers[DEAD_ERROR_MESSAGE] = failed.error.message[:1000].replace("\r", " ").replace("\n", " ")
        try:
            await self._js.publish(
                names.dead_subject(held.item.api, held.item.id),
                held.msg.data,
                stream=names.DEAD_STREAM,
                headers=headers,
            )
        except Exception as exc:
            log.warning("dead letter not kept", extra={"id": held.item.id, "error": repr(exc)})

    async def _check_redelivery(self, held: _Held) -> bool:
        """Whether a redelivered request should run; acks it (finished already, or given up) when not."""
        stored, revision = await self._store.read(held.item.id)
        if stored is not None and records.is_final(stored.status):
            # Finished (or cancelled) by an earlier delivery whose ack was lost.
            await self._requeue_webhook(stored, held.item.id)
            await self._ack(held)
            return False
        # Deliveries also count hand-backs of requests that never started: only an in_progress
        # record says a handler started and its process died.
        died = stored.attempts if stored is not None and stored.status == records_pb2.REQUEST_STATUS_IN_PROGRESS else 0
        if died > self._spec.max_retries:
            await self._abandon(
                held,
                died,
                revision,
                "HandlerProcessDied",
                f"the handler's process died while handling this request {died} times; "
                f"giving up after max_retries={self._spec.max_retries}",
            )
            return False
        held.revision = revision
        held.attempts = died + 1
        return True

    async def _payload(self, item: records_pb2.WorkItem) -> bytes:
        if not item.payload_object:
            return item.payload
        if self._payloads is None:
            self._payloads = await natsutil.object_store(self._js, names.PAYLOADS_STORE)
        result = await self._payloads.get(item.payload_object)
        return bytes(result.data or b"")

    # Feeding the process.

    def _send(self) -> None:
        """Send as many prepared jobs as the process has room for, in one frame."""
        if self._writer.is_closing():
            return
        jobs: list[handler_pb2.Job] = []
        while self._ready and len(self._in_process) < self._room:
            held = self._ready.popleft()
            if self._held.get(held.item.id) is not held or held.cancelled:
                continue
            held.started = _base_record(held.item, held.attempts)
            held.started.status = records_pb2.REQUEST_STATUS_IN_PROGRESS
            held.started.started_at.CopyFrom(records.now_timestamp())
            held.marked = asyncio.create_task(self._mark_later(held))
            metrics.QUEUE_WAIT.labels(self._spec.name).observe(
                _seconds_between(held.item.submitted_at, held.started.started_at)
            )
            headers = held.msg.headers or {}
            jobs.append(
                handler_pb2.Job(
                    id=held.item.id,
                    content_type=held.item.content_type,
                    payload=held.payload,
                    trace_headers={k: headers[k] for k in TRACE_HEADERS if k in headers},
                )
            )
            held.payload = b""
            self._in_process.add(held.item.id)
        if jobs:
            self._writer.write(frame(handler_pb2.ToHandler(jobs=jobs)))

    async def _mark_later(self, held: _Held) -> int:
        """Write in_progress once the job has run IN_PROGRESS_AFTER seconds (unless _settle_mark cancels it)."""
        await asyncio.sleep(IN_PROGRESS_AFTER)
        held.marking = True
        return await self._mark(held)

    async def _settle_mark(self, held: _Held, write_now: bool) -> int:
        """The record's revision once the in_progress write is settled.

        A write already begun is awaited; one still waiting for its moment is called off, and done at once when
        write_now (the attempt must be counted: the process died).
        """
        task = held.marked
        if task is None:
            return held.revision
        if held.marking:
            return await task
        task.cancel()
        held.marked = None
        if not write_now:
            return held.revision
        held.marking = True
        held.marked = asyncio.create_task(self._mark(held))
        return await held.marked

    async def _mark(self, held: _Held) -> int:
        """Write in_progress (the handler may start before it lands); the record's revision, 0 if it failed.

        A first delivery creates the record, and finds nothing there, unless the broker delivered the request
        again as a first one (it lost its ack and delivery count in a crash): then a final record is never
        overwritten (the request is marked finished and its new outcome dropped), and an in_progress one counts
        one more attempt, as any redelivery does.
        """
        try:
            if held.revision == 0:
                try:
                    return await self._store.create(held.item.id, held.started, self._retention)
                except KeyWrongLastSequenceError:
                    stored, held.revision = await self._store.read(held.item.id)
                    if stored is not None and records.is_final(stored.status):
                        await self._found_final(held, stored)
                        return held.revision
                    if stored is not None and stored.status == records_pb2.REQUEST_STATUS_IN_PROGRESS:
                        held.started.attempts = stored.attempts + 1
            written, stored, revision = await self._store.advance(
                held.item.id, held.started, held.revision, self._retention
            )
            if not written and stored is not None and records.is_final(stored.status):
                await self._found_final(held, stored)
            return revision
        except Exception as exc:
            log.warning("in_progress not recorded", extra={"id": held.item.id, "error": repr(exc)})
            return 0

    async def _found_final(self, held: _Held, stored: records_pb2.RequestRecord) -> None:
        """The in_progress write found the request finished: its outcome will be dropped; a cancelled one is stopped."""
        held.finished = True
        if stored.status == records_pb2.REQUEST_STATUS_CANCELLED:
            # Cancelled before the announcement came, or it never came.
            self.cancel(held.item.id)
        await self._requeue_webhook(stored, held.item.id)

    # Receiving from the process.

    def on_frame(self, message: handler_pb2.FromHandler) -> None:
        """Handle outcomes and hand-backs from the process; frees room for the next jobs."""
        for job_id in message.returned:
            self._in_process.discard(job_id)
            held = self._held.get(job_id)
            if held is not None:
                self._spawn(self._hand_back_unstarted(held))
        for chunk in message.chunks:
            if chunk.id in self._in_process:
                self._spool.add(chunk.id, chunk.data)
        for outcome in message.outcomes:
            self._in_process.discard(outcome.id)
            held = self._held.get(outcome.id)
            if held is not None:
                self._spawn(self._record(held, outcome))
        self._send()

    async def _hand_back_unstarted(self, held: _Held) -> None:
        if held.cancelled:
            await self._drop(held)
            return
        # It never ran: take back the attempt its in_progress record counted, then return it to the queue.
        revision = await self._settle_mark(held, write_now=False)
        if revision and held.marking:
            undone = records_pb2.RequestRecord()
            undone.CopyFrom(held.started)
            undone.attempts = held.attempts - 1
            with contextlib.suppress(Exception):
                await self._store.advance(held.item.id, undone, revision, self._retention)
        await self._release(held, nak=True)

    async def _record(self, held: _Held, outcome: handler_pb2.Outcome) -> None:
        api = self._spec.name
        final = records_pb2.RequestRecord()
        final.CopyFrom(held.started)
        final.finished_at.CopyFrom(records.now_timestamp())
        if not held.cancelled:
            metrics.HANDLER_DURATION.labels(api).observe(outcome.handler_seconds)
        revision = await self._settle_mark(held, write_now=False)
        if held.finished:
            # Finished by an earlier delivery: its final record stands; this run's outcome is dropped.
            await self._ack(held)
            await self._drop_payload(held.item)
            return
        if held.cancelled:
            # Whatever it returned: the request stays cancelled (ingest wrote that record, so this write is refused).
            final.status = records_pb2.REQUEST_STATUS_CANCELLED
        else:
            failure = (
                await self._keep_result(held, outcome, final)
                if outcome.completed
                else (outcome.error.type[:200], outcome.error.message)
            )
            if failure is None:
                final.status = records_pb2.REQUEST_STATUS_COMPLETED
            else:
                final.status = records_pb2.REQUEST_STATUS_FAILED
                final.error.type, final.error.message = failure[0], cut_message(failure[1])
                if not outcome.completed:
                    final.error.traceback = cut_message(outcome.error.traceback, MAX_TRACEBACK_CHARS)
        await self._write_final(held, final, revision)

    async def _keep_result(
        self, held: _Held, outcome: handler_pb2.Outcome, final: records_pb2.RequestRecord
    ) -> tuple[str, str] | None:
        """Put a completed outcome's result in final (inline, or stored first); the failure when it cannot be.

        The process is untrusted: an inline result over the inline limit, a media type that is not one, or chunks
        that do not add up to what the outcome announces fail the request with InvalidResult. Chunks it sent and
        this does not take are discarded when the request is released.
        """
        request_id = held.item.id
        content_type = outcome.result_content_type
        if content_type:
            try:
                check_content_type(content_type)
            except ValueError as exc:
                return "InvalidResult", str(exc)
        if not outcome.result_streamed_bytes:
            inline = outcome.result_data if content_type else outcome.result_json
            if len(inline) > INLINE_RESULT_BYTES:
                return "InvalidResult", f"a result of {len(inline)} bytes came inline; at most {INLINE_RESULT_BYTES} do"
            if content_type:
                final.result_content_type = content_type
                final.result_data = outcome.result_data
            else:
                final.result_json = outcome.result_json
            final.result_size = len(inline)
            return None
        spooled = self._spool.take(request_id)
        if spooled is None or spooled.over_limit or spooled.size != outcome.result_streamed_bytes:
            if spooled is not None:
                remove(spooled)
            if spooled is not None and spooled.over_limit:
                return "InvalidResult", f"the result is larger than the {MAX_RESULT_BYTES // 2**30} GiB limit"
            return "InvalidResult", "the result arrived incomplete from the handler process"
        try:
            name = f"{request_id}.{secrets.token_hex(4)}"
            await self._put_result(name, spooled)
        except Exception as exc:
            log.warning("result not stored", extra={"id": request_id, "error": repr(exc)})
            return "ResultNotStored", (
                f"the result ({spooled.size / 2**20:.1f} MiB) could not be stored: {exc!r}; when the results "
                "store is full, raise CORTADO_RESULTS_MAX_BYTES or shorten results.retention"
            )
        finally:
            remove(spooled)
        final.result_content_type = content_type or JSON_TYPE
        final.result_object = name
        final.result_size = spooled.size
        final.result_sha256 = spooled.sha256
        return None

    async def _put_result(self, name: str, spooled: Spooled) -> None:
        """Store a spooled result under name (retried across a NATS fail-over), expiring with its record."""
        if self._results is None:
            self._results = await resultobjects.results_store(self._js)
        expires_at = time.time() + max(1.0, self._retention)
        for attempt in range(RESULT_PUT_ATTEMPTS):
            try:
                await resultobjects.put_result(self._results, name, self._spec.name, spooled.path, expires_at)
                return
            except Exception:
                if attempt == RESULT_PUT_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.5 * 2**attempt)

    async def _write_final(
        self, held: _Held, final: records_pb2.RequestRecord, revision: int, keep_payload: bool = False
    ) -> None:
        """Write the final record (retried across a NATS fail-over), count it, ack; back to the queue if it can't.

        The record carries its webhook (pending), whose delivery is queued once it is written. Nothing is counted
        nor queued when the write is refused (the record was final already: cancelled, or an earlier delivery's).
        A large body is deleted with it, unless keep_payload (a dead letter still names it).
        """
        webhookjobs.mark_pending(final, webhookjobs.delivery_url(held.item, self._spec))
        written = False
        for attempt in range(RECORD_ATTEMPTS):
            try:
                if self._traced:
                    with (
                        tracing.attached(tracing.extract(held.msg.headers)),
                        _tracer.start_as_current_span("result write", attributes={"cortado.request_id": held.item.id}),
                    ):
                        written, _, _ = await self._store.advance(held.item.id, final, revision, self._retention)
                else:
                    written, _, _ = await self._store.advance(held.item.id, final, revision, self._retention)
                break
            except Exception:
                if attempt == RECORD_ATTEMPTS - 1:
                    log.exception(
                        "outcome not recorded; the request goes back to the queue", extra={"id": held.item.id}
                    )
                    await self._release(held, nak=True)
                    return
                await asyncio.sleep(0.5 * 2**attempt)
        if written:
            count_outcome(self._spec.name, final)
            self._on_outcome(final)
            if self._traced:
                _trace_queue_wait(held, final)
            if final.webhook.url:
                # Before the ack: should this executor stop first, the redelivery finds it pending and queues it.
                await webhookjobs.queue_delivery(self._js, self._spec.name, held.item.id)
        await self._ack(held)
        if not keep_payload:
            await self._drop_payload(held.item)

    # Holding and letting go.

    async def _ack(self, held: _Held) -> None:
        with contextlib.suppress(Exception):
            await held.msg.ack()
        await self._release(held)

    async def _release(self, held: _Held, nak: bool = False) -> None:
        """Stop holding the request; with nak, hand it back for immediate redelivery."""
        if self._held.get(held.item.id) is not held:
            return
        del self._held[held.item.id]
        self._spool.discard(held.item.id)
        self._held_by_level[held.level] -= 1
        self._in_process.discard(held.item.id)
        if held.stopper is not None:
            held.stopper.cancel()
        if nak:
            await _nak(held.msg, delay=redelivery_delay(int(held.msg.metadata.num_delivered or 1)))
        self._space.set()

    async def _return_unsent(self) -> None:
        while self._ready:
            await self._release(self._ready.popleft(), nak=True)

    async def _heartbeat(self) -> None:
        # Tell JetStream every held request is still being worked on, so a long handler is not redelivered.
        interval = self._ack_wait / 3
        while True:
            await asyncio.sleep(interval)
            now = asyncio.get_running_loop().time()
            for held in list(self._held.values()):
                if now - held.since >= interval * 0.9:
                    with contextlib.suppress(Exception):
                        await held.msg.in_progress()

    async def _drop_payload(self, item: records_pb2.WorkItem) -> None:
        if item.payload_object and self._payloads is not None:
            with contextlib.suppress(Exception):
                await self._payloads.delete(item.payload_object)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


_tracer = tracing.tracer(__name__)


def redelivery_delay(delivered: int) -> float | None:
    """How long a request handed back after its `delivered`-th delivery waits before the next one.

    The first hand-back is immediate (a process died; a drain); later ones back off exponentially up to
    REDELIVERY_MAX_DELAY seconds, so a request that keeps failing to be recorded (a full store) never loops hot.
    """
    if delivered <= 1:
        return None
    return min(REDELIVERY_MAX_DELAY, 0.5 * 2.0 ** (delivered - 2))


MAX_TRACEBACK_CHARS = 32 * 1024
"""The longest handler traceback a record keeps (its end is cut beyond)."""


def cut_message(message: str, limit: int = MAX_ERROR_MESSAGE_CHARS) -> str:
    """message, or its start and a note saying how long it was when it is over limit characters."""
    if len(message) <= limit:
        return message
    return message[:limit] + f"... (cut: the message was {len(message)} characters)"


def _base_record(item: records_pb2.WorkItem, attempts: int) -> records_pb2.RequestRecord:
    return records_pb2.RequestRecord(
        id=item.id, api=item.api, submitted_at=item.submitted_at, attempts=attempts, priority=item.priority
    )


def _trace_queue_wait(held: _Held, final: records_pb2.RequestRecord) -> None:
    with tracing.attached(tracing.extract(held.msg.headers)):
        span = _tracer.start_span(
            "queue wait",
            start_time=_nanos(held.item.submitted_at),
            attributes={"cortado.api": held.item.api, "cortado.request_id": held.item.id},
        )
        span.end(end_time=_nanos(final.started_at))


async def _nak(msg: Msg, delay: float | None = None) -> None:
    with contextlib.suppress(Exception):
        await msg.nak(delay=delay)


async def _term(msg: Msg) -> None:
    with contextlib.suppress(Exception):
        await msg.term()


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
