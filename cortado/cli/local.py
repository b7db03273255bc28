"""The local mesh: `cortado up` and `down`; `cortado console`, the web console on loopback for any scheduler."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cortado import mesh
from cortado.cli.connection import endpoints, scheduler_ca
from cortado.cli.errors import fail
from cortado.cli.grpclog import CALLER_GRPC_VERBOSITY
from cortado.cli.output import progress, show
from cortado.mesh import cortado_home, read_state


def cmd_up(options: argparse.Namespace) -> int:
    """Start the local mesh in the background (NATS, the services, Envoy)."""
    state = read_state()
    if state:
        progress(f"the local mesh already runs: {state['http_url']}")
        return 0
    home = cortado_home()
    home.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "cortado.mesh", "--port", str(options.port)]
    for project in options.deploy:
        argv += ["--deploy", str(Path(project).resolve())]
    if options.fresh:
        argv.append("--fresh")
    log_path = home / "mesh.log"
    env = dict(os.environ)
    if CALLER_GRPC_VERBOSITY is None:
        env.pop("GRPC_VERBOSITY", None)
    with log_path.open("ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    kept = "cleared first" if options.fresh else "APIs and requests of earlier runs kept; --fresh starts empty"
    progress(f"starting the local mesh (state: {home / 'mesh'}, {kept}; log: {log_path}) ...")
    deadline = time.monotonic() + options.timeout
    while (state := read_state()) is None or state.get("pid") != str(process.pid):
        if process.poll() is not None or time.monotonic() > deadline:
            fail(f"the local mesh did not start; see {log_path}")
        time.sleep(0.2)

    def human() -> None:
        print(f"Cortado is serving on {state['http_url']}")
        if state.get("console_url"):
            print(f"The web console is at {state['console_url']}")

    show(options, state, human)
    return 0


def cmd_down(options: argparse.Namespace) -> int:
    """Stop the local mesh started by `cortado up` (or `make run`)."""
    state = read_state()
    if not state:
        progress("no local mesh is running")
        return 0
    pid = int(state["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + options.timeout
    while read_state() is not None:
        if time.monotonic() > deadline:
            fail(f"the local mesh (pid {pid}) did not stop within {options.timeout:.0f}s")
        time.sleep(0.2)
    progress("stopped")
    return 0


def cmd_console(options: argparse.Namespace) -> int:
    """Serve the web console on loopback for any scheduler (a port-forwarded one, say) until Ctrl-C or SIGTERM."""
    scheduler, ca = endpoints(options)[0], scheduler_ca(options)
    if ca and not Path(ca).is_file():
        fail(f"the CA file {ca!r} does not exist")
    stop = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    # Set explicitly: a process started in the background by a shell inherits SIGINT ignored.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stop)
    with tempfile.TemporaryDirectory(prefix="cortado-console-") as folder:
        config = Path(folder) / "envoy.yaml"
        admin = mesh.free_port()
        config.write_text(mesh.render_console_config(options.port, admin, scheduler, ca))
        envoy = mesh.envoy_process(config, Path(folder) / "envoy.log")
        envoy.start()
        try:
            deadline = time.monotonic() + 30
            while not mesh.envoy_ready(admin):
                if not envoy.alive() or time.monotonic() > deadline:
                    fail(f"the console's Envoy did not start; its log ends:\n{envoy.log_tail()}")
                time.sleep(0.1)
            url = f"http://localhost:{options.port}/"
            show(
                options,
                {"console_url": url, "scheduler": scheduler},
                lambda: print(f"The web console is at {url} (scheduler {scheduler}); Ctrl-C stops it", flush=True),
            )
            while not stop:
                if not envoy.alive():
                    fail(f"the console's Envoy stopped; its log ends:\n{envoy.log_tail()}")
                time.sleep(0.2)
            return 0
        finally:
            envoy.stop()
