"""Child processes of the local mesh: finding their binaries, starting and stopping them, and asking whether they
serve (a free port, a TCP connect, gRPC health, Envoy's /ready)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cortado import _tls


class MeshError(RuntimeError):
    """A part of the mesh did not start; the message names it and where its log is."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_binary(name: str) -> str:
    """Path of an executable installed beside this Python (a wheel's console script), else on PATH; MeshError
    saying how to install it when there is none."""
    scripts = Path(sysconfig.get_path("scripts"))
    for candidate in (scripts / name, Path(sys.executable).parent / name):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise MeshError(f"{name} is not installed: run `make install`")
    return found


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll check() every interval seconds until it is true (an exception counts as false); MeshError naming what
    after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(interval)
    raise MeshError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class ManagedProcess:
    """A child process with its log file; stop() sends SIGTERM and waits.

    It runs in its own session (a Ctrl-C at the terminal reaches the mesh only, which stops it in order), in cwd,
    or in this process's working folder when cwd is None.
    """

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path | None = None
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it, appending stdout and stderr to its log file (its folder is created when missing)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        """Its PID (it must have been started)."""
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        """Whether it was started and has not exited."""
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        """Send sig to it (nothing if it is not running)."""
        if self.alive():
            assert self.popen is not None
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait up to timeout, then SIGKILL; its exit code (None if it was never started)."""
        if self.popen is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of its log, for error messages ("" when it cannot be read)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def grpc_serving(address: str, service: str = "", ca_file: str = "") -> bool:
    """Whether the gRPC health service at address answers SERVING within a second (with ca_file: over TLS,
    trusting that CA); a failed call raises grpc.RpcError.

    The health checks of deploy/ run it too: a scheduler serving TLS is checked with ca_file.
    """
    if ca_file:
        channel = grpc.secure_channel(address, _tls.channel_credentials(_tls.load_ca(ca_file)))
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def tcp_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port (a refused connection raises OSError)."""
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


def envoy_process(config: Path, log: Path) -> ManagedProcess:
    """Envoy on config (not started yet): one worker (faster than two on a 2-core machine), a base id of its own
    (several Envoys may run on one machine), warnings and errors logged to log."""
    argv = [find_binary("envoy"), "-c", str(config), "--concurrency", "1", "--use-dynamic-base-id", "-l", "warning"]
    return ManagedProcess("envoy", argv, dict(os.environ), log)


def envoy_ready(admin_port: int) -> bool:
    """Whether the Envoy whose admin interface is on 127.0.0.1:admin_port answers /ready with 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False
