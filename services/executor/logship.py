"""Handler output to log lines: every line a handler process writes becomes one JSON line on NATS and stderr."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Mapping

from nats.aio.client import Client

from cortado import _names
from cortado._logs import MAX_LINE_BYTES

log = logging.getLogger(__name__)


def wrap_line(raw: bytes, level: str, pid: int, labels: Mapping[str, str]) -> bytes:
    """A JSON log line for one line of output: JSON object lines pass unchanged, others become `message`."""
    text = raw.rstrip(b"\r\n")
    if text.startswith(b"{"):
        try:
            if isinstance(json.loads(text), dict):
                return text
        except ValueError:
            pass
    now = time.time()
    line = {
        "asctime": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f",{int(now % 1 * 1000):03d}",
        "levelname": level,
        "message": text.decode("utf-8", "replace"),
        "process": pid,
        "labels": dict(labels),
    }
    return json.dumps(line, ensure_ascii=False).encode()


class LogShipper:
    """Publishes API log lines on `cortado.logs.<api>` (kept by the logs stream) and echoes them to stderr."""

    def __init__(self, nc: Client, echo: bool = True) -> None:
        self._nc = nc
        self._echo = echo

    async def ship(self, api: str, line: bytes) -> None:
        """Send one line; a line NATS refuses (over its max_payload) is dropped with a warning."""
        if self._echo:
            sys.stderr.buffer.write(line + b"\n")
            sys.stderr.buffer.flush()
        try:
            await self._nc.publish(_names.logs_subject(api), line)
        except Exception as exc:
            log.warning("log line dropped", extra={"api": api, "bytes": len(line), "error": repr(exc)})

    async def pump(
        self, api: str, stream: asyncio.StreamReader, level: str, pid: int, labels: Mapping[str, str]
    ) -> None:
        """Ship every line of stream until it ends; lines over 5 MB are dropped."""
        while True:
            try:
                raw = await stream.readuntil(b"\n")
            except asyncio.IncompleteReadError as end:
                if end.partial:
                    await self._ship_checked(api, end.partial, level, pid, labels)
                return
            except asyncio.LimitOverrunError as over:
                # Longer than the reader's buffer (above 5 MB): skip to the end of the line.
                await stream.readexactly(over.consumed)
                while True:
                    try:
                        await stream.readuntil(b"\n")
                        break
                    except asyncio.LimitOverrunError as more:
                        await stream.readexactly(more.consumed)
                    except asyncio.IncompleteReadError:
                        return
                log.warning("a log line over 5 MB was dropped", extra={"api": api})
                continue
            await self._ship_checked(api, raw, level, pid, labels)

    async def _ship_checked(self, api: str, raw: bytes, level: str, pid: int, labels: Mapping[str, str]) -> None:
        if len(raw) > MAX_LINE_BYTES:
            log.warning("a log line over 5 MB was dropped", extra={"api": api})
            return
        await self.ship(api, wrap_line(raw, level, pid, labels))


READER_LIMIT = MAX_LINE_BYTES + 64 * 1024
"""Buffer of the pipes from a handler process: one line up to the 5 MB limit fits."""
