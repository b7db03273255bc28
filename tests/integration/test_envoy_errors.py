"""Envoy's own error answers when a service behind it is down: JSON with a message, and back to normal after."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from cortado.client import SchedulerClient
from cortado.mesh import LocalMesh
from tests.helpers import unique_name, write_project
from tests.meshcalls import MESH_ENV, result, submit, wait_ready

pytestmark = pytest.mark.integration

HANDLER = """
    class Handler:
        def handle_async(self, payload):
            return {"echo": payload}
"""


@dataclass
class Private:
    """A private mesh (its processes may be stopped), an HTTP client of it and a deployed echo API."""

    mesh: LocalMesh
    http: httpx.Client
    api: str


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    root = tmp_path_factory.mktemp("envoy-errors")
    with (
        LocalMesh(root / "mesh", env=MESH_ENV) as mesh,
        SchedulerClient(mesh.scheduler_address) as scheduler,
        httpx.Client(base_url=mesh.http_url, timeout=60) as http,
    ):
        name = unique_name("down")
        scheduler.deploy(write_project(root, name, HANDLER))
        wait_ready(scheduler, name)
        yield Private(mesh, http, name)


def assert_json_error(reply: httpx.Response, code: int) -> str:
    assert reply.status_code == code, (reply.status_code, reply.text)
    assert reply.headers["content-type"].startswith("application/json"), reply.headers
    body = reply.json()
    assert isinstance(body, dict), body
    message = body.get("message")
    assert isinstance(message, str) and " " in message, body
    return message


def test_a_post_while_ingest_is_down_answers_503_json_and_succeeds_once_it_is_back(private: Private) -> None:
    mesh, http, name = private.mesh, private.http, private.api
    before = submit(http, name, json={"n": 1})

    mesh.processes["ingest"].stop()
    message = assert_json_error(http.post(f"/{name}", json={"n": 2}), 503)
    assert "retry" in message.lower(), message
    # Reads do not go through ingest: they keep working.
    assert result(http, name, before)["result"] == {"echo": {"n": 1}}

    mesh.start_service("ingest")
    after = submit(http, name, json={"n": 3})
    assert result(http, name, after)["result"] == {"echo": {"n": 3}}


def test_a_get_while_results_is_down_answers_503_json_and_succeeds_once_it_is_back(private: Private) -> None:
    mesh, http, name = private.mesh, private.http, private.api
    request_id = submit(http, name, json={"n": 1})
    assert result(http, name, request_id)["status"] == "completed"

    mesh.processes["results"].stop()
    assert_json_error(http.get(f"/{name}/{request_id}"), 503)
    # Submissions do not go through results: they keep being accepted.
    queued = submit(http, name, json={"n": 2})

    mesh.start_service("results")
    assert result(http, name, request_id)["result"] == {"echo": {"n": 1}}
    assert result(http, name, queued)["result"] == {"echo": {"n": 2}}
