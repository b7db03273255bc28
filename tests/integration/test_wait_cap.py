"""Every wait shares one cap, CORTADO_MAX_WAIT_SECONDS: GET ?wait=, POST ?wait=, Prefer: wait= and Submit's wait."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest

from cortado.client import Client, SchedulerClient
from cortado.mesh import LocalMesh
from cortado.v1 import records_pb2
from tests.e2e.http_api.support import HANDLER, Api
from tests.helpers import write_project
from tests.meshcalls import MESH_ENV, result, submit, wait_ready

pytestmark = pytest.mark.integration

CAP = 1.0


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalMesh, Api]]:
    """A private mesh whose waits are capped at one second, with the test handler deployed."""
    root = tmp_path_factory.mktemp("capped")
    env = {**MESH_ENV, "CORTADO_MAX_WAIT_SECONDS": str(CAP)}
    with LocalMesh(root / "mesh", env=env) as mesh, SchedulerClient(mesh.scheduler_address) as scheduler:
        releases = root / "releases"
        releases.mkdir()
        api = Api("capped", root / "calls.log", releases)
        scheduler.deploy(write_project(root, api.name, HANDLER, {"handler": {"config": {"calls": str(api.calls)}}}))
        wait_ready(scheduler, api.name)
        try:
            yield mesh, api
        finally:
            api.release_all()
            with contextlib.suppress(grpc.RpcError):
                scheduler.delete(api.name, force=True)


def timed(call: Any) -> tuple[float, Any]:
    started = time.monotonic()
    value = call()
    return time.monotonic() - started, value


def test_every_form_of_wait_ends_at_the_cap_with_the_current_state(capped: tuple[LocalMesh, Api]) -> None:
    mesh, api = capped
    with httpx.Client(base_url=mesh.http_url, timeout=60) as http, Client(mesh.grpc_address) as client:
        held = submit(http, api.name, json=api.hold())
        try:
            elapsed, posted = timed(lambda: http.post(f"/{api.name}", params={"wait": 30}, json={"n": 1}))
            assert posted.status_code == 200, posted.text
            assert posted.json() == {"id": posted.json()["id"], "status": "in_queue"}
            assert CAP * 0.9 <= elapsed < CAP + 4, elapsed

            elapsed, preferred = timed(lambda: http.post(f"/{api.name}", json={"n": 2}, headers={"Prefer": "wait=30"}))
            assert preferred.json() == {"id": preferred.json()["id"], "status": "in_queue"}, preferred.text
            assert CAP * 0.9 <= elapsed < CAP + 4, elapsed

            elapsed, read = timed(lambda: http.get(f"/{api.name}/{held}", params={"wait": 30}))
            assert read.json() == {"id": held, "status": "in_progress"}, read.text
            assert CAP * 0.9 <= elapsed < CAP + 4, elapsed

            elapsed, view = timed(lambda: client.submit_and_wait(api.name, json.dumps({"n": 3}).encode(), wait=30))
            assert view.status == records_pb2.REQUEST_STATUS_IN_QUEUE, view
            assert CAP * 0.9 <= elapsed < CAP + 4, elapsed

            refused = http.post(f"/{api.name}", params={"wait": "x"}, json={})
            assert refused.status_code == 400
            assert (
                refused.json()["message"]
                == f"?wait= must be a number of seconds (0 or more; waits are capped at {CAP:g}), got 'x'"
            )
        finally:
            api.release_all()
        for request_id in (held, posted.json()["id"], preferred.json()["id"], view.id):
            assert result(http, api.name, request_id, wait=15)["status"] == "completed"
