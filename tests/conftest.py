"""Fixtures: one real mesh (NATS, services, Envoy) per test session, and per-test APIs deployed on it."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from cortado.client import Client, SchedulerClient
from cortado.mesh import LocalMesh
from tests.helpers import open_temp_folders_to_handlers, unique_name, write_project
from tests.meshcalls import MESH_ENV, Deploy, wait_ready


def pytest_configure(config: pytest.Config) -> None:
    """Temporary folders of this session's own, in a root no other session touches.

    pytest closes its shared root (`pytest-of-<user>`) to other users whenever a session starts: with a
    second session on the machine, handlers of this one would lose their way to its folders. Every folder
    tmp_path_factory makes is open to handlers running as their API's own user (see open_temp_folders_to_handlers).
    """
    open_temp_folders_to_handlers()
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
