"""Shared by the cluster tests: a mesh past one machine, a handler that logs its runs, clients that count requests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from cortado.client import SchedulerClient
from cortado.mesh import LocalMesh, ManagedProcess
from cortado.v1 import control_pb2
from tests.helpers import eventually, unique_name, write_project

# Logs "start <id> <pid> <unix time>" when a run begins and "end ..." just before it returns, and its pid at start-up.
HANDLER = """
    import os
    import time
    from pathlib import Path


    class Handler:
        def __init__(self, config):
            self.runs = Path(config["runs"])
            self.sleep = float(config["sleep"])
            pids = Path(config["pids"])
            pids.mkdir(parents=True, exist_ok=True)
            (pids / str(os.getpid())).touch()

        def log(self, event, request_id):
            with self.runs.open("a") as runs:
                runs.write(f"{event} {request_id} {os.getpid()} {time.time():.6f}\\n")

        def handle_async(self, payload, request_id):
            self.log("start", request_id)
            time.sleep(self.sleep)
            self.log("end", request_id)
            return {"n": payload.get("n")}
"""


@dataclass(frozen=True)
class Run:
    """One logged handler event."""

    event: str
    request_id: str
    pid: int
    at: float
    """Unix time."""


@dataclass
class LoggingApi:
    """A deployed HANDLER API and the files it writes."""

    name: str
    root: Path

    @property
    def runs_file(self) -> Path:
        return self.root / "runs.log"

    def events(self) -> list[Run]:
        """Every logged event, in order (a torn line is skipped)."""
        if not self.runs_file.exists():
            return []
        out = []
        for line in self.runs_file.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4 and parts[0] in ("start", "end") and parts[2].isdigit():
                out.append(Run(parts[0], parts[1], int(parts[2]), float(parts[3])))
        return out

    def starts(self) -> dict[str, list[Run]]:
        """Request id -> the runs of it that began, in order."""
        runs: dict[str, list[Run]] = {}
        for run in self.events():
            if run.event == "start":
                runs.setdefault(run.request_id, []).append(run)
        return runs

    def handler_pids(self) -> list[int]:
        """PIDs of the handler processes started so far (alive or not)."""
        pids = self.root / "pids"
        return [int(p.name) for p in pids.iterdir()] if pids.exists() else []


def deploy_logging_api(
    scheduler: SchedulerClient, root: Path, api: dict[str, Any] | None = None, sleep: float = 0.02
) -> LoggingApi:
    """Deploy HANDLER under a fresh name (its files under root/<name>-files); not waited for."""
    name = unique_name("cl")
    files = root / f"{name}-files"
    files.mkdir(parents=True)
    config = {"runs": str(files / "runs.log"), "pids": str(files / "pids"), "sleep": sleep}
    extra = dict(api or {})
    extra["handler"] = {**extra.get("handler", {}), "config": config}
    scheduler.deploy(write_project(root, name, HANDLER, extra))
    return LoggingApi(name, files)


def wait_ready_replicas(scheduler: SchedulerClient, name: str, replicas: int, timeout: float = 60) -> None:
    """Wait until the API has this many ready replicas; fail at once if it failed."""

    def ready() -> bool:
        status = scheduler.describe(name)
        assert status.state != control_pb2.API_STATE_FAILED, status.message
        return status.ready_replicas >= replicas

    eventually(ready, timeout, interval=0.1, what=f"API {name} has {replicas} ready replicas")


def parent_pid(pid: int) -> int | None:
    """The parent of a live process, None when it is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def is_handler_process(pid: int) -> bool:
    """Whether pid is a live Cortado handler process (and not a PID reused by something else)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return b"services.executor.worker" in cmdline and state != "Z"


def kill_handler_processes(apis: list[LoggingApi]) -> None:
    """SIGKILL what is left of these APIs' handler processes (orphans of a killed executor outlive the mesh)."""
    for api in apis:
        for pid in api.handler_pids():
            if is_handler_process(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def children(pid: int) -> list[int]:
    """PIDs of a process's live children."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and parent_pid(int(entry.name)) == pid:
            out.append(int(entry.name))
    return out


def sigkill_node(process: ManagedProcess) -> list[int]:
    """SIGKILL an executor and its handler processes at once, as a node that dies takes both; their pids."""
    pids = [pid for pid in children(process.pid) if is_handler_process(pid)]
    process.signal(signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert process.popen is not None
    process.popen.wait(10)
    eventually(lambda: not any(is_handler_process(pid) for pid in pids), 10, what=f"{process.name}'s handlers died")
    return pids


def connected_ports(pid: int) -> set[int]:
    """Remote ports of the established TCP connections a process holds on loopback (from /proc)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) > 9 and fields[3] == "01" and fields[9] in inodes:  # 01: ESTABLISHED
            ports.add(int(fields[2].split(":")[1], 16))
    return ports


