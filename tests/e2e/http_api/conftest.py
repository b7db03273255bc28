"""Fixtures of the HTTP API tests: the test handler deployed once per module, as a main API and a short-lived one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from cortado.client import SchedulerClient
from tests.e2e.http_api.support import HANDLER, Api
from tests.helpers import unique_name, write_project
from tests.meshcalls import wait_ready


@pytest.fixture(scope="module")
def deploy_module(scheduler: SchedulerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """deploy(api={...}) -> Api: the test handler deployed once for the whole module, deleted at its end."""
    created: list[Api] = []

    def _deploy(api: dict[str, Any] | None = None) -> Api:
        root = tmp_path_factory.mktemp("http-api")
        name = unique_name("http")
        releases = root / "releases"
        releases.mkdir()
        deployed = Api(name, root / "calls.log", releases)
        config = {"handler": {"config": {"calls": str(deployed.calls)}}, **(api or {})}
        scheduler.deploy(write_project(root, name, HANDLER, config))
        created.append(deployed)
        wait_ready(scheduler, name)
        return deployed

    yield _deploy
    for deployed in created:
        deployed.release_all()
        with contextlib.suppress(grpc.RpcError):
            scheduler.delete(deployed.name, force=True)


@pytest.fixture(scope="module")
def api(deploy_module: Any) -> Api:
    """The module's main API (one request at a time, results kept 7 days)."""
    deployed: Api = deploy_module()
    return deployed


@pytest.fixture(scope="module")
def short_api(deploy_module: Any) -> Api:
    """A second API whose results expire after 2 s and whose queue holds 2 waiting requests."""
    deployed: Api = deploy_module({"results": {"retention": "2s"}, "queue": {"max_length": 2}})
    return deployed


@pytest.fixture
def held(api: Api) -> Iterator[Api]:
    """The main API, with every request a test held released when the test ends."""
    try:
        yield api
    finally:
        api.release_all()
