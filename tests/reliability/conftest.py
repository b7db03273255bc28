"""Fixtures of the reliability tests that run on the session's mesh (nothing there is killed)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cortado.client import SchedulerClient
from tests.reliability.support import RecordingApi, deploy_recording

DeployRecording = Callable[..., RecordingApi]


@pytest.fixture
def deploy_recording_api(scheduler: SchedulerClient, tmp_path: Path) -> Iterator[DeployRecording]:
    """deploy_recording_api(api={...}) -> a RecordingApi on the session mesh; deleted after the test."""
    created: list[RecordingApi] = []

    def _deploy(api: dict[str, Any] | None = None) -> RecordingApi:
        deployed = deploy_recording(scheduler, tmp_path, api)
        created.append(deployed)
        return deployed

    yield _deploy
    for deployed in created:
        for request in deployed.starts():
            deployed.release(request[0])
        with contextlib.suppress(grpc.RpcError):
            scheduler.delete(deployed.name, force=True)
