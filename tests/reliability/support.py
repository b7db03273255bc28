"""Shared by the reliability tests: private meshes, and a handler that logs every run (clients: tests.faults)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from cortado.client import SchedulerClient
from cortado.mesh import LocalMesh
from tests.faults import HandlerFiles, deploy_handler, kill_handler_processes, new_handler_files
from tests.meshcalls import MESH_ENV, wait_ready

# Logs "start <id> <pid>" when a run begins and "end <id> <pid>" just before it returns, and its pid at start-up.
# Payload keys: "n" (echoed back), "die" (SIGKILL its own process), "hold" (seconds to wait for the release
# file <releases>/<id> — with "first_only", only on the request's first run), "sleep" (seconds, unconditionally).
RECORDING_HANDLER = """
    import os
    import signal
    import time
    from pathlib import Path


    class Handler:
        def __init__(self, config):
            self.runs = Path(config["runs"])
            self.releases = Path(config["releases"])
            pids = Path(config["pids"])
            pids.mkdir(parents=True, exist_ok=True)
            (pids / str(os.getpid())).touch()

        def log(self, line):
            with self.runs.open("a") as runs:
                runs.write(line + "\\n")

        def handle_async(self, payload, request_id):
            self.log(f"start {request_id} {os.getpid()}")
            if payload.get("die"):
                os.kill(os.getpid(), signal.SIGKILL)
            hold = payload.get("hold")
            if hold and (not payload.get("first_only") or self.runs.read_text().split().count(request_id) == 1):
                release = self.releases / request_id
                deadline = time.monotonic() + hold
                while not release.exists() and time.monotonic() < deadline:
                    time.sleep(0.02)
            if payload.get("sleep"):
                time.sleep(payload["sleep"])
            self.log(f"end {request_id} {os.getpid()}")
            return {"n": payload.get("n")}
"""


class RecordingApi(HandlerFiles):
    """A deployed RECORDING_HANDLER API and the files it writes."""

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    def events(self) -> list[tuple[str, str, int]]:
        """(start|end, request id, pid) for every logged event, in order (a torn last line is skipped)."""
        return [(kind, request_id, int(pid)) for kind, request_id, pid in self.logged(3)]

    def starts(self, request_id: str | None = None) -> list[tuple[str, int]]:
        """(request id, pid) of every run that began (of one request, when given)."""
        return [(i, p) for kind, i, p in self.events() if kind == "start" and request_id in (None, i)]

    def ends(self) -> Counter[str]:
        """How many runs of each request id returned from the handler."""
        return Counter(i for kind, i, _ in self.events() if kind == "end")

    def release(self, request_id: str) -> None:
        (self.releases / request_id).touch()


def deploy_recording(
    scheduler: SchedulerClient, root: Path, api: dict[str, Any] | None = None, wait: bool = True
) -> RecordingApi:
    """Deploy RECORDING_HANDLER under a fresh name, its files under root/<name>-files."""
    deployed = new_handler_files(RecordingApi, root, "rel")
    deployed.releases.mkdir()
    deploy_handler(scheduler, root, deployed, RECORDING_HANDLER, api, releases=str(deployed.releases))
    if wait:
        wait_ready(scheduler, deployed.name)
    return deployed


@dataclass
class Private:
    """A private mesh whose processes the tests may kill, with clients of it."""

    mesh: LocalMesh
    scheduler: SchedulerClient
    http: httpx.Client
    root: Path
    apis: list[RecordingApi] = field(default_factory=list)

    def deploy(self, api: dict[str, Any] | None = None) -> RecordingApi:
        deployed = deploy_recording(self.scheduler, self.root, api)
        self.apis.append(deployed)
        return deployed


@contextlib.contextmanager
def private_mesh(root: Path, **env: str) -> Iterator[Private]:
    """A LocalMesh of its own (MESH_ENV plus env), stopped at the end, with no handler process left behind."""
    created: list[RecordingApi] = []
    try:
        with (
            LocalMesh(root / "mesh", env={**MESH_ENV, **env}) as mesh,
            SchedulerClient(mesh.scheduler_address) as scheduler,
            httpx.Client(base_url=mesh.http_url, timeout=60) as http,
        ):
            private = Private(mesh, scheduler, http, root, created)
            yield private
    finally:
        kill_handler_processes(created)


def status_of(http: httpx.Client, api: str, request_id: str) -> str:
    reply = http.get(f"/{api}/{request_id}")
    assert reply.status_code == 200, (reply.status_code, reply.text)
    return str(reply.json()["status"])
