"""The trusted half of a replica: pulls the API's requests, feeds them to the handler process, records, acks.

The handler process runs user code and holds no broker connection. For each of its
processes the executor keeps one Dispatcher, which pulls from the API's durable
consumers (one per priority, `pullfeed`), decides what may run (`redelivery`: a
redelivery whose request already finished is just acknowledged; one past `max_retries`
fails with HandlerProcessDied), sends jobs over the channel while the process has room,
marks them `in_progress` once they have run a moment (`inprogress`), keeps JetStream's
ack timer from firing on long handlers, writes each outcome (`resultstore` keeps its
result, `finals` writes its record with its webhook), and only then acknowledges. When
the process dies, the requests it held go back to the queue at once, counted as an attempt.

Cancelled requests (`cancels`): one held but not sent to the process is acknowledged and
dropped; one announced before it is even delivered is dropped on arrival; one running is
cancelled in the process (`ToHandler.cancel`), which answers with an outcome that is
dropped, since the record is final. A job still running CANCEL_GRACE_SECONDS later has its
process stopped and restarted (as for a plain handler's timeout), and the other requests it
held go back to the queue. The deferred `in_progress` write that finds a `cancelled` record
(an announcement missed) cancels the job the same way.

Its length (a little over 400 lines) is the one loop every job passes through, held in one place so the order
of its steps reads top to bottom; each step's own logic lives in the modules named above.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from cortado import _metrics, _names, _nats, records
from cortado.records import RecordStore
from cortado.v1 import control_pb2, handler_pb2, records_pb2
from services.executor import cancels, redelivery
from services.executor.cancels import CANCEL_GRACE_SECONDS, RecentIds
from services.executor.channel import frame
from services.executor.finals import FinalWriter, conclude, failed_record, seconds_between
from services.executor.held import Held, heartbeat, nak_msg, term_msg, trace_headers
from services.executor.inprogress import InProgress, started_record
from services.executor.payloads import Payloads
from services.executor.priority import LEVELS, PriorityQueues
from services.executor.pullfeed import LevelFeeds
from services.executor.resultstore import ResultKeeper

log = logging.getLogger(__name__)


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
        retention = records.retention_seconds(spec)
        self._room = max(1, room)
        """Jobs the process may hold: all of them run, or join the batch being collected."""
        self._max_deliveries = max_deliveries
        self._capacity = self._room * 2
        """Requests held at once per priority: the process's room plus as many prepared, ready to send."""
        self._held: dict[str, Held] = {}
        self._held_by_level = dict.fromkeys(LEVELS, 0)
        self._arriving = dict.fromkeys(LEVELS, 0)
        """Per priority, messages delivered whose _prepare has not finished yet."""
        self._ready: PriorityQueues[Held] = PriorityQueues()
        self._in_process: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._space = asyncio.Event()
        self._stopping = asyncio.Event()
        self._payloads = Payloads(js)
        self._results = ResultKeeper(js, spec.name, retention)
        self._marks = InProgress(store, retention, self._found_final)
        self._finals = FinalWriter(spec, js, store, on_outcome)
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
        nc = _nats.client_of(self._js)
        feeds = LevelFeeds(nc, _names.work_stream(self._spec.name), self._taker)
        # Listening for cancels before anything is pulled, so no announcement about a held request is missed.
        announcements = await cancels.listen(nc, self._spec.name, self.cancel)
        await feeds.start()
        beating = asyncio.create_task(heartbeat(self._held.values, self._ack_wait))
        try:
            await self._pull(feeds)
            # An open pull request may still deliver: wait for it to end; what comes goes back.
            await feeds.drain()
        finally:
            await feeds.stop()
            beating.cancel()
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
                    await self._marks.settle(held, write_now=True)
            if held.cancelled or held.finished:
                await self._drop(held)  # its record is final: nothing to run again
            else:
                await self._release(held, nak=True)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for held in list(self._held.values()):
            await self._release(held, nak=True)

    # Cancels.

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

    def _stop_job(self, held: Held) -> None:
        """Tell the process to cancel a running job, and restart the process if it still runs after the grace."""
        request_id = held.item.id
        log.info("cancelling a running request", extra={"api": self._spec.name, "id": request_id})
        if not self._writer.is_closing():
            self._writer.write(frame(handler_pb2.ToHandler(cancel=[request_id])))
        held.stopper = asyncio.create_task(
            cancels.stop_when_stuck(
                self._cancel_grace,
                lambda: self._held.get(request_id) is held and request_id in self._in_process,
                self._on_stuck,
                self._spec.name,
                request_id,
            )
        )

    async def _drop(self, held: Held) -> None:
        """Let go of a request whose record is final without running it (again): acked; a cancelled one's body dropped.

        The ack may fail (ingest deleted a cancelled request's work item): that is fine either way. A body stays
        when the request was not cancelled: a dead letter may still name it.
        """
        with contextlib.suppress(Exception):
            await self._marks.settle(held, write_now=False)
        held.payload = b""
        await self._ack(held)
        if held.cancelled:
            await self._payloads.drop(held.item)

    async def _found_final(self, held: Held, stored: records_pb2.RequestRecord) -> None:
        """The in_progress write found the request finished: its outcome will be dropped; a cancelled one is stopped."""
        if stored.status == records_pb2.REQUEST_STATUS_CANCELLED:
            # Cancelled before the announcement came, or it never came.
            self.cancel(held.item.id)
        await self._finals.requeue_webhook(stored, held.item.id)

    # Receiving from JetStream.

    def _taker(self, level: int) -> Callable[[Msg], None]:
        def take(msg: Msg) -> None:
            if self._stopping.is_set():
                self._spawn(nak_msg(msg))
                return
            # Counted at once: until _prepare holds it, it still takes a place the next pull must not ask for.
            self._arriving[level] += 1
            self._spawn(self._prepare(msg, level))

        return take

    async def _pull(self, feeds: LevelFeeds) -> None:
        # Each priority keeps its own requests prepared (up to the capacity), so that the dispatch order
        # (services/executor/priority.py) always has every waiting level to choose from.
        while not self._stopping.is_set():
            if await feeds.request(self._room_at):
                await asyncio.sleep(0.2)
                continue
            self._space.clear()
            await feeds.wait(self._space, timeout=1.0)

    def _room_at(self, level: int) -> int:
        """How many more requests of this priority may be pulled now."""
        return self._capacity - self._held_by_level[level] - self._arriving[level]

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
            await term_msg(msg)
            return
        if item.id in self._held:
            # A second delivery of a request this executor holds already (its ack is on the way).
            await nak_msg(msg, delay=self._ack_wait)
            return
        if item.id in self._recent_cancels:
            # Cancelled before it came: its record is final and ingest deleted it from the queue.
            with contextlib.suppress(Exception):
                await msg.ack()
            return
        held = Held(msg, item, asyncio.get_running_loop().time(), level)
        self._held[item.id] = held
        self._held_by_level[level] += 1
        delivered = int(msg.metadata.num_delivered or 1)
        try:
            if (delivered > 1 or delivered > self._max_deliveries) and not await self._admit(held, delivered):
                return
            held.payload = await self._payloads.fetch(item)
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

    async def _admit(self, held: Held, delivered: int) -> bool:
        """Whether a redelivered request should run; acks it (finished already, or given up) when not."""
        verdict = await redelivery.examine(
            self._store, self._spec.name, held.item.id, delivered, self._max_deliveries, self._spec.max_retries
        )
        if verdict.final is not None:
            # Finished (or cancelled) by an earlier delivery whose ack was lost.
            await self._finals.requeue_webhook(verdict.final, held.item.id)
            await self._ack(held)
            return False
        if verdict.failure is not None:
            # Given up: kept as a dead letter, then its final record (body kept for replay).
            failed = failed_record(held.item, verdict.attempts, *verdict.failure)
            await redelivery.bury(self._js, held.msg, held.item, failed)
            await self._finish(held, failed, verdict.revision, keep_payload=True)
            return False
        held.revision = verdict.revision
        held.attempts = verdict.attempts
        return True

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
            held.started = started_record(held.item, held.attempts)
            self._marks.schedule(held)
            _metrics.QUEUE_WAIT.labels(self._spec.name).observe(
                seconds_between(held.item.submitted_at, held.started.started_at)
            )
            jobs.append(
                handler_pb2.Job(
                    id=held.item.id,
                    content_type=held.item.content_type,
                    payload=held.payload,
                    trace_headers=trace_headers(held.msg),
                )
            )
            held.payload = b""
            self._in_process.add(held.item.id)
        if jobs:
            self._writer.write(frame(handler_pb2.ToHandler(jobs=jobs)))

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
                self._results.add_chunk(chunk.id, chunk.data)
        for outcome in message.outcomes:
            self._in_process.discard(outcome.id)
            held = self._held.get(outcome.id)
            if held is not None:
                self._spawn(self._record(held, outcome))
        self._send()

    async def _hand_back_unstarted(self, held: Held) -> None:
        if held.cancelled:
            await self._drop(held)
            return
        # It never ran: take back the attempt its in_progress record counted, then return it to the queue.
        await self._marks.take_back(held)
        await self._release(held, nak=True)

    async def _record(self, held: Held, outcome: handler_pb2.Outcome) -> None:
        """Write the outcome's final record and ack; an outcome of a request already final is dropped."""
        final = records_pb2.RequestRecord()
        final.CopyFrom(held.started)
        final.finished_at.CopyFrom(records.now_timestamp())
        if not held.cancelled:
            _metrics.HANDLER_DURATION.labels(self._spec.name).observe(outcome.handler_seconds)
        revision = await self._marks.settle(held, write_now=False)
        if held.finished:
            # Finished by an earlier delivery: its final record stands; this run's outcome is dropped.
            await self._ack(held)
            await self._payloads.drop(held.item)
            return
        if held.cancelled:
            # Whatever it returned: the request stays cancelled (ingest wrote that record, so this write is refused).
            final.status = records_pb2.REQUEST_STATUS_CANCELLED
        elif outcome.completed:
            conclude(final, await self._results.keep(held.item.id, outcome, final))
        else:
            conclude(final, (outcome.error.type[:200], outcome.error.message), outcome.error.traceback)
        await self._finish(held, final, revision)

    async def _finish(
        self, held: Held, final: records_pb2.RequestRecord, revision: int, keep_payload: bool = False
    ) -> None:
        """Write the final record (see FinalWriter.write), then ack; back to the queue if it cannot be written.

        A large body is deleted once acked, unless keep_payload (a dead letter still names it).
        """
        if not await self._finals.write(held, final, revision):
            await self._release(held, nak=True)
            return
        await self._ack(held)
        if not keep_payload:
            await self._payloads.drop(held.item)

    # Holding and letting go.

    async def _ack(self, held: Held) -> None:
        with contextlib.suppress(Exception):
            await held.msg.ack()
        await self._release(held)

    async def _release(self, held: Held, nak: bool = False) -> None:
        """Stop holding the request; with nak, hand it back for redelivery (after `redelivery.redelivery_delay`)."""
        if self._held.get(held.item.id) is not held:
            return
        del self._held[held.item.id]
        self._results.discard(held.item.id)
        self._held_by_level[held.level] -= 1
        self._in_process.discard(held.item.id)
        if held.stopper is not None:
            held.stopper.cancel()
        if nak:
            await nak_msg(held.msg, delay=redelivery.redelivery_delay(int(held.msg.metadata.num_delivered or 1)))
        self._space.set()

    async def _return_unsent(self) -> None:
        while self._ready:
            await self._release(self._ready.popleft(), nak=True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
