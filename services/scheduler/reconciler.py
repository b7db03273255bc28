"""Keeps every executor's placements in line with the registry and the pool."""

from __future__ import annotations

import asyncio
import logging

from nats.js.kv import KeyValue

from cortado.mirror import KvMirror
from cortado.v1 import control_pb2
from services.scheduler.placement import place

log = logging.getLogger(__name__)


class Reconciler:
    """Re-plans placements whenever the registry, the pool or the placements change, and on a timer."""

    def __init__(
        self,
        apis: KvMirror[control_pb2.ApiSpec],
        executors: KvMirror[control_pb2.ExecutorInfo],
        placements: KvMirror[control_pb2.ExecutorPlacements],
        placements_kv: KeyValue,
        period_seconds: float,
    ) -> None:
        self._apis = apis
        self._executors = executors
        self._placements = placements
        self._placements_kv = placements_kv
        self._period = period_seconds
        self._wake = asyncio.Event()
        self.problems: dict[str, str] = {}
        """API name -> why some of its replicas have no executor."""

    def wake(self) -> None:
        """Reconcile now rather than at the next tick."""
        self._wake.set()

    def desired_replicas(self, spec: control_pb2.ApiSpec) -> int:
        """Replicas the API should have (its init_replicas until autoscaling adjusts it)."""
        return int(spec.autoscaling.init_replicas)

    async def run(self) -> None:
        """Reconcile until cancelled."""
        for mirror in (self._apis, self._executors, self._placements):
            mirror.changed.clear()
        while True:
            try:
                await self.reconcile_once()
            except Exception:
                log.exception("reconcile failed")
            waits = [asyncio.ensure_future(m.changed.wait()) for m in (self._apis, self._executors)]
            waits.append(asyncio.ensure_future(self._wake.wait()))
            try:
                await asyncio.wait(waits, timeout=self._period, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
            self._apis.changed.clear()
            self._executors.changed.clear()
            self._wake.clear()

    async def reconcile_once(self) -> None:
        """Compute the plan and write the placements that changed."""
        apis = dict(self._apis.items())
        executors = dict(self._executors.items())
        current = {eid: list(p.replicas) for eid, p in self._placements.items()}
        desired = {name: self.desired_replicas(spec) for name, spec in apis.items()}
        plan = place(apis, desired, executors, current)
        self.problems = plan.problems
        for eid, replicas in plan.placements.items():
            wanted = control_pb2.ExecutorPlacements(executor_id=eid, replicas=replicas)
            existing = self._placements.get(eid)
            if existing is None or existing.SerializeToString(deterministic=True) != wanted.SerializeToString(
                deterministic=True
            ):
                await self._placements_kv.put(eid, wanted.SerializeToString())
                log.info(
                    "placements changed",
                    extra={"executor": eid, "replicas": [f"{r.api}#{r.replica}v{r.version}" for r in replicas]},
                )
        for eid in set(current) - set(executors):
            await self._placements_kv.delete(eid)
