"""Shared by the reliability tests: private meshes, a handler that logs every run, and clients that count requests."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from cortado.client import SchedulerClient
from cortado.mesh import LocalMesh
from tests.conftest import MESH_ENV, wait_ready
from tests.helpers import eventually, unique_name, write_project

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


@dataclass
class RecordingApi:
    """A deployed RECORDING_HANDLER API and the files it writes."""

    name: str
    root: Path

    @property
    def runs_file(self) -> Path:
        return self.root / "runs.log"

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    def events(self) -> list[tuple[str, str, int]]:
        """(start|end, request id, pid) for every logged event, in order (a torn last line is skipped)."""
        if not self.runs_file.exists():
            return []
        out = []
        for line in self.runs_file.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] in ("start", "end") and parts[2].isdigit():
                out.append((parts[0], parts[1], int(parts[2])))
        return out

    def starts(self, request_id: str | None = None) -> list[tuple[str, int]]:
        """(request id, pid) of every run that began (of one request, when given)."""
        return [(i, p) for kind, i, p in self.events() if kind == "start" and request_id in (None, i)]

    def ends(self) -> Counter[str]:
        """How many runs of each request id returned from the handler."""
        return Counter(i for kind, i, _ in self.events() if kind == "end")

    def release(self, request_id: str) -> None:
        (self.releases / request_id).touch()

    def handler_pids(self) -> list[int]:
        """PIDs of the handler processes started so far, oldest first (alive or not)."""
        if not self.pids.exists():
            return []
        return sorted(
            (int(p.name) for p in self.pids.iterdir()), key=lambda pid: (self.pids / str(pid)).stat().st_mtime
        )


def deploy_recording(
    scheduler: SchedulerClient, root: Path, api: dict[str, Any] | None = None, wait: bool = True
) -> RecordingApi:
    """Deploy RECORDING_HANDLER under a fresh name, its files under root/<name>-files."""
    name = unique_name("rel")
    files = root / f"{name}-files"
    (files / "releases").mkdir(parents=True)
    config = {"runs": str(files / "runs.log"), "releases": str(files / "releases"), "pids": str(files / "pids")}
    extra = dict(api or {})
    extra["handler"] = {**extra.get("handler", {}), "config": config}
    scheduler.deploy(write_project(root, name, RECORDING_HANDLER, extra))
    if wait:
        wait_ready(scheduler, name)
    return RecordingApi(name, files)


def is_handler_process(pid: int) -> bool:
    """Whether pid is a live Cortado handler process (and not a PID reused by something else)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return b"services.executor.worker" in cmdline and state != "Z"


def kill_handler_processes(apis: list[RecordingApi]) -> None:
    """SIGKILL what is left of these APIs' handler processes (orphans of a killed executor outlive the mesh)."""
    for api in apis:
        for pid in api.handler_pids():
            if is_handler_process(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


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


def final(http: httpx.Client, api: str, request_id: str, timeout: float = 60) -> dict[str, Any]:
    """The request's final state (completed or failed), waiting with ?wait= and retrying while services restart."""

    def check() -> dict[str, Any] | None:
        try:
            reply = http.get(f"/{api}/{request_id}", params={"wait": 10})
        except httpx.TransportError:
            return None
        if reply.status_code == 503:
            return None
        assert reply.status_code == 200, (reply.status_code, reply.text)
        body: dict[str, Any] = reply.json()
        return body if body["status"] in ("completed", "failed") else None

    return eventually(check, timeout=timeout, interval=0.1, what=f"request {request_id} of {api} finished")


def status_of(http: httpx.Client, api: str, request_id: str) -> str:
    reply = http.get(f"/{api}/{request_id}")
    assert reply.status_code == 200, (reply.status_code, reply.text)
    return str(reply.json()["status"])


class ClientLoop:
    """Threads that POST {"n": i} to an API through Envoy until stopped, retrying refused submissions as a client may.

    A 503, 429 or a connection error is retried with the same payload (it got no id); any other answer than 200
    is kept in `unexpected`. `accepted` maps every id answered with a 200 to its n.
    """

    def __init__(self, base_url: str, api: str, threads: int = 3) -> None:
        self._base_url = base_url
        self._api = api
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._next = 0
        self.accepted: dict[str, int] = {}
        self.retried: Counter[str] = Counter()
        self.unexpected: list[tuple[int, str]] = []
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self._errors: list[BaseException] = []

    def __enter__(self) -> ClientLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(120)
        assert not self._errors, self._errors

    def count(self) -> int:
        with self._lock:
            return len(self.accepted)

    def reach(self, accepted: int, timeout: float = 60) -> None:
        """Wait until at least `accepted` submissions were accepted in all."""
        eventually(lambda: self.count() >= accepted, timeout, what=f"{accepted} requests accepted")

    def _take(self) -> int:
        with self._lock:
            self._next += 1
            return self._next

    def _run(self) -> None:
        try:
            with httpx.Client(base_url=self._base_url, timeout=60) as http:
                while not self._stop.is_set():
                    n = self._take()
                    while not self._submit(http, n):
                        if self._stop.wait(0.05):  # a client's back-off before it retries
                            break
        except BaseException as exc:  # reported by stop()
            self._errors.append(exc)

    def _submit(self, http: httpx.Client, n: int) -> bool:
        try:
            reply = http.post(f"/{self._api}", json={"n": n})
        except httpx.TransportError as exc:
            self.retried[type(exc).__name__] += 1
            return False
        if reply.status_code == 200:
            with self._lock:
                self.accepted[reply.json()["id"]] = n
            return True
        if reply.status_code not in (429, 503):
            self.unexpected.append((reply.status_code, reply.text))
        self.retried[str(reply.status_code)] += 1
        return False


def assert_all_completed(http: httpx.Client, api: str, accepted: dict[str, int]) -> None:
    """Every accepted request ends completed with its own result."""
    wrong = {}
    for request_id, n in accepted.items():
        body = final(http, api, request_id)
        if body["status"] != "completed" or body.get("result") != {"n": n}:
            wrong[request_id] = body
    assert not wrong, f"{len(wrong)} of {len(accepted)} accepted requests did not complete right: {wrong}"
