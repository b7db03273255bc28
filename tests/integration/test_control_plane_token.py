"""The control plane is not public: a token guards it, and it refuses to listen openly without one."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cortado.cli import main
from cortado.mesh import LocalMesh, MeshError, free_port
from tests.deploy.manifests import ROOT
from tests.meshcalls import MESH_ENV

TOKEN = "s3cret-token-of-32-characters-at-least"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    """A private mesh whose scheduler requires TOKEN, its web console listening beyond loopback (every address)."""
    env = {**MESH_ENV, "CORTADO_SCHEDULER_TOKEN": TOKEN}
    with LocalMesh(tmp_path_factory.mktemp("guarded") / "mesh", env=env, console_address="0.0.0.0") as mesh:
        yield mesh


def test_the_console_beyond_loopback_refuses_calls_without_the_token(guarded: LocalMesh) -> None:
    # Reached by this machine's own name rather than loopback: any host name is answered beyond loopback.
    base = f"http://{socket.gethostname()}:{guarded.ports['console']}"
    header = {"X-Cortado-Console": "1"}
    refused = httpx.get(f"{base}/api/v1/apis", headers=header, timeout=10)
    assert refused.status_code == 401
    assert refused.json()["message"] == "a valid scheduler token is required"
    wrong = httpx.get(f"{base}/api/v1/apis", headers={**header, "Authorization": "Bearer guess"}, timeout=10)
    assert wrong.status_code == 401
    assert httpx.post(f"{base}/api/v1/apis/x:pause", headers=header, json={}, timeout=10).status_code == 401
    allowed = httpx.get(f"{base}/api/v1/apis", headers={**header, "Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert allowed.status_code == 200
    assert allowed.json() == {"apis": []}
    # The page itself holds no data: it loads without the token, then asks for it.
    page = httpx.get(f"{base}/", follow_redirects=True, timeout=10)
    assert page.status_code == 200
    assert "Cortado console" in page.text


def test_the_mesh_refuses_a_console_beyond_loopback_without_a_token(tmp_path: Path) -> None:
    mesh = LocalMesh(tmp_path / "mesh", env=MESH_ENV, console_address="0.0.0.0")
    with pytest.raises(MeshError) as refused:
        mesh.start()
    assert str(refused.value) == (
        "the console would listen on 0.0.0.0, beyond loopback: set CORTADO_SCHEDULER_TOKEN (at least 32 "
        "characters), which the console then asks for, or keep it on 127.0.0.1"
    )
    assert not mesh.processes


def test_a_call_without_the_token_is_refused_with_a_clear_error(
    guarded: LocalMesh, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CORTADO_HOME", str(tmp_path))
    monkeypatch.delenv("CORTADO_SCHEDULER_TOKEN", raising=False)
    assert main(["get", "--scheduler", guarded.scheduler_address]) == 1
    err = capsys.readouterr().err
    assert "error: a valid scheduler token is required: set CORTADO_SCHEDULER_TOKEN" in err


def test_a_wrong_token_is_refused(
    guarded: LocalMesh, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CORTADO_HOME", str(tmp_path))
    monkeypatch.setenv("CORTADO_SCHEDULER_TOKEN", "guess")
    assert main(["get", "--scheduler", guarded.scheduler_address]) == 1
    assert "a valid scheduler token is required" in capsys.readouterr().err


def test_the_token_from_the_environment_or_the_token_file_is_accepted(
    guarded: LocalMesh, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CORTADO_HOME", str(tmp_path))
    monkeypatch.setenv("CORTADO_SCHEDULER_TOKEN", TOKEN)
    assert main(["get", "-o", "json", "--scheduler", guarded.scheduler_address]) == 0
    assert json.loads(capsys.readouterr().out) == []
    monkeypatch.delenv("CORTADO_SCHEDULER_TOKEN")
    (tmp_path / "token").write_text(TOKEN + "\n")
    assert main(["get", "-o", "json", "--scheduler", guarded.scheduler_address]) == 0


def test_the_public_port_serves_no_control_plane_call(guarded: LocalMesh) -> None:
    import httpx

    for path in ("/cortado.v1.Scheduler/Deploy", "/cortado.v1.Scheduler/DeleteApi"):
        reply = httpx.post(guarded.http_url + path, headers={"content-type": "application/grpc"}, content=b"")
        assert reply.headers.get("grpc-status") != "0"
        assert "cortado.v1.Scheduler" not in reply.text


def test_a_scheduler_listening_beyond_loopback_without_a_token_refuses_to_start() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORTADO_")}
    env |= {"CORTADO_SCHEDULER_ADDRESS": f"0.0.0.0:{free_port()}", "CORTADO_NATS_URL": "nats://127.0.0.1:1"}
    run = subprocess.run(
        [sys.executable, "-m", "services.scheduler"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2
    message = json.loads(run.stderr.strip().splitlines()[-1])["message"]
    assert "not a loopback address: set CORTADO_SCHEDULER_TOKEN" in message


@pytest.mark.parametrize("source", ["environment", "file"])
def test_a_scheduler_token_shorter_than_32_characters_stops_the_scheduler_at_start(source: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORTADO_")}
    env |= {"CORTADO_SCHEDULER_ADDRESS": f"127.0.0.1:{free_port()}", "CORTADO_NATS_URL": "nats://127.0.0.1:1"}
    if source == "file":
        (tmp_path / "token").write_text("local-compose-token\n")
        env["CORTADO_SCHEDULER_TOKEN_FILE"] = str(tmp_path / "token")
        setting = "CORTADO_SCHEDULER_TOKEN_FILE"
    else:
        env["CORTADO_SCHEDULER_TOKEN"] = "local-compose-token"
        setting = "CORTADO_SCHEDULER_TOKEN"
    run = subprocess.run(
        [sys.executable, "-m", "services.scheduler"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2
    message = json.loads(run.stderr.strip().splitlines()[-1])["message"]
    assert message == (
        f"invalid setting: {setting}: the scheduler token has 19 characters; use at least 32 "
        "(for example `openssl rand -hex 32`)"
    )
