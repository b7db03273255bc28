"""Shared by the cluster tests: a mesh past one machine and a handler that logs its runs (clients: tests.faults)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cortado.client import SchedulerClient
from cortado.mesh import LocalMesh, ManagedProcess
from cortado.v1 import control_pb2
from tests.faults import HandlerFiles, deploy_handler, is_handler_process, new_handler_files
from tests.helpers import eventually

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


class LoggingApi(HandlerFiles):
    """A deployed HANDLER API and the files it writes."""

    def events(self) -> list[Run]:
        """Every logged event, in order (a torn line is skipped)."""
        return [Run(event, request_id, int(pid), float(at)) for event, request_id, pid, at in self.logged(4)]

    def starts(self) -> dict[str, list[Run]]:
        """Request id -> the runs of it that began, in order."""
        runs: dict[str, list[Run]] = {}
        for run in self.events():
            if run.event == "start":
                runs.setdefault(run.request_id, []).append(run)
        return runs


def deploy_logging_api(
    scheduler: SchedulerClient, root: Path, api: dict[str, Any] | None = None, sleep: float = 0.02
) -> LoggingApi:
    """Deploy HANDLER under a fresh name (its files under root/<name>-files); not waited for."""
    deployed = new_handler_files(LoggingApi, root, "cl")
    deploy_handler(scheduler, root, deployed, HANDLER, api, sleep=sleep)
    return deployed


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
