"""Placement end to end: executors reporting (simulated) GPU inventories, and a GPU never given twice."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from cortado.cli import main
from cortado.client import SchedulerClient
from cortado.mesh import LocalMesh
from cortado.v1 import control_pb2
from tests.helpers import eventually, write_project
from tests.meshcalls import MESH_ENV, result, submit

GPU_HANDLER = """
import os


class Handler:
    def handle_async(self):
        return {"cuda_visible_devices": os.environ["CUDA_VISIBLE_DEVICES"], "pid": os.getpid()}
"""


def test_replicas_get_their_own_gpu_and_the_rest_are_refused_with_a_reason(tmp_path: Path, capsys: object) -> None:
    # Two executors ("nodes"), each reporting one GPU: three replicas asking for a GPU each cannot all fit.
    env = {**MESH_ENV, "CORTADO_EXECUTOR_SIMULATED_GPUS": "1"}
    with (
        LocalMesh(tmp_path / "mesh", env=env, executors=2) as mesh,
        SchedulerClient(mesh.scheduler_address) as scheduler,
        httpx.Client(base_url=mesh.http_url, timeout=60) as http,
    ):
        api = {"compute": {"gpu": 1}, "autoscaling": {"min_replicas": 3, "max_replicas": 3}}
        scheduler.deploy(write_project(tmp_path, "gpus", GPU_HANDLER, api))

        def settled() -> control_pb2.ApiStatus | None:
            status = scheduler.describe("gpus")
            return status if status.ready_replicas == 2 and status.message else None

        status = eventually(settled, 60)
        assert status.desired_replicas == 3
        assert "no executor has room for a replica needing 200m CPU, 1 GPU" in status.message
        assert "2 executor(s); most free: 0 GPU(s)" in status.message

        # Each replica sees exactly its executor's one GPU.
        seen = {}
        for _ in range(8):
            body = result(http, "gpus", submit(http, "gpus", content=b""))["result"]
            seen[body["pid"]] = body["cuda_visible_devices"]
        assert set(seen.values()) == {"0"}

        # `cortado get` says why the API is short of replicas.
        assert main(["get", "gpus", "-o", "json", "--scheduler", mesh.scheduler_address]) == 0
        shown = json.loads(capsys.readouterr().out)  # type: ignore[attr-defined]
        assert shown["replicas"] == {"ready": 2, "desired": 3}
        assert "no executor has room" in shown["message"]
