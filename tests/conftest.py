"""Fixtures: one real mesh (NATS, services, Envoy) per test session, and per-test APIs deployed on it."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from cortado.client import Client, SchedulerClient
from cortado.mesh import LocalMesh
from cortado.v1 import control_pb2
from tests.helpers import eventually, open_to_handlers, unique_name, write_project

# Handlers run as their API's own unprivileged user when the suite runs as root, and tests watch them through
# files in temporary folders: those folders (and the files tests create in them) must be theirs to use too.
_mktemp = pytest.TempPathFactory.mktemp


def _mktemp_open_to_handlers(self: pytest.TempPathFactory, basename: str, numbered: bool = True) -> Path:
    path = _mktemp(self, basename, numbered)
    open_to_handlers(path)
    return path


pytest.TempPathFactory.mktemp = _mktemp_open_to_handlers  # type: ignore[method-assign]
os.umask(0)


def pytest_configure(config: pytest.Config) -> None:
    """Temporary folders of this session's own, in a root no other session touches.

    pytest closes its shared root (`pytest-of-<user>`) to other users whenever a session starts: with a
    second session on the machine, handlers of this one would lose their way to its folders.
    """
    if config.option.basetemp is None:
        config.option.basetemp = str(Path(tempfile.gettempdir()) / f"cortado-tests-{os.getpid()}")


TESTS = Path(__file__).resolve().parent
FOLDER_MARKERS = ("unit", "integration", "e2e", "reliability", "browser", "cluster", "deploy")
"""Each folder of tests/ is a marker its tests carry (`pytest -m unit` runs the tests that start no process)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with its folder's name (see FOLDER_MARKERS)."""
    for item in items:
        folder = item.path.resolve().relative_to(TESTS).parts[0]
        if folder in FOLDER_MARKERS:
            item.add_marker(folder)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the session's temporary folders when every test passed (a failure's logs stay for reading)."""
    if exitstatus == 0 and session.config.option.basetemp:
        shutil.rmtree(session.config.option.basetemp, ignore_errors=True)


# Tests deploy many small APIs on the one executor: let it host them all.
MESH_ENV = {
    "CORTADO_EXECUTOR_CPU_MILLIS": "1000000",
    "CORTADO_GRACE_SECONDS": "5",
    "CORTADO_CANCEL_GRACE_SECONDS": "1",
    # The console links each request to Jaeger there (no Jaeger runs: the links are only checked).
    "CORTADO_CONSOLE_TRACES_URL": "http://jaeger.test:16686",
}


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    """The session's mesh: real nats-server, scheduler, ingest, results, one executor and Envoy on free ports."""
    with LocalMesh(tmp_path_factory.mktemp("mesh"), env=MESH_ENV) as running:
        yield running


@pytest.fixture(scope="session")
def scheduler(mesh: LocalMesh) -> Iterator[SchedulerClient]:
    """A control-plane client of the session's scheduler."""
    with SchedulerClient(mesh.scheduler_address) as client:
        yield client


@pytest.fixture(scope="session")
def http(mesh: LocalMesh) -> Iterator[httpx.Client]:
    """An HTTP client of the public API, through Envoy."""
    with httpx.Client(base_url=mesh.http_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="session")
def grpc_client(mesh: LocalMesh) -> Iterator[Client]:
    """A gRPC client of the public API, through Envoy."""
    with Client(mesh.grpc_address) as client:
        yield client


def wait_ready(scheduler: SchedulerClient, name: str, timeout: float = 60.0) -> control_pb2.ApiStatus:
    """Wait until the API has a ready replica; fail at once if it failed to start."""

    def ready() -> control_pb2.ApiStatus | None:
        status = scheduler.describe(name)
        assert status.state != control_pb2.API_STATE_FAILED, status.message
        return status if status.ready_replicas else None

    return eventually(ready, timeout, what=f"API {name} ready")


Deploy = Callable[..., str]


@pytest.fixture
def deploy(scheduler: SchedulerClient, tmp_path: Path) -> Iterator[Deploy]:
    """deploy(handler_source, api={...}, files={...}, wait=True) -> a new API's unique name, deleted after the test."""
    created: list[str] = []

    def _deploy(
        handler_source: str,
        api: dict[str, Any] | None = None,
        files: dict[str, str | bytes] | None = None,
        wait: bool = True,
        name: str | None = None,
    ) -> str:
        name = name or unique_name()
        project = write_project(tmp_path, name, handler_source, api, files)
        scheduler.deploy(project)
        created.append(name)
        if wait:
            wait_ready(scheduler, name)
        return name

    yield _deploy
    for name in created:
        with contextlib.suppress(grpc.RpcError):
            scheduler.delete(name, force=True)


def submit(http: httpx.Client, api: str, **request: Any) -> str:
    """POST a request through Envoy and return its id (the answer must be 200)."""
    reply = http.post(f"/{api}", **request)
    assert reply.status_code == 200, reply.text
    return str(reply.json()["id"])


def result(http: httpx.Client, api: str, request_id: str, wait: float = 30) -> dict[str, Any]:
    """The final state of a request through Envoy, waiting with ?wait= until it finishes."""

    def final() -> dict[str, Any] | None:
        reply = http.get(f"/{api}/{request_id}", params={"wait": wait})
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        return body if body["status"] in ("completed", "failed", "cancelled") else None

    return eventually(final, timeout=wait * 2, what=f"request {request_id} finished")


def fill_queue(
    http: httpx.Client, scheduler: SchedulerClient, api: str, hold: Callable[[], Any], max_length: int
) -> list[str]:
    """Fill the queue of an API whose one replica runs one request at a time: submit hold() payloads until its
    replica holds two (one running, one fetched ahead) and max_length more wait, so the next submit finds the
    queue full (queue.max_length counts only requests not yet delivered). Their ids, in order."""
    ids = [submit(http, api, json=hold())]
    eventually(lambda: scheduler.describe(api).in_flight == 1, what=f"the first request of {api} taken")
    ids.append(submit(http, api, json=hold()))

    def held_ahead() -> bool:
        status = scheduler.describe(api)
        return (status.in_flight, status.queued) == (2, 0)

    eventually(held_ahead, what=f"a second request of {api} fetched ahead")
    ids += [submit(http, api, json=hold()) for _ in range(max_length)]
    assert scheduler.describe(api).queued == max_length
    return ids
