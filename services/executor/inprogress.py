"""The `in_progress` record of a running request, written lazily: a request that finishes sooner never gets one.

A job's `in_progress` write is due IN_PROGRESS_AFTER seconds after it is sent to the handler process (the handler
may start before it lands), so a quick request goes straight from the queue to its final record: one write instead
of two. The write counts the attempt that redeliveries compare with `max_retries`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from nats.js.errors import KeyWrongLastSequenceError

from cortado import records
from cortado.records import RecordStore
from cortado.v1 import records_pb2
from services.executor.finals import base_record
from services.executor.held import Held

log = logging.getLogger(__name__)

IN_PROGRESS_AFTER = 0.025
"""How long a job runs before its `in_progress` record is written (seconds); quicker ones never get one."""


def started_record(item: records_pb2.WorkItem, attempts: int) -> records_pb2.RequestRecord:
    """The `in_progress` record of a request starting now, as attempt number attempts."""
    started = base_record(item, attempts)
    started.status = records_pb2.REQUEST_STATUS_IN_PROGRESS
    started.started_at.CopyFrom(records.now_timestamp())
    return started


class InProgress:
    """Writes, calls off and takes back the `in_progress` records of the jobs one handler process runs."""

    def __init__(
        self,
        store: RecordStore,
        retention_seconds: float,
        on_final: Callable[[Held, records_pb2.RequestRecord], Awaitable[None]],
    ) -> None:
        self._store = store
        self._retention = retention_seconds
        self._on_final = on_final
        """Called when the write finds the request's record final (after `held.finished` is set)."""

    def schedule(self, held: Held) -> None:
        """Write held.started once the job has run IN_PROGRESS_AFTER seconds (unless `settle` calls it off)."""
        held.marked = asyncio.create_task(self._write_later(held))

    async def settle(self, held: Held, write_now: bool) -> int:
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
        held.marked = asyncio.create_task(self._write(held))
        return await held.marked

    async def take_back(self, held: Held) -> None:
        """Settle the write of a job that never ran, and take back the attempt its in_progress record counted."""
        revision = await self.settle(held, write_now=False)
        if revision and held.marking:
            undone = records_pb2.RequestRecord()
            undone.CopyFrom(held.started)
            undone.attempts = held.attempts - 1
            with contextlib.suppress(Exception):
                await self._store.advance(held.item.id, undone, revision, self._retention)

    async def _write_later(self, held: Held) -> int:
        await asyncio.sleep(IN_PROGRESS_AFTER)
        held.marking = True
        return await self._write(held)

    async def _write(self, held: Held) -> int:
        """Write in_progress; the record's revision, 0 if it failed.

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

    async def _found_final(self, held: Held, stored: records_pb2.RequestRecord) -> None:
        held.finished = True
        await self._on_final(held, stored)
