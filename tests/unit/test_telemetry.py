"""gRPC server metrics: label values stay bounded whatever method names callers make up."""

from __future__ import annotations

import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from cortado._auth import TokenInterceptor
from cortado._service import ServiceRunner
from cortado._telemetry import UNKNOWN_METHOD, served_methods
from cortado.v1 import control_pb2_grpc  # noqa: F401  (loads the Scheduler's descriptors, as the scheduler does)


def handled() -> set[tuple[str, str]]:
    """(method, code) of every cortado_grpc_server_handled_total series of this process."""
    return {
        (sample.labels["method"], sample.labels["code"])
        for metric in REGISTRY.collect()
        if metric.name == "cortado_grpc_server_handled"
        for sample in metric.samples
        if sample.name == "cortado_grpc_server_handled_total"
    }


def test_served_methods_come_from_the_service_descriptors() -> None:
    methods = served_methods(["cortado.v1.Scheduler", "no.such.Service"])
    assert "/cortado.v1.Scheduler/Deploy" in methods and "/cortado.v1.Scheduler/ListApis" in methods
    assert all(method.startswith("/cortado.v1.Scheduler/") for method in methods)


async def test_calls_to_methods_the_service_does_not_serve_are_labelled_unknown() -> None:
    # The scheduler's token check answers every method, made-up ones included, before gRPC could say UNIMPLEMENTED.
    runner = ServiceRunner(
        "test", "127.0.0.1:0", ["cortado.v1.Scheduler"], grace=0, interceptors=[TokenInterceptor("t" * 32)]
    )
    await runner.start()
    made_up = [f"/made.Up{uuid.uuid4().hex}/Method" for _ in range(3)] + ["/cortado.v1.Submission/Submit"]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runner.port}") as channel:
            for method in [*made_up, "/cortado.v1.Scheduler/ListApis"]:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await channel.unary_unary(method)(b"")
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            health = health_pb2_grpc.HealthStub(channel)
            assert (
                await health.Check(health_pb2.HealthCheckRequest())
            ).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await runner.server.stop(0)
    series = handled()
    assert (UNKNOWN_METHOD, "UNAUTHENTICATED") in series
    assert ("/cortado.v1.Scheduler/ListApis", "UNAUTHENTICATED") in series
    assert ("/grpc.health.v1.Health/Check", "OK") in series
    assert not [method for method, _ in series if method in made_up]
