"""Autoscaling end to end: scale-to-zero and waking on the first request, and scaling down that drains."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cortado.client import SchedulerClient
from cortado.mesh import LocalMesh
from tests.helpers import eventually, write_project
from tests.meshcalls import MESH_ENV, result, submit

SLOW = """
import time


class Handler:
    def handle_async(self, payload):
        time.sleep(payload.get("seconds", 0))
        return {"ok": True}
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    """A private mesh whose autoscaler evaluates once an hour: only the wake path can start a replica."""
    env = {**MESH_ENV, "CORTADO_AUTOSCALE_SECONDS": "3600"}
    with LocalMesh(tmp_path_factory.mktemp("autoscale") / "mesh", env=env) as running:
        yield running


def test_an_api_at_zero_replicas_wakes_on_its_first_request(mesh: LocalMesh, tmp_path: Path) -> None:
    api = {"autoscaling": {"min_replicas": 0, "init_replicas": 0}}
    with SchedulerClient(mesh.scheduler_address) as scheduler, httpx.Client(base_url=mesh.http_url) as http:
        scheduler.deploy(write_project(tmp_path, "sleepy", SLOW, api))
        status = scheduler.describe("sleepy")
        assert (status.desired_replicas, status.ready_replicas) == (0, 0)
        request_id = submit(http, "sleepy", json={})
        # result() gives up after a minute: the periodic evaluation alone would take an hour.
        assert result(http, "sleepy", request_id)["status"] == "completed"
        assert scheduler.describe("sleepy").desired_replicas == 1


def test_scaling_down_drains_the_replica_and_loses_nothing(tmp_path: Path) -> None:
    env = {**MESH_ENV, "CORTADO_AUTOSCALE_SECONDS": "1"}
    autoscaling = {
        "min_replicas": 0,
        "init_replicas": 1,
        "window": "10s",
        "downscale_stabilization_period": "0s",
        "upscale_stabilization_period": "0s",
    }
    with (
        LocalMesh(tmp_path / "mesh", env=env) as mesh,
        SchedulerClient(mesh.scheduler_address) as scheduler,
        httpx.Client(base_url=mesh.http_url, timeout=60) as http,
    ):
        scheduler.deploy(write_project(tmp_path, "drainer", SLOW, {"autoscaling": autoscaling}))
        ids = [submit(http, "drainer", json={"seconds": 0.5}) for _ in range(4)]
        for request_id in ids:
            assert result(http, "drainer", request_id)["status"] == "completed"
        # Idle: the window empties and the API goes to zero; its replica stops.
        eventually(lambda: scheduler.describe("drainer").desired_replicas == 0, 60, interval=0.5)
        eventually(lambda: scheduler.describe("drainer").ready_replicas == 0, 60, interval=0.5)
        # And wakes again for new work; every result is still there.
        again = submit(http, "drainer", json={})
        assert result(http, "drainer", again)["status"] == "completed"
        for request_id in ids:
            assert http.get(f"/drainer/{request_id}").json()["status"] == "completed"
        decisions = httpx.get(f"http://{mesh.address('scheduler-metrics')}/metrics").text
        assert 'cortado_scaling_decisions_total{api="drainer",direction="down"}' in decisions
        logged = mesh.processes["scheduler"].log_path.read_text()
        assert '"message": "scaling"' in logged and '"to_replicas": 0' in logged


def test_load_scales_an_api_up_to_its_max_replicas(tmp_path: Path) -> None:
    env = {**MESH_ENV, "CORTADO_AUTOSCALE_SECONDS": "1"}
    autoscaling = {
        "min_replicas": 1,
        "max_replicas": 3,
        "target_in_flight": 1,
        "window": "10s",
        "upscale_stabilization_period": "0s",
        "max_upscale_factor": 3,
    }
    with (
        LocalMesh(tmp_path / "mesh", env=env) as mesh,
        SchedulerClient(mesh.scheduler_address) as scheduler,
        httpx.Client(base_url=mesh.http_url, timeout=60) as http,
    ):
        scheduler.deploy(write_project(tmp_path, "busy", SLOW, {"autoscaling": autoscaling}))
        ids = [submit(http, "busy", json={"seconds": 1}) for _ in range(12)]
        eventually(lambda: scheduler.describe("busy").ready_replicas == 3, 60, interval=0.5)
        for request_id in ids:
            assert result(http, "busy", request_id)["status"] == "completed"
