"""GPU awareness: each handler process sees exactly the GPUs its API was given (none on a CPU-only pool)."""

from __future__ import annotations

import grpc
import httpx
import pytest

from cortado._gpu import discover_gpus
from cortado.client import SchedulerClient
from cortado.v1 import control_pb2
from tests.helpers import eventually
from tests.meshcalls import Deploy, result, submit

HAS_GPU = bool(discover_gpus())

REPORT_GPUS = """
import os

class Handler:
    def handle_async(self):
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        count = None
        try:
            import pynvml
            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
        except Exception:
            pass
        return {"cuda_visible_devices": visible, "nvml_devices": count}
"""


def test_a_replica_without_gpus_is_shown_none(deploy: Deploy, http: httpx.Client) -> None:
    name = deploy(REPORT_GPUS)
    body = result(http, name, submit(http, name, content=b""))
    assert body["result"]["cuda_visible_devices"] == ""


@pytest.mark.skipif(HAS_GPU, reason="this machine has GPUs: an API asking for one can be placed")
def test_an_api_needing_a_gpu_on_a_cpu_only_pool_says_why(deploy: Deploy, scheduler: SchedulerClient) -> None:
    name = deploy(REPORT_GPUS, api={"compute": {"gpu": 1}}, wait=False)
    status = eventually(lambda: (s := scheduler.describe(name)).state == control_pb2.API_STATE_UNPLACEABLE and s, 20)
    assert "needing 200m CPU, 1 GPU" in status.message


@pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU")
def test_a_replica_given_a_gpu_sees_exactly_that_gpu(deploy: Deploy, http: httpx.Client) -> None:
    name = deploy(REPORT_GPUS, api={"compute": {"gpu": 1}})
    body = result(http, name, submit(http, name, content=b""))
    assert body["result"]["cuda_visible_devices"] == "0"
    assert body["result"]["nvml_devices"] >= 1


@pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU")
def test_the_executor_reports_its_gpus(mesh) -> None:  # type: ignore[no-untyped-def]
    from cortado.v1 import control_pb2_grpc

    with grpc.insecure_channel(mesh.address("executor")) as channel:
        info = control_pb2_grpc.ExecutorStub(channel).GetInfo(control_pb2.GetInfoRequest(), timeout=10).info
    assert len(info.gpus) == len(discover_gpus())
    assert all(g.memory_total > 0 for g in info.gpus)