def sigkill(process: ManagedProcess) -> float:
    """SIGKILL a mesh process and wait until it is gone; the monotonic time it was seen dead."""
    assert process.alive(), f"{process.name} is not running"
    process.signal(signal.SIGKILL)
    assert process.popen is not None
    process.popen.wait(10)
    return time.monotonic()


@dataclass(frozen=True)
class Failure:
    """A refused or failed attempt: which call, when it began (monotonic), and what came back."""

    call: str
    """"post" or "get"."""
    began: float
    what: str


class ClientLoop:
    """Threads that POST {"n": i} to an API through Envoy until stopped, as clients of the contract do.

    A 503, 429 or connection error is retried with the same payload (no id came back); with fetch, each
    thread then reads its request through Envoy (GET ?wait=) until it is completed or failed, retrying
    the same way. `accepted` maps every id answered 200 to its n; `failures` lists every retried attempt.
    """

    def __init__(self, base_url: str, api: str, threads: int = 4, fetch: bool = False) -> None:
        self._base_url = base_url
        self._api = api
        self._fetch = fetch
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._next = 0
        self.accepted: dict[str, int] = {}
        self.fetched: dict[str, dict[str, Any]] = {}
        self.failures: list[Failure] = []
        self.answered: list[tuple[str, float]] = []
        """(call, when it began) of every attempt answered 200."""
        self.unexpected: list[tuple[str, int, str]] = []
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
        assert not self._errors, self._errors
        eventually(lambda: self.count() >= accepted, timeout, what=f"{accepted} requests accepted")

    def succeeded(self, call: str, after: float) -> int:
        """How many attempts of one call that began after a (monotonic) time were answered 200."""
        with self._lock:
            return sum(1 for c, began in self.answered if c == call and began > after)

    def failed(self, call: str, after: float = 0.0) -> list[Failure]:
        """The failed attempts of one call that began after a (monotonic) time."""
        with self._lock:
            return [f for f in self.failures if f.call == call and f.began > after]

    def _run(self) -> None:
        try:
            with httpx.Client(base_url=self._base_url, timeout=60) as http:
                while not self._stop.is_set():
                    with self._lock:
                        self._next += 1
                        n = self._next
                    request_id = self._retrying(self._post, http, n)
                    if request_id is None or not self._fetch:
                        continue
                    body = self._retrying(self._get, http, request_id)
                    if body is not None:
                        with self._lock:
                            self.fetched[request_id] = body
        except BaseException as exc:  # reported by stop()
            self._errors.append(exc)

    def _retrying(self, attempt: Any, *args: Any) -> Any:
        while not self._stop.is_set():
            value = attempt(*args)
            if value is not None:
                return value
            self._stop.wait(0.05)  # a client's back-off before it retries
        return None

    def _call(self, http: httpx.Client, call: str, method: str, url: str, **kwargs: Any) -> httpx.Response | None:
        began = time.monotonic()
        try:
            reply = http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            with self._lock:
                self.failures.append(Failure(call, began, type(exc).__name__))
            return None
        if reply.status_code in (429, 503):
            with self._lock:
                self.failures.append(Failure(call, began, f"{reply.status_code} {reply.text[:200]}"))
            return None
        if reply.status_code != 200:
            self.unexpected.append((call, reply.status_code, reply.text))
            return None
        with self._lock:
            self.answered.append((call, began))
        return reply

    def _post(self, http: httpx.Client, n: int) -> str | None:
        reply = self._call(http, "post", "POST", f"/{self._api}", json={"n": n})
        if reply is None:
            return None
        request_id = str(reply.json()["id"])
        with self._lock:
            self.accepted[request_id] = n
        return request_id

    def _get(self, http: httpx.Client, request_id: str) -> dict[str, Any] | None:
        reply = self._call(http, "get", "GET", f"/{self._api}/{request_id}", params={"wait": 10})
        if reply is None:
            return None
        body: dict[str, Any] = reply.json()
        return body if body["status"] in ("completed", "failed") else None


