"""How long-lived parts start and stop: one shape for each kind, composed with an AsyncExitStack.

A part that runs beside the caller (a KV mirror, the record waiters, the API-key gate and key store, the webhook
sender, a pull feed, an executor's replica) is a `Component`: `await start()` returns once it works, and `await
stop()` releases what it holds. A service enters its components into one `AsyncExitStack`
(`cortado._service.ServiceRunner.enter`), which stops them in the reverse order once the gRPC server has
stopped; a part that holds components of its own (a dispatcher and its pull feeds) starts and stops them the
same way.

A part that is a loop has `run()`. The service's own loops (the scheduler's reconciler, lease and sampler,
the executor's supervisor) run as tasks the runner cancels when the service stops
(`ServiceRunner.background`), after which a final step it deferred runs (the lease released, the
supervisor's replicas drained). A loop that must end its work first instead of being cut short (a
dispatcher, the handler process's worker) has `stop()`, after which `run()` returns once its work is handed
back.

`wait_any` is the one way a loop sleeps until the first of several events, or a timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Protocol


class Component(Protocol):
    """Something started once and stopped once: `start()` then `stop()`, or `async with`."""

    async def start(self) -> None:
        """Return once the component works."""

    async def stop(self) -> None:
        """Release what the component holds; it is not used afterwards."""


async def wait_any(events: Iterable[asyncio.Event], timeout: float | None) -> bool:
    """Wait until one of `events` is set, or `timeout` seconds pass; whether one was set.

    The events are not cleared: the caller clears those it has handled.
    """
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    if not waits:
        await asyncio.sleep(timeout or 0)
        return False
    try:
        done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    return bool(done)
