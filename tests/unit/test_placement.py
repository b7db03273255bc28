"""Placement of API replicas on executors, never over-committing a GPU."""

from __future__ import annotations

from cortado.v1 import control_pb2
from services.scheduler.placement import place


def spec(name: str, gpu: int = 0, cpu: int = 200, version: int = 1) -> control_pb2.ApiSpec:
    return control_pb2.ApiSpec(name=name, version=version, compute=control_pb2.Compute(cpu_millis=cpu, gpu=gpu))


def executor(eid: str, gpus: int = 0, cpu: int = 2000) -> control_pb2.ExecutorInfo:
    return control_pb2.ExecutorInfo(id=eid, cpu_millis=cpu, gpus=[control_pb2.GpuInfo(index=i) for i in range(gpus)])


def test_replicas_spread_over_executors_and_get_distinct_gpus() -> None:
    apis = {"a": spec("a", gpu=1)}
    plan = place(apis, {"a": 3}, {"e1": executor("e1", gpus=2), "e2": executor("e2", gpus=1)}, {})
    assigned = [(eid, tuple(r.gpu_indices)) for eid, rs in plan.placements.items() for r in rs]
    assert sorted(assigned) == [("e1", (0,)), ("e1", (1,)), ("e2", (0,))]
    assert plan.problems == {}


def test_a_gpu_is_never_given_to_two_replicas() -> None:
    apis = {"a": spec("a", gpu=1), "b": spec("b", gpu=1)}
    plan = place(apis, {"a": 1, "b": 1}, {"e1": executor("e1", gpus=1)}, {})
    placed = [r.api for r in plan.placements["e1"]]
    assert placed == ["a"]
    assert "b" in plan.problems
    assert "1 GPU" in plan.problems["b"]


def test_an_api_needing_gpus_on_a_cpu_only_pool_says_why() -> None:
    plan = place({"a": spec("a", gpu=2)}, {"a": 1}, {"e1": executor("e1")}, {})
    assert plan.placements == {"e1": []}
    assert plan.problems["a"].startswith("no executor has room for a replica needing 200m CPU, 2 GPUs")


def test_no_executor_at_all_is_reported() -> None:
    plan = place({"a": spec("a")}, {"a": 1}, {}, {})
    assert plan.problems["a"].startswith("no executor is running")


def test_existing_placements_stay_where_they_are() -> None:
    apis = {"a": spec("a", gpu=1)}
    current = {"e2": [control_pb2.ReplicaPlacement(api="a", version=1, replica=0, gpu_indices=[1])]}
    plan = place(apis, {"a": 1}, {"e1": executor("e1", gpus=2), "e2": executor("e2", gpus=2)}, current)
    assert plan.placements["e1"] == []
    assert [tuple(r.gpu_indices) for r in plan.placements["e2"]] == [(1,)]


def test_a_new_version_replaces_the_old_one_in_place() -> None:
    current = {"e1": [control_pb2.ReplicaPlacement(api="a", version=1, replica=0)]}
    plan = place({"a": spec("a", version=2)}, {"a": 1}, {"e1": executor("e1")}, current)
    assert [(r.api, r.version) for r in plan.placements["e1"]] == [("a", 2)]


def test_cpu_is_not_over_committed() -> None:
    plan = place({"a": spec("a", cpu=800)}, {"a": 3}, {"e1": executor("e1", cpu=2000)}, {})
    assert len(plan.placements["e1"]) == 2
    assert "a" in plan.problems


def test_deleted_apis_and_dead_executors_lose_their_placements() -> None:
    current = {
        "gone": [control_pb2.ReplicaPlacement(api="a", version=1, replica=0)],
        "e1": [control_pb2.ReplicaPlacement(api="deleted", version=1, replica=0)],
    }
    plan = place({"a": spec("a")}, {"a": 1}, {"e1": executor("e1")}, current)
    assert [(r.api, r.replica) for r in plan.placements["e1"]] == [("a", 0)]
    assert "gone" not in plan.placements
