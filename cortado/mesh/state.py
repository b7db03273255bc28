"""Where the local mesh keeps its state: `cortado_home()`, the state file that tells the CLI where a running mesh
listens, and what `--fresh` deletes from a mesh's folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from cortado.mesh.processes import MeshError

if TYPE_CHECKING:
    from cortado.mesh.local import LocalMesh

STATE_FILE = "mesh.json"
"""File in cortado_home() that says where the running local mesh listens (read by the CLI)."""

STATE_ENTRIES = ("jetstream-*", "credentials", "logs", "nats*.conf", "envoy.yaml")
"""What a mesh keeps in its folder: JetStream's stores (APIs, bundles, queues, requests), the NATS passwords,
the logs and the rendered configurations. `--fresh` deletes exactly these, nothing else in the folder."""


def cortado_home() -> Path:
    """Where the local mesh keeps its state and logs: `$CORTADO_HOME`, else `~/.cortado`."""
    return Path(os.environ.get("CORTADO_HOME") or Path.home() / ".cortado")


def read_state(home: Path | None = None) -> dict[str, str] | None:
    """The running local mesh's addresses (from home, else cortado_home()), or None when none runs: no state file,
    an unreadable one, or one whose process is gone."""
    path = (home or cortado_home()) / STATE_FILE
    try:
        state: dict[str, str] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(int(state["pid"]), 0)
    except (KeyError, ValueError, ProcessLookupError, PermissionError):
        return None
    return state


def write_state(home: Path, mesh: LocalMesh) -> Path:
    """Write the state file in home (created when missing) naming this process and where the started mesh
    listens; its path."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / STATE_FILE
    state = {
        "pid": str(os.getpid()),
        "http_url": mesh.http_url.replace("127.0.0.1", "localhost"),
        "grpc_address": mesh.grpc_address,
        "scheduler": mesh.scheduler_address,
        "console_url": mesh.console_url,
        "nats_url": mesh.nats_url,
        "logs": str(mesh.workdir / "logs"),
    }
    path.write_text(json.dumps(state, indent=2) + "\n")
    return path


def clear_state(workdir: Path) -> list[Path]:
    """Delete the mesh's stored state in workdir (STATE_ENTRIES); the paths removed.

    Raises MeshError while a mesh started from this machine's state file runs on workdir.
    """
    running = read_state()
    if running and Path(running.get("logs", "")).parent.resolve() == workdir.resolve():
        raise MeshError(
            f"a local mesh (pid {running['pid']}) runs on {workdir}: stop it first (Ctrl-C, or `cortado down`)"
        )
    removed = []
    for pattern in STATE_ENTRIES:
        for path in sorted(workdir.glob(pattern)):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed
