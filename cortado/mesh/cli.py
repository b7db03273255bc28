"""The local mesh: NATS JetStream, the five services and Envoy as processes on this machine.

Used by `make run` (`python -m cortado.mesh`) and by the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import time
from pathlib import Path

from cortado import _tls
from cortado.mesh.envoyconf import public_tls_files
from cortado.mesh.local import LocalMesh
from cortado.mesh.processes import MeshError
from cortado.mesh.state import clear_state, cortado_home, write_state


def _wait_live(address: str, names: list[str], timeout: float, token: str = "") -> list[str]:
    """Wait until each API has a ready replica; problems (failed or unplaceable APIs) as messages."""
    from cortado.client import SchedulerClient
    from cortado.v1 import control_pb2

    deadline = time.monotonic() + timeout
    with SchedulerClient(address, token) as scheduler:
        while time.monotonic() < deadline:
            statuses = {s.name: s for s in scheduler.list() if s.name in names}
            problems = [
                f"{n}: {s.message}"
                for n, s in statuses.items()
                if s.state in (control_pb2.API_STATE_FAILED, control_pb2.API_STATE_UNPLACEABLE)
            ]
            if problems:
                return problems
            if all(s.ready_replicas for s in statuses.values()) and len(statuses) == len(names):
                return []
            time.sleep(0.2)
    return [f"APIs not ready after {timeout:.0f}s"]


def main(argv: list[str] | None = None) -> int:
    """`python -m cortado.mesh`: run the local mesh in the foreground until Ctrl-C (or until one of its processes
    stops), deploying the --deploy projects; its exit status (1 when the mesh could not start or stopped on its
    own)."""
    from cortado.client import SchedulerClient

    parser = argparse.ArgumentParser(prog="python -m cortado.mesh", description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("CORTADO_HTTP_PORT", "8888")))
    parser.add_argument("--workdir", type=Path, default=cortado_home() / "mesh")
    parser.add_argument("--deploy", type=Path, action="append", default=[], help="project folder to deploy")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start with no APIs, requests or logs: delete the state kept in --workdir first (`make run FRESH=1`)",
    )
    options = parser.parse_args(argv)

    # Every checkout shares this folder (unless CORTADO_HOME or --workdir say otherwise): say which one it is.
    if options.fresh:
        try:
            removed = clear_state(options.workdir)
        except MeshError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"state: {options.workdir} (fresh: {'cleared' if removed else 'nothing was kept there'})", flush=True)
    else:
        print(
            f"state: {options.workdir} (APIs and requests kept from earlier runs, from any checkout; "
            "`make run FRESH=1` or --fresh starts empty)",
            flush=True,
        )

    try:
        tls_files = public_tls_files()
    except _tls.TlsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    mesh = LocalMesh(
        options.workdir,
        http_port=options.port,
        tls_files=tls_files,
        console_address=os.environ.get("CORTADO_CONSOLE_ADDRESS") or "127.0.0.1",
    )
    # The documented ports, so deploy/prometheus/local.yml can scrape `make run` and the console keeps its
    # address (CORTADO_CONSOLE_PORT, 8889 by default), where they are free (free ones otherwise).
    documented = {"ingest-metrics": 9461, "results-metrics": 9462, "scheduler-metrics": 9463}
    documented |= {"executor-metrics": 9464, "webhooks-metrics": 9465, "admin": 9901}
    documented |= {"console": int(os.environ.get("CORTADO_CONSOLE_PORT") or 8889)}
    for name, port in documented.items():
        with contextlib.suppress(OSError), socket.socket() as probe:
            probe.bind(("127.0.0.1", port))
            mesh.ports[name] = port
    stop_requested = False

    def _interrupt(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    print(f"starting NATS, the services and Envoy (logs in {options.workdir / 'logs'}) ...", flush=True)
    try:
        mesh.start()
    except MeshError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    state_file = write_state(cortado_home(), mesh)
    try:
        deployed: list[str] = []
        token = os.environ.get("CORTADO_SCHEDULER_TOKEN", "")
        with SchedulerClient(mesh.scheduler_address, token) as scheduler:
            for project in options.deploy:
                reply = scheduler.deploy(project)
                deployed += [a.name for a in reply.apis]
                for notice in reply.notices:
                    print(f"notice: {notice}")
                for api, secret in sorted(reply.webhook_secrets.items()):
                    print(f"{api}: webhook signing secret {secret}")
                    print("  keep it now: it is shown only this once (`cortado webhook-secret rotate` makes a new one)")
        problems = _wait_live(mesh.scheduler_address, deployed, 120, token)
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        url = mesh.http_url.replace("127.0.0.1", "localhost")
        print(f"\nCortado is serving on {url} (scheduler on {mesh.scheduler_address}, NATS on {mesh.nats_url})")
        print(f"The web console is at {mesh.console_url} (open it in a browser)")
        for name in deployed:
            sample = next((p / "sample.json" for p in options.deploy if (p / "sample.json").is_file()), None)
            body = f"@{sample}" if sample else "'{}'"
            print(f'\n  # submit a request to {name!r}: answers {{"id": ...}}')
            print(f"  curl -s -X POST {url}/{name} -H 'Content-Type: application/json' -d {body}")
            print("  # fetch its result (waits up to 10 s for it to finish)")
            print(f"  curl -s '{url}/{name}/<id>?wait=10'")
        print("\nCtrl-C stops everything.", flush=True)
        while not stop_requested:
            dead = [p.name for p in mesh.processes.values() if not p.alive()]
            if dead:
                print(f"error: {', '.join(dead)} stopped; see {options.workdir / 'logs'}", file=sys.stderr)
                return 1
            time.sleep(0.5)
    finally:
        print("stopping ...", flush=True)
        state_file.unlink(missing_ok=True)
        mesh.stop()
        print("stopped.", flush=True)
    return 0
