"""Each service as a real process: health, settings, JSON logs and an orderly stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from cortado.client import SchedulerClient
from cortado.mesh import LocalMesh, grpc_serving
from tests.deploy.manifests import ROOT
from tests.helpers import eventually, unique_name, write_project
from tests.meshcalls import MESH_ENV, result, submit, wait_ready

SERVICE_NAMES = {
    "scheduler": "cortado.v1.Scheduler",
    "ingest": "cortado.v1.Submission",
    "results": "cortado.v1.Results",
    "executor": "cortado.v1.Executor",
}


@pytest.mark.parametrize("service", sorted(SERVICE_NAMES))
def test_every_service_answers_grpc_health_serving(mesh: LocalMesh, service: str) -> None:
    assert grpc_serving(mesh.address(service))
    assert grpc_serving(mesh.address(service), SERVICE_NAMES[service])


@pytest.mark.parametrize(
    ("module", "variable", "value", "message"),
    [
        ("ingest", "CORTADO_INLINE_PAYLOAD_BYTES", "-5", "CORTADO_INLINE_PAYLOAD_BYTES must be at least 0, got -5"),
        ("results", "CORTADO_MAX_WAIT_SECONDS", "soon", "CORTADO_MAX_WAIT_SECONDS must be a number, got 'soon'"),
        ("scheduler", "CORTADO_ACK_WAIT_SECONDS", "0", "CORTADO_ACK_WAIT_SECONDS must be at least 1"),
        ("executor", "CORTADO_EXECUTOR_CPU_MILLIS", "lots", "CORTADO_EXECUTOR_CPU_MILLIS must be an integer"),
    ],
)
def test_a_malformed_setting_stops_the_service_with_a_message_naming_it(
    module: str, variable: str, value: str, message: str
) -> None:
    env = {**os.environ, variable: value, "CORTADO_NATS_URL": "nats://127.0.0.1:1"}
    run = subprocess.run(
        [sys.executable, "-m", f"services.{module}"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 2
    line = json.loads(run.stderr.strip().splitlines()[-1])
    assert line["levelname"] == "ERROR"
    assert message in line["message"]


def _json_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("service", ["scheduler", "ingest", "results"])
def test_service_logs_are_json_lines_with_the_standard_keys(mesh: LocalMesh, service: str) -> None:
    lines = _json_lines(mesh.processes[service].log_path)
    assert lines
    for line in lines:
        assert {"asctime", "levelname", "message", "process", "labels"} <= set(line)
        assert line["labels"] == {"service": service}


SLOW_HANDLER = """
import time

class Handler:
    def handle_async(self, payload):
        time.sleep(payload["seconds"])
        return {"slept": payload["seconds"]}
"""


def test_sigterm_drains_each_service_and_in_flight_work_finishes(tmp_path: Path) -> None:
    with LocalMesh(tmp_path / "mesh", env=MESH_ENV) as mesh:
        name = unique_name("drain")
        with SchedulerClient(mesh.scheduler_address) as scheduler:
            scheduler.deploy(write_project(tmp_path, name, SLOW_HANDLER))
            wait_ready(scheduler, name)
        with httpx.Client(base_url=mesh.http_url, timeout=30) as http:
            request_id = submit(http, name, json={"seconds": 2})
            eventually(lambda: http.get(f"/{name}/{request_id}").json()["status"] == "in_progress", 20)

            executor = mesh.processes["executor"]
            executor.signal(signal.SIGTERM)
            assert executor.popen is not None
            assert executor.popen.wait(30) == 0
            body = result(http, name, request_id)
            assert body["status"] == "completed"
            assert body["result"] == {"slept": 2}

        for service in ("ingest", "results", "scheduler"):
            process = mesh.processes[service]
            assert process.stop() == 0
            messages = [line["message"] for line in _json_lines(process.log_path)]
            assert messages[-2:] == ["stopping", "stopped"]
        assert [line["message"] for line in _json_lines(mesh.processes["executor"].log_path)][-1] == "stopped"
