"""Placing API replicas on executors: pure logic, no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cortado.v1 import control_pb2


@dataclass
class _Capacity:
    free_gpus: list[int]
    free_cpu_millis: int
    free_mem_bytes: int
    replicas: int = 0

    def fits(self, compute: control_pb2.Compute) -> bool:
        return (
            len(self.free_gpus) >= compute.gpu
            and self.free_cpu_millis >= compute.cpu_millis
            and (compute.mem_bytes == 0 or self.free_mem_bytes >= compute.mem_bytes)
        )

    def take(self, compute: control_pb2.Compute) -> list[int]:
        gpus = self.free_gpus[: compute.gpu]
        del self.free_gpus[: compute.gpu]
        self.free_cpu_millis -= compute.cpu_millis
        if compute.mem_bytes:
            self.free_mem_bytes -= compute.mem_bytes
        self.replicas += 1
        return gpus


@dataclass
class PlacementPlan:
    """Where every replica goes, and why some could not be placed."""

    placements: dict[str, list[control_pb2.ReplicaPlacement]] = field(default_factory=dict)
    """Executor id -> the replicas it must run."""
    problems: dict[str, str] = field(default_factory=dict)
    """API name -> why some of its replicas have no executor."""


def _describe(compute: control_pb2.Compute) -> str:
    parts = [f"{compute.cpu_millis}m CPU"]
    if compute.mem_bytes:
        parts.append(f"{compute.mem_bytes / 2**20:.0f}Mi memory")
    parts.append(f"{compute.gpu} GPU" + ("s" if compute.gpu != 1 else ""))
    return ", ".join(parts)


def place(
    apis: Mapping[str, control_pb2.ApiSpec],
    desired: Mapping[str, int],
    executors: Mapping[str, control_pb2.ExecutorInfo],
    current: Mapping[str, Sequence[control_pb2.ReplicaPlacement]],
) -> PlacementPlan:
    """Plan which executor runs each wanted replica, never over-committing GPUs, CPU or memory.

    Replicas already placed on a live executor stay there (updated to the API's
    current version); missing ones go to the least-loaded executor that fits.
    """
    capacity = {
        eid: _Capacity(
            free_gpus=sorted(g.index for g in info.gpus),
            free_cpu_millis=info.cpu_millis,
            free_mem_bytes=info.mem_bytes,
        )
        for eid, info in executors.items()
    }
    plan = PlacementPlan(placements={eid: [] for eid in executors})
    placed: dict[str, set[int]] = {name: set() for name in apis}

    for eid in sorted(current):
        if eid not in capacity:
            continue
        for replica in current[eid]:
            spec = apis.get(replica.api)
            if spec is None or replica.replica >= desired.get(replica.api, 0) or replica.replica in placed[replica.api]:
                continue
            cap = capacity[eid]
            kept_gpus = [g for g in replica.gpu_indices if g in cap.free_gpus]
            if len(kept_gpus) != spec.compute.gpu or not cap.fits(spec.compute):
                continue
            for g in kept_gpus:
                cap.free_gpus.remove(g)
            cap.free_cpu_millis -= spec.compute.cpu_millis
            if spec.compute.mem_bytes:
                cap.free_mem_bytes -= spec.compute.mem_bytes
            cap.replicas += 1
            plan.placements[eid].append(
                control_pb2.ReplicaPlacement(
                    api=replica.api, version=spec.version, replica=replica.replica, gpu_indices=kept_gpus
                )
            )
            placed[replica.api].add(replica.replica)

    for name in sorted(apis):
        spec = apis[name]
        for index in range(desired.get(name, 0)):
            if index in placed[name]:
                continue
            fitting = [eid for eid, cap in capacity.items() if cap.fits(spec.compute)]
            if not fitting:
                plan.problems[name] = _unplaceable_reason(spec.compute, capacity)
                break
            eid = min(fitting, key=lambda e: (capacity[e].replicas, e))
            gpus = capacity[eid].take(spec.compute)
            plan.placements[eid].append(
                control_pb2.ReplicaPlacement(api=name, version=spec.version, replica=index, gpu_indices=gpus)
            )
            placed[name].add(index)
    return plan


def _unplaceable_reason(compute: control_pb2.Compute, capacity: Mapping[str, _Capacity]) -> str:
    need = _describe(compute)
    if not capacity:
        return f"no executor is running: a replica needs {need}"
    most_gpus = max(len(c.free_gpus) for c in capacity.values())
    most_cpu = max(c.free_cpu_millis for c in capacity.values())
    return (
        f"no executor has room for a replica needing {need} "
        f"({len(capacity)} executor(s); most free: {most_gpus} GPU(s), {most_cpu}m CPU)"
    )
