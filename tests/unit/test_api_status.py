"""The summary state of an API, as `cortado get` and `cortado deploy` show it."""

from __future__ import annotations

from cortado.v1 import control_pb2
from services.scheduler.servicer import IDLE_MESSAGE, api_status

SPEC = control_pb2.ApiSpec(name="sleepy", version=3)


def executor(*states: control_pb2.ReplicaState.ValueType) -> control_pb2.ExecutorInfo:
    return control_pb2.ExecutorInfo(
        id="e",
        replicas=[control_pb2.ReplicaStatus(api="sleepy", version=3, state=s, replica=i) for i, s in enumerate(states)],
    )


def test_an_api_at_zero_replicas_with_nothing_waiting_is_idle_not_starting() -> None:
    status = api_status(SPEC, [executor()], desired=0, problem=None, queued=0, in_flight=0)
    assert status.state == control_pb2.API_STATE_IDLE
    assert status.message == IDLE_MESSAGE == "scaled to zero (min_replicas 0); the first request starts a replica"
    assert (status.desired_replicas, status.ready_replicas) == (0, 0)


def test_an_api_at_zero_with_work_waiting_is_starting() -> None:
    # The reconciler wakes it at once; until the replica is ready it is starting.
    assert api_status(SPEC, [], desired=0, problem=None, queued=1, in_flight=0).state == control_pb2.API_STATE_STARTING
    assert api_status(SPEC, [], desired=0, problem=None, queued=0, in_flight=1).state == control_pb2.API_STATE_STARTING


def test_an_api_asking_for_a_replica_is_starting_until_one_is_ready() -> None:
    starting = api_status(SPEC, [executor(control_pb2.REPLICA_STATE_STARTING)], 1, None, 0, 0)
    assert starting.state == control_pb2.API_STATE_STARTING and not starting.message
    live = api_status(SPEC, [executor(control_pb2.REPLICA_STATE_READY)], 1, None, 0, 0)
    assert live.state == control_pb2.API_STATE_LIVE


def test_a_replica_still_draining_after_scaling_to_zero_keeps_the_api_live() -> None:
    assert (
        api_status(SPEC, [executor(control_pb2.REPLICA_STATE_READY)], 0, None, 0, 0).state == control_pb2.API_STATE_LIVE
    )
