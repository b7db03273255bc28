"""Leadership among schedulers: a lease held in a NATS KV bucket, so only one places and scales at a time."""

from __future__ import annotations

import asyncio
import logging

from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError

from cortado import names, natsutil

log = logging.getLogger(__name__)

LEASE_KEY = "scheduler"


class Lease:
    """Holds or waits for the scheduler lease.

    The bucket's TTL expires the key unless its holder renews it (every third of the
    TTL, with compare-and-set on its revision); a standby creates the key as soon as
    it is gone. A holder that fails to renew steps down before the TTL could let a
    second scheduler in.
    """

    def __init__(self, js: JetStreamContext, holder: str, ttl_seconds: float) -> None:
        self._js = js
        self.holder = holder
        self._ttl = ttl_seconds
        self._revision = 0
        self.leading = asyncio.Event()
        """Set while this scheduler holds the lease."""
        self._lost_at = 0.0

    async def run(self) -> None:
        """Acquire and renew until cancelled."""
        await natsutil.key_value(self._js, names.LEASES_BUCKET, history=1, ttl=self._ttl)
        loop = asyncio.get_running_loop()
        renewed_at = 0.0
        while True:
            try:
                if self.leading.is_set():
                    self._revision = await natsutil.kv_put_if(
                        self._js, names.LEASES_BUCKET, LEASE_KEY, self.holder.encode(), self._revision
                    )
                else:
                    self._revision = await natsutil.kv_put_if(
                        self._js, names.LEASES_BUCKET, LEASE_KEY, self.holder.encode(), 0
                    )
                    self.leading.set()
                    log.info("leading", extra={"holder": self.holder})
                renewed_at = loop.time()
            except KeyWrongLastSequenceError:
                if self.leading.is_set():
                    self._step_down("another scheduler holds the lease")
            except Exception as exc:
                # NATS unreachable: keep leading only while the lease cannot have expired yet.
                if self.leading.is_set() and loop.time() - renewed_at > self._ttl / 2:
                    self._step_down(f"the lease could not be renewed: {exc!r}")
            await asyncio.sleep(self._ttl / 3)

    async def release(self) -> None:
        """Give the lease up (an orderly stop), so a standby takes over at once."""
        if not self.leading.is_set():
            return
        self.leading.clear()
        try:
            kv = await self._js.key_value(names.LEASES_BUCKET)
            await kv.delete(LEASE_KEY, last=self._revision)
        except Exception:
            log.warning("lease not released; it expires on its own", exc_info=True)

    def _step_down(self, why: str) -> None:
        self.leading.clear()
        self._revision = 0
        log.warning("standing by", extra={"holder": self.holder, "why": why})