def final(http: httpx.Client, api: str, request_id: str, timeout: float = 60) -> dict[str, Any]:
    """The request's final state through Envoy, waiting with ?wait= and retrying what a client may retry."""

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


def assert_all_completed(http: httpx.Client, api: str, accepted: dict[str, int]) -> None:
    """Every accepted request ends completed with its own result."""
    wrong = {}
    for request_id, n in list(accepted.items()):
        body = final(http, api, request_id)
        if body["status"] != "completed" or body.get("result") != {"n": n}:
            wrong[request_id] = body
    assert not wrong, f"{len(wrong)} of {len(accepted)} accepted requests did not complete right: {wrong}"


@dataclass(frozen=True)
class LeaseEvent:
    """A scheduler's "leading" or "standing by" log line."""

    instance: str
    pid: int
    message: str
    at: datetime
    """Local time, as the log line says."""
    holder: str


def lease_events(mesh: LocalMesh, instance: str) -> list[LeaseEvent]:
    """The lease events in a scheduler instance's log (all its processes, restarts included), in order."""
    events = []
    for line in mesh.processes[instance].log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("message") in ("leading", "standing by"):
                at = datetime.strptime(record["asctime"], "%Y-%m-%d %H:%M:%S,%f")
                events.append(LeaseEvent(instance, int(record["process"]), record["message"], at, record["holder"]))
    return events


def log_records(process: ManagedProcess, pid: int, message: str) -> list[dict[str, Any]]:
    """The JSON log lines with this message that one process (by pid) of a mesh instance wrote."""
    records = []
    for line in process.log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("process") == pid and record.get("message") == message:
                records.append(record)
    return records


def to_ms(moment: datetime) -> datetime:
    """The moment as a log line's timestamp would say it (milliseconds, truncated)."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@dataclass
class Leadership:
    """Who led when, from the schedulers' logs; deaths the test caused end a process's leadership."""

    mesh: LocalMesh
    deaths: dict[int, datetime] = field(default_factory=dict)
    """pid -> local time the test saw it dead."""

    def events(self) -> list[LeaseEvent]:
        return sorted(
            (e for name in self.mesh.instances("scheduler") for e in lease_events(self.mesh, name)), key=lambda e: e.at
        )

    def terms(self) -> list[tuple[LeaseEvent, datetime]]:
        """Every stretch a scheduler process led: its "leading" line and when it stood by or died (now: still)."""
        terms = []
        events = self.events()
        for i, event in enumerate(events):
            if event.message != "leading":
                continue
            later = [e.at for e in events[i + 1 :] if e.pid == event.pid and e.instance == event.instance]
            end = min([*later, self.deaths.get(event.pid, datetime.max)])
            terms.append((event, end if end != datetime.max else datetime.now()))
        return terms

    def overlaps(self, since: datetime) -> list[str]:
        """Every two terms, one of them going on at or after since, in which two scheduler processes led at once."""
        terms = [(e, end) for e, end in self.terms() if end >= since]
        found = []
        for i, (first, first_end) in enumerate(terms):
            for second, second_end in terms[i + 1 :]:
                if second.pid == first.pid and second.instance == first.instance:
                    continue
                # Log lines say milliseconds, truncated: a term ends no earlier than its last millisecond.
                if second.at < to_ms(first_end) and first.at < to_ms(second_end):
                    found.append(
                        f"{first.instance} (pid {first.pid}) led {first.at} .. {first_end} and "
                        f"{second.instance} (pid {second.pid}) led {second.at} .. {second_end}"
                    )
        return found

    def leaders(self) -> list[str]:
        """The instances whose live process leads now (its last event is "leading")."""
        out = []
        for name in self.mesh.instances("scheduler"):
            process = self.mesh.processes[name]
            if not process.alive():
                continue
            mine = [e for e in lease_events(self.mesh, name) if e.pid == process.pid]
            if mine and mine[-1].message == "leading":
                out.append(name)
        return out
