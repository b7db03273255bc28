"""The handler process's loop: jobs received from the executor, run in slots, drained on stop."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from cortado import _cancellation
from cortado.runtime import HandlerInstance
from cortado.v1 import control_pb2, handler_pb2
from services.executor.channel import ChannelClosedError, read_frame
from services.executor.contract import EXIT_TIMED_OUT
from services.executor.handlerprocess.execute import Execution, HandlerTimedOutError
from services.executor.handlerprocess.outbox import Outbox

log = logging.getLogger("cortado.worker")


class Worker:
    """Runs the jobs it receives through the handler, up to max_concurrency calls at once.

    The executor sends at most as many jobs as the process has room for (max_concurrency
    times max_batch_size), so a job that arrives starts at once or joins the batch being
    collected. Single and batched calls share one execution path (`Execution.run`).
    """

    def __init__(
        self,
        spec: control_pb2.ApiSpec,
        handler: HandlerInstance,
        outbox: Outbox,
        grace: float,
        exit_process: Callable[[int], object] = os._exit,
    ) -> None:
        self._outbox = outbox
        self._grace = grace
        self._exit_process = exit_process
        """Ends the process at once with an exit code (after a plain handler timed out)."""
        self._execution = Execution(spec, handler, outbox)
        self._batch_interval = spec.batch_interval.ToTimedelta().total_seconds()
        self._queue: asyncio.Queue[handler_pb2.Job] = asyncio.Queue()
        self._running: set[asyncio.Task[None]] = set()
        self._active: set[str] = set()
        """Ids of jobs received whose outcome (or hand-back) has not been sent yet."""
        self._stopping = asyncio.Event()

    @property
    def room(self) -> int:
        """Jobs this process takes at once: each call's slot, times the batch size for a batch handler."""
        return self._execution.concurrency * self._execution.max_batch

    def stop(self) -> None:
        """Take no new job: running ones get the grace period, the rest go back (SIGTERM, or the executor gone)."""
        self._stopping.set()

    async def receive(self, reader: asyncio.StreamReader) -> None:
        """Queue every job the executor sends and pass on its cancels, until the channel closes; then stop."""
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
        _cancellation.mark(job_id)
        self._execution.cancel(job_id)

    def _done(self, job_id: str) -> None:
        self._active.discard(job_id)
        _cancellation.forget(job_id)

    async def run(self) -> None:
        """Run jobs until stopped, then hand back what has not started and let running jobs finish.

        Running calls get the grace period; everything sent is flushed to the channel before it returns.
        """
        slots = [asyncio.create_task(self._slot()) for _ in range(self._execution.concurrency)]
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
        self._execution.close()

    async def _slot(self) -> None:
        """One call at a time: the next job, with those that join its batch, run to the end."""
        loop = asyncio.get_running_loop()
        while True:
            job = await self._queue.get()
            if self._stopping.is_set():
                self._hand_back(job.id)
                continue
            batch = [job]
            # Dynamic batching: up to max_batch_size requests, or whatever came within batch_interval.
            deadline = loop.time() + self._batch_interval
            while len(batch) < self._execution.max_batch and (remaining := deadline - loop.time()) > 0:
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
        """Run one call and send its outcomes; after a plain handler timed out, send them and end the process."""
        try:
            outcomes = await self._execution.run(jobs)
        except HandlerTimedOutError as timed_out:
            # The thread cannot be stopped: report the failures, then let the executor restart this process.
            self._outbox.send_now(handler_pb2.FromHandler(outcomes=timed_out.outcomes, restarting=True))
            await self._outbox.drained()
            log.error("a plain handler timed out; restarting the handler process", extra={"ids": [j.id for j in jobs]})
            self._exit_process(EXIT_TIMED_OUT)
            return
        for outcome in outcomes:
            self._outbox.outcome(outcome)
            self._done(outcome.id)
