"""Leadership among schedulers: a lease held in a NATS KV bucket, so only one places and scales at a time."""

from __future__ import annotations

import asyncio
import logging

from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError

from cortado import _names, _nats

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
        """Acquire and renew until cancelled.

        A holder steps down half a TTL after its last successful renewal at the latest: each renewal is
        bounded by that deadline, so a NATS server that stops answering cannot keep it leading while a
        standby (which waits for the key to expire, a whole TTL) takes over.
        """
        await _nats.key_value(self._js, _names.LEASES_BUCKET, history=1, ttl=self._ttl)
        loop = asyncio.get_running_loop()
        renewed_at = 0.0
        while True:
            leading = self.leading.is_set()
            budget = (renewed_at + self._ttl / 2 - loop.time()) if leading else self._ttl / 3
            try:
                revision = await asyncio.wait_for(
                    _nats.kv_put_if(
                        self._js,
                        _names.LEASES_BUCKET,
                        LEASE_KEY,
                        self.holder.encode(),
                        self._revision if leading else 0,
                    ),
                    timeout=max(budget, 0.05),
                )
                self._revision = revision
                renewed_at = loop.time()
                if not leading:
                    self.leading.set()
                    log.info("leading", extra={"holder": self.holder})
            except KeyWrongLastSequenceError:
                if leading:
                    self._step_down("another scheduler holds the lease")
            except Exception as exc:
                if leading and loop.time() - renewed_at >= self._ttl / 2:
                    self._step_down(f"the lease could not be renewed: {exc!r}")
            await asyncio.sleep(self._ttl / 3 if self.leading.is_set() else self._ttl / 6)

    async def release(self) -> None:
        """Give the lease up (an orderly stop), so a standby takes over at once."""
        if not self.leading.is_set():
            return
        self.leading.clear()
        try:
            kv = await self._js.key_value(_names.LEASES_BUCKET)
            await kv.delete(LEASE_KEY, last=self._revision)
        except Exception:
            log.warning("lease not released; it expires on its own", exc_info=True)

    def _step_down(self, why: str) -> None:
        self.leading.clear()
        self._revision = 0
        log.warning("standing by", extra={"holder": self.holder, "why": why})
