"""Every YAML file under deploy/ passes yamllint with the committed deploy/.yamllint."""

from __future__ import annotations

import subprocess

import pytest

from cortado.mesh import MeshError, find_binary
from tests.deploy.manifests import DEPLOY


def yamllint() -> str:
    try:
        return find_binary("yamllint")
    except MeshError:
        pytest.fail("yamllint is not installed: it is a dev dependency")


def test_yamllint_finds_nothing_under_deploy() -> None:
    done = subprocess.run(
        [yamllint(), "--strict", "-f", "parsable", "-c", str(DEPLOY / ".yamllint"), str(DEPLOY)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_yamllint_covers_the_compose_file_the_manifests_and_the_overlays() -> None:
    done = subprocess.run(
        [yamllint(), "--list-files", "-c", str(DEPLOY / ".yamllint"), str(DEPLOY)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    listed = {line.strip() for line in done.stdout.splitlines()}
    expected = {p for p in (*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml"))}
    assert {str(p) for p in expected} <= listed
    assert str(DEPLOY / "docker-compose.yaml") in listed
    assert str(DEPLOY / "k8s" / "overlays" / "production" / "kustomization.yaml") in listed
