"""Keeps every executor's placements in line with the registry and the pool."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.kv import KeyValue

from cortado import _metrics, _names
from cortado._lifecycle import wait_any
from cortado._mirror import KvMirror
from cortado.v1 import control_pb2
from services.scheduler.autoscaler import Autoscaler
from services.scheduler.kube import KubeServices
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
        autoscale_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        nc: Client | None = None,
        services: KubeServices | None = None,
    ) -> None:
        self._nc = nc
        self._services = services
        self._sleepers: dict[str, Subscription] = {}
        self._queue_depth = queue_depth
        self._autoscaler = Autoscaler()
        self._autoscale_period = autoscale_seconds
        self._clock = clock
        self._next_evaluation = 0.0
        self._replicas: dict[str, int] = {}
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
        """Replicas the API should have: what the autoscaler decided, init_replicas before its first decision."""
        if spec.name not in self._replicas:
            placed = sum(1 for _, p in self._placements.items() for r in p.replicas if r.api == spec.name)
            # After a scheduler restart, carry on from what is placed rather than from init_replicas.
            self._replicas[spec.name] = placed or int(spec.autoscaling.init_replicas)
        return self._replicas[spec.name]

    def wake_api(self, name: str) -> bool:
        """Scale an API at zero replicas to its first replica now (work arrived); whether it did."""
        spec = self._apis.get(name)
        if spec is None or self.desired_replicas(spec) != 0:
            return False
        replicas = self._autoscaler.wake(name, spec.autoscaling, 0, self._clock()) or max(
            1, spec.autoscaling.min_replicas
        )
        self._scale(name, 0, replicas, "a request arrived while the API had no replica")
        self.wake()
        return True

    def _scale(self, name: str, current: int, desired: int, reason: str) -> None:
        self._replicas[name] = desired
        direction = "up" if desired > current else "down"
        _metrics.SCALING_DECISIONS.labels(name, direction).inc()
        log.info(
            "scaling",
            extra={"api": name, "from_replicas": current, "to_replicas": desired, "reason": reason},
        )

    def autoscale(self, depths: dict[str, tuple[int, int]]) -> None:
        """Feed the samples to the autoscaler; evaluate every autoscale period; wake APIs at zero at once."""
        now = self._clock()
        evaluate = now >= self._next_evaluation
        if evaluate:
            self._next_evaluation = now + self._autoscale_period
        for name, spec in self._apis.items():
            if name not in depths:
                continue
            queued, in_flight = depths[name]
            self._autoscaler.observe(name, now, queued, in_flight)
            current = self.desired_replicas(spec)
            if current == 0:
                woken = self._autoscaler.wake(name, spec.autoscaling, current, now)
                if woken:
                    self._scale(name, current, woken, "work is waiting and the API has no replica")
                    continue
            if evaluate:
                decision = self._autoscaler.evaluate(name, spec.autoscaling, current, now)
                if decision.changed:
                    self._scale(name, current, decision.desired, decision.reason)
        for gone in set(self._replicas) - {name for name, _ in self._apis.items()}:
            del self._replicas[gone]
            self._autoscaler.forget(gone)

    async def run(self, leading: asyncio.Event | None = None) -> None:
        """Reconcile until cancelled; with leading, only while that event is set (this scheduler holds the lease)."""
        for mirror in (self._apis, self._executors, self._placements):
            mirror.changed.clear()
        while True:
            if leading is not None and not leading.is_set():
                # A standby keeps no autoscaling history: the leader's decisions count.
                self._replicas.clear()
                await leading.wait()
            try:
                await self.reconcile_once()
            except Exception:
                log.exception("reconcile failed")
            await wait_any((self._apis.changed, self._executors.changed, self._wake), self._period)
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
            _metrics.QUEUE_LENGTH.labels(name).set(depths[name][0])
            _metrics.IN_FLIGHT.labels(name).set(depths[name][1])
        return depths

    async def reconcile_once(self) -> None:
        """Compute the plan and write the placements that changed."""
        self.autoscale(await self.sample_queues())
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
            _metrics.REPLICAS.labels(name, "desired").set(desired[name])
            _metrics.REPLICAS.labels(name, "ready").set(ready.get(name, 0))
        for gone in self._published - set(apis):
            for metric in (_metrics.REPLICAS,):
                for state in ("desired", "ready"):
                    with contextlib.suppress(KeyError):
                        metric.remove(gone, state)
            for gauge in (_metrics.QUEUE_LENGTH, _metrics.IN_FLIGHT):
                with contextlib.suppress(KeyError):
                    gauge.remove(gone)
            for priority in _names.PRIORITIES:
                with contextlib.suppress(KeyError):
                    _metrics.QUEUE_BY_PRIORITY.remove(gone, _names.priority_name(priority))
        self._published = set(apis)
        if self._services is not None:
            try:
                await self._services.sync(set(apis))
            except Exception:
                log.warning("api-<name> Services not in sync", exc_info=True)
        await self._watch_sleepers({name for name in apis if desired[name] == 0})

    async def _watch_sleepers(self, sleeping: set[str]) -> None:
        """Listen for the first request of every API at zero replicas, to wake it without waiting for a tick."""
        if self._nc is None:
            return
        for name in set(self._sleepers) - sleeping:
            with contextlib.suppress(Exception):
                await self._sleepers.pop(name).unsubscribe()
        for name in sleeping - set(self._sleepers):

            async def arrived(msg: Msg, name: str = name) -> None:
                self.wake_api(name)

            self._sleepers[name] = await self._nc.subscribe(_names.work_subjects(name), cb=arrived)
