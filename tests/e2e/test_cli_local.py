"""`cortado up` and `down` for real: a local mesh of its own, started and stopped through the command."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cortado.mesh import free_port
from tests.helpers import eventually, write_project

# --- up and down -----------------------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie nobody reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_up_starts_a_local_mesh_that_get_finds_and_down_stops(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORTADO_")}
    env["CORTADO_HOME"] = str(home)
    port = free_port()

    def cortado(*argv: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cortado.cli", *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    state_file = home / "mesh.json"
    pid: int | None = None

    def mesh_pid() -> int | None:
        with contextlib.suppress(OSError, ValueError, KeyError):
            return int(json.loads(state_file.read_text())["pid"])
        return pid

    try:
        up = cortado("up", "--port", str(port), "--timeout", "180")
        pid = mesh_pid()
        log = home / "mesh.log"
        assert up.returncode == 0, (up.stdout, up.stderr, log.read_text()[-3000:] if log.is_file() else "no mesh.log")
        console = json.loads((home / "mesh.json").read_text())["console_url"]
        assert up.stdout.splitlines() == [
            f"Cortado is serving on http://localhost:{port}",
            f"The web console is at {console}",
        ], up.stdout
        assert console.startswith("http://localhost:")
        assert pid is not None and _alive(pid)

        again = cortado("up", "--port", str(port))
        assert again.returncode == 0, again
        assert "already runs" in again.stderr, again.stderr

        get = cortado("get")  # no flags: the addresses come from $CORTADO_HOME/mesh.json
        assert get.returncode == 0, (get.stdout, get.stderr)
        assert get.stdout.strip() == "no APIs are deployed", get.stdout
        listed = cortado("get", "-o", "json")
        assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed
        project = write_project(tmp_path, "kept", "class Handler:\n    def handle_async(self):\n        return {}\n")
        deployed = cortado("deploy", str(project), "--no-wait")
        assert deployed.returncode == 0, (deployed.stdout, deployed.stderr)

        def down() -> None:
            stopped = cortado("down", "--timeout", "120")
            assert stopped.returncode == 0, (stopped.stdout, stopped.stderr)
            assert "stopped" in stopped.stderr
            assert not state_file.exists()
            gone = pid
            eventually(lambda: gone is None or not _alive(gone), timeout=60, interval=0.2, what=f"mesh {gone} exited")

        down()
        after = cortado("down")
        assert after.returncode == 0 and "no local mesh is running" in after.stderr, after

        # The state folder outlives the mesh (every checkout shares it): the next start says so and lists the API.
        again = cortado("up", "--port", str(port), "--timeout", "180")
        pid = mesh_pid()
        assert again.returncode == 0, (again.stdout, again.stderr)
        assert f"state: {home / 'mesh'}, APIs and requests of earlier runs kept; --fresh starts empty" in again.stderr
        assert [a["name"] for a in json.loads(cortado("get", "-o", "json").stdout)] == ["kept"]
        down()
        # --fresh starts empty.
        fresh = cortado("up", "--port", str(port), "--timeout", "180", "--fresh")
        pid = mesh_pid()
        assert fresh.returncode == 0, (fresh.stdout, fresh.stderr)
        assert f"state: {home / 'mesh'}, cleared first" in fresh.stderr
        assert cortado("get").stdout.strip() == "no APIs are deployed"
        assert f"state: {home / 'mesh'} (fresh: cleared)" in (home / "mesh.log").read_text()
        down()
    finally:
        pid = mesh_pid()
        if pid is not None and _alive(pid):
            # The mesh runs in its own session (process group): stop it and whatever it started.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
