"""The scheduler's registry: deploy-time checks, which must neither block the event loop nor change anything."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, cast

import pytest

from cortado.project import ProjectError, pack_project
from services.scheduler import registry as registry_module
from services.scheduler.registry import DeployError, Registry

CONFIG = b"- name: echo\n  kind: AsyncAPI\n  handler: {type: python, path: handler.py}\n"


def offline_registry() -> Registry:
    """A registry without NATS: every test here fails the deployment before it would touch NATS."""
    nothing = cast(Any, None)
    return Registry(nothing, nothing, nothing, nothing, 30.0)


async def test_the_bundle_is_unpacked_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []

    def unpack(data: bytes, dest: Path) -> None:
        threads.append(threading.get_ident())
        raise ProjectError("bundle holds a symbolic link, 'link': only regular files and folders are allowed")

    monkeypatch.setattr(registry_module, "unpack_bundle", unpack)
    with pytest.raises(DeployError) as caught:
        await offline_registry().deploy("cortado.yaml", CONFIG, b"bundle")
    assert str(caught.value) == (
        "the project bundle cannot be read: "
        "bundle holds a symbolic link, 'link': only regular files and folders are allowed"
    )
    assert threads and threads[0] != threading.get_ident()


def bundle_of(project: Path) -> bytes:
    return pack_project(project, "cortado.yaml")


async def test_a_dotenv_setting_cortados_variables_is_refused_at_deploy(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "handler.py").write_text("class Handler:\n    def handle_async(self, payload):\n        return {}\n")
    (project / ".env").write_text("MODEL=small\nCORTADO_NATS_URL=nats://attacker:4222\n")
    with pytest.raises(DeployError) as caught:
        await offline_registry().deploy("cortado.yaml", CONFIG, bundle_of(project))
    assert (
        str(caught.value) == ".env line 2: CORTADO_NATS_URL is refused: variables starting with CORTADO_ are Cortado's"
    )
