"""The local mesh's supervisor: NATS JetStream, the five services and Envoy as processes on this machine, started
in order, each waited for, and stopped in reverse."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import signal
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cortado import _natsauth
from cortado._auth import is_loopback_host
from cortado.mesh.envoyconf import render_envoy_config
from cortado.mesh.launch import LOCAL_STORE_LIMITS, PASSED_THROUGH, SERVICES, service_command
from cortado.mesh.natsconf import NATS_SYNC_INTERVAL, cluster_config, nats_config
from cortado.mesh.processes import (
    ManagedProcess,
    MeshError,
    envoy_process,
    envoy_ready,
    find_binary,
    free_port,
    grpc_serving,
    tcp_open,
)

BIND_FAILURES = ("Address already in use", "Failed to bind to address")
"""What a service's log says when a port picked free was taken before it could listen there."""


@dataclass
class LocalMesh:
    """NATS, scheduler, ingest, results, executor(s), the webhook sender and Envoy, started in that order and
    stopped in reverse."""

    workdir: Path
    http_port: int = 0
    env: Mapping[str, str] = field(default_factory=dict)
    executors: int = 1
    replicas: dict[str, int] = field(default_factory=dict)
    """Instances of ingest, results and scheduler (default one each)."""
    nats_cluster: int = 1
    """NATS servers: 1, or a cluster of 3 or 5 on loopback."""
    nats_monitoring: bool = False
    """Serve NATS's HTTP monitoring endpoint on `ports["nats-monitor"]` (benchmarks read `/varz`)."""
    tls_files: tuple[str, str] | None = None
    """The public port's certificate chain and private key (PEM files): it then serves TLS only (https)."""
    console_address: str = "127.0.0.1"
    """Where the web console listens (its port is `ports["console"]`). Beyond loopback the scheduler's token
    (CORTADO_SCHEDULER_TOKEN in env) is required: start() refuses otherwise."""
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    credentials: dict[str, _natsauth.NatsCredentials] = field(default_factory=dict)
    """NATS users and passwords, generated at start (their files are in `workdir/credentials`)."""

    @property
    def http_url(self) -> str:
        """Base URL of the public HTTP API (https when the public port serves TLS)."""
        scheme = "https" if self.tls_files else "http"
        return f"{scheme}://127.0.0.1:{self.ports['http']}"

    @property
    def console_url(self) -> str:
        """The web console's address (on loopback: as http://localhost:<port>/)."""
        host = "localhost" if is_loopback_host(self.console_address) else self.console_address
        if host in ("0.0.0.0", "::"):
            host = socket.gethostname()
        return f"http://{host}:{self.ports['console']}/"

    @property
    def grpc_address(self) -> str:
        """host:port of the public gRPC API (through Envoy)."""
        return f"127.0.0.1:{self.ports['http']}"

    @property
    def scheduler_address(self) -> str:
        """host:port of the scheduler's control-plane gRPC API."""
        return f"127.0.0.1:{self.ports['scheduler']}"

    @property
    def nats_url(self) -> str:
        """URL of the NATS server (no credentials: NATS refuses it without a user)."""
        return ",".join(f"nats://127.0.0.1:{self.ports[n]}" for n in self.nats_names)

    @property
    def admin_nats_url(self) -> str:
        """URL of the NATS server with the operator's credentials in it (for tools and tests)."""
        return _natsauth.with_credentials(self.nats_url, self.credentials[_natsauth.ADMIN])

    @property
    def credentials_dir(self) -> Path:
        """Where the NATS passwords are kept, readable by this user only."""
        return self.workdir / "credentials"

    @property
    def chain_secret_file(self) -> Path:
        """The mesh's chaining secret (cortado._chaining), new at each start, readable by this user only."""
        return self.credentials_dir / "chaining.secret"

    def address(self, service: str) -> str:
        """host:port of a service's own gRPC server."""
        return f"127.0.0.1:{self.ports[service]}"

    def _service_env(self, module: str = "") -> dict[str, str]:
        """The environment of a service's process (module: its kind, whose NATS user it gets; none for the
        settings Envoy shares): this one's, less the `CORTADO_*` settings not PASSED_THROUGH, plus the mesh's
        addresses and limits, then `env`."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CORTADO_") or k.startswith(PASSED_THROUGH)}
        env.update(LOCAL_STORE_LIMITS)
        if module:
            env["CORTADO_NATS_USER"] = module
            env["CORTADO_NATS_PASSWORD_FILE"] = str(_natsauth.password_file(self.credentials_dir, module))
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "CORTADO_NATS_URL": self.nats_url,
                "CORTADO_INGEST_ADDRESS": self.address("ingest"),
                "CORTADO_RESULTS_ADDRESS": self.address("results"),
                "CORTADO_SCHEDULER_ADDRESS": self.address("scheduler"),
            }
        )
        env.update(self.env)
        # Webhooks may not reach the mesh's own processes, whose ports here are picked free, not the defaults.
        own = ",".join(str(port) for _, port in sorted(self.ports.items()))
        given = env.get("CORTADO_WEBHOOK_MESH_PORTS", "").strip(", ")
        env["CORTADO_WEBHOOK_MESH_PORTS"] = f"{given},{own}" if given and own else given or own
        return env

    def executor_workdir(self, name: str) -> Path:
        """An executor's folder (projects, envs, metrics files): outside the mesh's own folder, which is closed
        to other users, so that handlers running as their API's user can reach their own project in it."""
        digest = hashlib.sha256(str(self.workdir.resolve()).encode()).hexdigest()[:12]
        root = Path(tempfile.gettempdir()) / f"cortado-{os.geteuid()}-{digest}"
        try:
            root.mkdir(mode=0o711, exist_ok=True)
            info = root.lstat()
            if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid():
                raise PermissionError(f"{root} belongs to someone else")
        except OSError:
            root = Path(tempfile.mkdtemp(prefix="cortado-"))
        root.chmod(0o711)
        return root / name

    def instances(self, kind: str) -> list[str]:
        """Process names of a service kind: `ingest`, then `ingest2`, `ingest3`, ... (executors: `executor1`...)."""
        count = self.executors if kind == "executor" else self.replicas.get(kind, 1)
        if kind == "executor":
            return ["executor", *(f"executor{i}" for i in range(1, count))]
        return [kind, *(f"{kind}{i}" for i in range(2, count + 1))]

    @property
    def nats_names(self) -> list[str]:
        """Process names of the NATS servers: `nats`, then `nats2`, `nats3` in a cluster."""
        return ["nats", *(f"nats{i}" for i in range(2, self.nats_cluster + 1))]

    def start(self) -> LocalMesh:
        """Start everything and wait until each part is ready; MeshError (with its log's tail) otherwise."""
        settings = {**os.environ, **self.env}
        if not is_loopback_host(self.console_address) and not (
            settings.get("CORTADO_SCHEDULER_TOKEN") or settings.get("CORTADO_SCHEDULER_TOKEN_FILE")
        ):
            raise MeshError(
                f"the console would listen on {self.console_address}, beyond loopback: set CORTADO_SCHEDULER_TOKEN "
                "(at least 32 characters), which the console then asks for, or keep it on 127.0.0.1"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o700)
        self.credentials = _natsauth.generate(self.credentials_dir, [*SERVICES, _natsauth.ADMIN])
        descriptor = os.open(self.chain_secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
        services = [name for kind in SERVICES for name in self.instances(kind)]
        names = ["http", "admin", "egress", "console", *self.nats_names, *services, *(f"{s}-metrics" for s in services)]
        names += [f"{n}-monitor" for n in self.nats_names] if self.nats_monitoring else []
        names += [f"{n}-cluster" for n in self.nats_names] if self.nats_cluster > 1 else []
        for name in names:
            self.ports.setdefault(name, free_port())
        if self.http_port:
            self.ports["http"] = self.http_port
        try:
            for name in self.nats_names:
                self.start_nats(name)
            for name in services:
                self.start_service(name)
            self.start_envoy()
        except BaseException:
            self.stop()
            raise
        return self

    def start_nats(self, name: str = "nats") -> None:
        """Start one nats-server with JetStream on file storage under the workdir (in a cluster: with routes)."""
        config = self.workdir / f"{name}.conf"
        settings = {**os.environ, **self.env}
        text = nats_config(
            self.ports[name],
            self.workdir / f"jetstream-{name}",
            monitor_port=self.ports.get(f"{name}-monitor", 0),
            credentials=self.credentials,
            sync_interval=settings.get("CORTADO_NATS_SYNC_INTERVAL") or NATS_SYNC_INTERVAL,
            max_file_store=settings.get("CORTADO_NATS_MAX_FILE_STORE", ""),
        )
        if self.nats_cluster > 1:
            route_ports = [self.ports[f"{n}-cluster"] for n in self.nats_names]
            route = self.credentials[_natsauth.ROUTE_USER]
            text += cluster_config(name, self.ports[f"{name}-cluster"], route, route_ports)
        # The configuration holds every password: readable by this user only.
        descriptor = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(text)
        proc = ManagedProcess(
            name,
            [find_binary("nats-server"), "-c", str(config)],
            dict(os.environ),
            self.workdir / "logs" / f"{name}.log",
        )
        self.processes[name] = proc
        proc.start()
        self._wait(proc, lambda: tcp_open(self.ports[name]), 20)

    def start_service(self, name: str, retry_ports: bool = True) -> None:
        """Start one service instance (`ingest2`, `executor1`, ...) and wait for gRPC health SERVING."""
        module = name.rstrip("0123456789")
        env = self._service_env(module)
        self.ports.setdefault(name, free_port())
        self.ports.setdefault(f"{name}-metrics", free_port())
        env["CORTADO_METRICS_ADDRESS"] = self.address(f"{name}-metrics")
        env[f"CORTADO_{module.upper()}_ADDRESS"] = self.address(name)
        if module == "scheduler":
            env["CORTADO_SCHEDULER_ID"] = name
        if module in ("ingest", "results", "executor"):
            # Executors give handlers their API's chaining token; ingest and results check it (cortado._chaining).
            env["CORTADO_CHAIN_SECRET_FILE"] = str(self.chain_secret_file)
        if module == "executor":
            env["CORTADO_EXECUTOR_ID"] = f"{socket.gethostname()}-{name}-{self.ports[name]}"
            env["CORTADO_EGRESS_PROXY"] = f"http://127.0.0.1:{self.ports['egress']}"
            env.setdefault("CORTADO_EXECUTOR_WORKDIR", str(self.executor_workdir(name)))
        proc = ManagedProcess(name, service_command(module), env, self.workdir / "logs" / f"{name}.log")
        self.processes[name] = proc
        proc.start()
        try:
            self._wait(proc, lambda: grpc_serving(self.address(name)), 30)
        except MeshError:
            # A port picked free at start may have been taken since: pick new ones, once. (grpc says only
            # "Failed to bind to address" unless GRPC_VERBOSITY=debug; the metrics server says the OS's words.)
            tail = proc.log_tail()
            if not any(sign in tail for sign in BIND_FAILURES) or retry_ports is False:
                raise
            self.ports[name] = free_port()
            self.ports[f"{name}-metrics"] = free_port()
            self.start_service(name, retry_ports=False)

    def start_envoy(self, retry_ports: bool = True) -> None:
        """Render Envoy's config, start it with one worker, and wait for /ready."""
        config = self.workdir / "envoy.yaml"
        config.write_text(
            render_envoy_config(
                self.ports["http"],
                self.ports["admin"],
                [self.address(n) for n in self.instances("ingest")],
                [self.address(n) for n in self.instances("results")],
                otlp_endpoint=self._service_env().get("OTEL_EXPORTER_OTLP_ENDPOINT"),
                egress_port=self.ports["egress"],
                tls_files=self.tls_files,
                console_port=self.ports["console"],
                console_address=self.console_address,
                scheduler=[self.address(n) for n in self.instances("scheduler")],
            )
        )
        proc = envoy_process(config, self.workdir / "logs" / "envoy.log")
        self.processes["envoy"] = proc
        proc.start()
        try:
            self._wait(proc, lambda: envoy_ready(self.ports["admin"]), 30)
        except MeshError:
            # A port picked free at start may have been taken since; the public and admin ones can move (once).
            taken = re.search(r"cannot bind '[^']*:(\d+)'", proc.log_tail())
            movable = {"admin", "console"} | (set() if self.http_port else {"http"})
            names = [n for n in movable if taken and self.ports[n] == int(taken.group(1))]
            if not retry_ports or not names:
                raise
            self.ports[names[0]] = free_port()
            self.start_envoy(retry_ports=False)

    def _wait(self, proc: ManagedProcess, check: Callable[[], bool], timeout: float) -> None:
        """Poll check() until it is true; MeshError with the end of proc's log when proc exits first or timeout
        seconds pass."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                raise MeshError(f"{proc.name} exited at start; its log ({proc.log_path}) ends:\n{proc.log_tail()}")
            with contextlib.suppress(Exception):
                if check():
                    return
            time.sleep(0.05)
        raise MeshError(f"{proc.name} was not ready after {timeout:.0f}s; its log ends:\n{proc.log_tail()}")

    def stop(self) -> None:
        """Stop Envoy, then every service at once (each drains), then NATS."""
        services = [p for name, p in self.processes.items() if name != "envoy" and not name.startswith("nats")]
        if "envoy" in self.processes:
            self.processes["envoy"].stop()
        for process in services:
            process.signal(signal.SIGTERM)
        for process in services:
            process.stop()
        for name in reversed(self.nats_names):
            if name in self.processes:
                self.processes[name].stop()

    def __enter__(self) -> LocalMesh:
        """Start the mesh (start()) and return it."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Stop the mesh (stop())."""
        self.stop()


@contextlib.contextmanager
def running_mesh(workdir: Path, **options: object) -> Iterator[LocalMesh]:
    """A started LocalMesh for the duration of the block."""
    mesh = LocalMesh(workdir, **options)  # type: ignore[arg-type]
    with mesh:
        yield mesh
