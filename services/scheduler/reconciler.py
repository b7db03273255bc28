"""Keeps every executor's placements in line with the registry and the pool."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from nats.js.kv import KeyValue

from cortado import metrics
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
        queue_depth: Callable[[str], Awaitable[tuple[int, int]]],
    ) -> None:
        self._queue_depth = queue_depth
        self._apis = apis
        self._executors = executors
        self._placements = placements
        self._placements_kv = placements_kv
        self._period = period_seconds
        self._wake = asyncio.Event()
        self._published: set[str] = set()
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

    async def sample_queues(self) -> dict[str, tuple[int, int]]:
        """(queued, in flight) of every API, also published as gauges."""
        depths: dict[str, tuple[int, int]] = {}
        for name, _ in self._apis.items():
            try:
                depths[name] = await self._queue_depth(name)
            except Exception:
                log.warning("queue depth unavailable", extra={"api": name}, exc_info=True)
                continue
            metrics.QUEUE_LENGTH.labels(name).set(depths[name][0])
            metrics.IN_FLIGHT.labels(name).set(depths[name][1])
        return depths

    async def reconcile_once(self) -> None:
        """Compute the plan and write the placements that changed."""
        await self.sample_queues()
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
        ready: dict[str, int] = {}
        for info in executors.values():
            for replica in info.replicas:
                if replica.state == control_pb2.REPLICA_STATE_READY:
                    ready[replica.api] = ready.get(replica.api, 0) + 1
        for name in apis:
            metrics.REPLICAS.labels(name, "desired").set(desired[name])
            metrics.REPLICAS.labels(name, "ready").set(ready.get(name, 0))
        for gone in self._published - set(apis):
            for metric in (metrics.REPLICAS,):
                for state in ("desired", "ready"):
                    with contextlib.suppress(KeyError):
                        metric.remove(gone, state)
            for gauge in (metrics.QUEUE_LENGTH, metrics.IN_FLIGHT):
                with contextlib.suppress(KeyError):
                    gauge.remove(gone)
        self._published = set(apis)
