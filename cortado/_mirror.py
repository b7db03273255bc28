"""A live in-memory copy of a KV bucket, kept current by one watch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

log = logging.getLogger(__name__)

T = TypeVar("T")


class KvMirror(Generic[T]):
    """Mirrors the keys of a bucket (optionally a key filter) as decoded values.

    `start()` returns once the bucket's current content is loaded; afterwards the
    mirror follows every put and delete, calls `on_change(key, value_or_None)`, and
    re-creates its watch if the server drops it.
    """

    def __init__(
        self,
        kv: KeyValue,
        decode: Callable[[bytes], T],
        keys: str = ">",
        on_change: Callable[[str, T | None], None] | None = None,
    ) -> None:
        self._kv = kv
        self._decode = decode
        self._keys = keys
        self._on_change = on_change
        self._values: dict[str, T] = {}
        self._task: asyncio.Task[None] | None = None
        self._loaded = asyncio.Event()
        self.changed = asyncio.Event()
        """Set on every change; a consumer clears it after reading."""

    def get(self, key: str) -> T | None:
        """The current value of key, or None."""
        return self._values.get(key)

    async def wait_for(self, key: str, check: Callable[[T | None], bool], timeout: float = 10.0) -> bool:
        """Wait until check(value of key) holds (after this process's own write, say); whether it did in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not check(self._values.get(key)):
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def items(self) -> list[tuple[str, T]]:
        """Every (key, value) currently in the bucket."""
        return list(self._values.items())

    async def start(self, load_timeout: float = 30.0) -> None:
        """Start following the bucket; return when its current content is loaded."""
        self._task = asyncio.create_task(self._run(), name=f"kv-mirror-{self._keys}")
        await asyncio.wait_for(self._loaded.wait(), load_timeout)

    async def stop(self) -> None:
        """Stop following the bucket."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("kv watch failed; re-creating it", exc_info=True)
                await asyncio.sleep(0.5)

    async def _follow(self) -> None:
        watcher = await self._kv.watch(self._keys, inactive_threshold=24 * 3600)
        try:
            seen: set[str] = set()
            initial = True
            # Iterating yields None once the initial values are delivered, and ends when the watch is stopped.
            async for entry in watcher:
                if entry is None:
                    if initial:
                        # Keys that vanished while the watch was down.
                        for key in set(self._values) - seen:
                            self._apply(key, None)
                        initial = False
                        self._loaded.set()
                    continue
                seen.add(entry.key)
                if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                    self._apply(entry.key, None)
                else:
                    try:
                        self._apply(entry.key, self._decode(entry.value))
                    except Exception:
                        log.exception("undecodable kv entry", extra={"key": entry.key})
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]

    def _apply(self, key: str, value: T | None) -> None:
        if value is None:
            if self._values.pop(key, None) is None:
                return
        else:
            self._values[key] = value
        self.changed.set()
        if self._on_change is not None:
            self._on_change(key, value)


class ApiIndex:
    """Finds a deployed API by its name or by its endpoint (`networking.endpoint`, one path segment)."""

    def __init__(self, apis: KvMirror[Any]) -> None:
        self._apis = apis

    def lookup(self, name: str) -> Any | None:
        """The spec of the API answering at /<name>, or None."""
        spec = self._apis.get(name)
        if spec is not None:
            return spec
        endpoint = "/" + name
        return next((s for _, s in self._apis.items() if s.endpoint == endpoint), None)
