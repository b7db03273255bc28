"""Frames from the handler process to its executor, outcomes batched once per event-loop turn."""

from __future__ import annotations

import asyncio
import contextlib

from cortado.v1 import handler_pb2
from services.executor.channel import frame


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
