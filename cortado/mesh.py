"""The local mesh: NATS JetStream, the five services and Envoy as processes on this machine.

Used by `make run` (`python -m cortado.mesh`) and by the test suite.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cortado import natsauth, tls
from cortado.auth import is_loopback_host
from cortado.runtime import MAX_BODY_BYTES

ROOT = Path(__file__).resolve().parent.parent
ENVOY_DIR = ROOT / "envoy"
MAX_DRAIN_BYTES = 1024 * 1024 * 1024
"""A body declared larger than MAX_BODY_BYTES is read (and dropped) up to this size before Envoy answers 413;
a larger one is answered at once (a client that reads only after sending everything then sees a reset)."""
MAX_WAITING_CALLS = 8192
"""Calls that may wait (long polls, waiting submits, gRPC streams) Envoy keeps open at once to one service."""
MAX_SHORT_CALLS = 4096
"""Calls that never wait (a plain POST or GET) Envoy keeps open at once to one service, beside the waiting ones."""
MAX_STREAMS_PER_CONNECTION = 128
"""Calls one client HTTP/2 connection (a gRPC channel) may have open at once; more wait on the client's side."""
SERVICES = ("scheduler", "ingest", "results", "executor", "webhooks")
"""The services, in the order they start; each connects to NATS as the user of its name (cortado.natsauth)."""

PASSED_THROUGH = (
    "CORTADO_WEBHOOK_",
    "CORTADO_WEBHOOKS_",
    "CORTADO_API_KEYS",
    "CORTADO_SCHEDULER_TOKEN",
    "CORTADO_CONSOLE_",
)
"""Settings the services take from the environment the mesh runs in (every other `CORTADO_*` variable there is
left out): where webhooks may go and how they are retried, and whether API keys are required, so
`CORTADO_WEBHOOK_ALLOW_HOSTS=... make run` and `CORTADO_API_KEYS=on make run` work."""


BIND_FAILURES = ("Address already in use", "Failed to bind to address")
"""What a service's log says when a port picked free was taken before it could listen there."""


class MeshError(RuntimeError):
    """A part of the mesh did not start; the message names it and where its log is."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_binary(name: str) -> str:
    """Path of an executable installed beside this Python (a wheel's console script), else on PATH."""
    scripts = Path(sysconfig.get_path("scripts"))
    for candidate in (scripts / name, Path(sys.executable).parent / name):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise MeshError(f"{name} is not installed: run `make install`")
    return found


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll check() until it is true; MeshError naming what after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(interval)
    raise MeshError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class ManagedProcess:
    """A child process with its log file; stop() sends SIGTERM and waits."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path = ROOT
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it, appending stdout and stderr to its log file."""
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
        """Whether it runs."""
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        """Send sig to it (nothing if it is not running)."""
        if self.alive():
            assert self.popen is not None
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait up to timeout, then SIGKILL; its exit code."""
        if self.popen is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()

    def log_tail(self, lines: int = 30) -> str:
        """The end of its log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def grpc_serving(address: str, service: str = "", ca_file: str = "") -> bool:
    """Whether the gRPC health service at address answers SERVING (with ca_file: over TLS, trusting that CA).

    The health checks of deploy/ run it too: a scheduler serving TLS is checked with ca_file.
    """
    if ca_file:
        channel = grpc.secure_channel(address, tls.channel_credentials(tls.load_ca(ca_file)))
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


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


def tcp_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


def render_envoy_config(
    http_port: int,
    admin_port: int,
    ingest: list[str],
    results: list[str],
    listen_address: str = "127.0.0.1",
    max_body_bytes: int = MAX_BODY_BYTES,
    results_timeout_seconds: int = 120,
    otlp_endpoint: str | None = None,
    egress_port: int = 0,
    egress_address: str = "127.0.0.1",
    max_waiting_calls: int = MAX_WAITING_CALLS,
    max_short_calls: int = MAX_SHORT_CALLS,
    max_streams_per_connection: int = MAX_STREAMS_PER_CONNECTION,
    max_drain_bytes: int = MAX_DRAIN_BYTES,
    tls_files: tuple[str, str] | None = None,
    console_port: int = 0,
    console_address: str = "127.0.0.1",
    scheduler: list[str] | None = None,
) -> str:
    """Envoy's bootstrap YAML for the public listener and the given service addresses (host:port).

    With console_port (and the scheduler's addresses), a listener on console_address serves the web console: its
    files and the Scheduler's console RPCs as JSON (envoy/console.yaml.tmpl). On a loopback address it answers
    loopback host names only; beyond loopback every name, and the scheduler's token guards the calls.

    With tls_files (the certificate chain's and the private key's PEM files) the public listener serves TLS only
    (HTTP/1.1 and HTTP/2, by ALPN); the egress listener stays plain text on loopback.

    With otlp_endpoint (an OTLP/gRPC URL such as http://jaeger:4317) Envoy's OpenTelemetry
    tracer is on: it continues an incoming traceparent and starts a trace otherwise. With
    egress_port, a second listener on egress_address (loopback by default) serves as the handlers' HTTP proxy.

    Each service's cluster has two budgets (circuit breakers): calls that may wait use the DEFAULT
    priority's (max_waiting_calls), calls that never wait the HIGH priority's (max_short_calls), so
    that thousands of long polls cannot make a plain submit or read answer 503.
    """

    def cluster(name: str, addresses: list[str], health_checked: bool = True) -> str:
        return _cluster(name, addresses, max_waiting_calls, max_short_calls, health_checked)

    def transcoder(*services: str, **overrides: object) -> str:
        return _transcoder(services, max_body_bytes, **overrides)

    listener = Template((ENVOY_DIR / "listener.yaml.tmpl").read_text())
    common = {
        "listen_address": listen_address,
        "max_body_mib": max_body_bytes // (1024 * 1024),
        "max_body_bytes": max_body_bytes,
        "max_drain_bytes": max_drain_bytes,
        "max_streams_per_connection": max_streams_per_connection,
        # Routes whose calls may wait (GET ?wait=, a waiting submit): above the services' maximum wait.
        "results_timeout": f"{results_timeout_seconds}s",
        "tracing": _ENVOY_TRACING if otlp_endpoint else "",
        "transcoder": transcoder("Submission", "Results", "Requests"),
        # POST /<api>?wait= and POST /<api> with `Prefer: wait=` (routed by query parameter and header).
        "waiting_transcoder": transcoder("WaitingSubmission"),
        # Retried only where ingest cannot have queued anything: no connection, a refused stream,
        # UNAVAILABLE (ingest's own "safe to retry") or CANCELLED (a call that reached a stopping server).
        "submit_retries": "{retry_on: 'connect-failure,refused-stream,unavailable,cancelled', num_retries: 3}",
        # A waiting submit may be cancelled after it queued its request (its ingest stopping): not retried then.
        "wait_retries": "{retry_on: 'connect-failure,refused-stream,unavailable', num_retries: 3}",
        # A cancel may be repeated: a second one answers the same as the first.
        "cancel_retries": "{retry_on: 'connect-failure,refused-stream,reset,unavailable,cancelled', num_retries: 3}",
        # Reads change nothing: retry them on any failure to reach a results instance.
        "read_retries": "{retry_on: 'connect-failure,refused-stream,reset,unavailable,cancelled', num_retries: 3}",
    }
    listeners = listener.substitute(
        common,
        name="public",
        port=http_port,
        api_domains='["*"]',
        other_hosts="",
        proxy_filter="",
        transport_socket=_tls_socket(*tls_files) if tls_files else "",
    )
    clusters = cluster("ingest", ingest) + cluster("results", results)
    if egress_port:
        # Handlers' outbound HTTP (HTTP_PROXY): api-<name> hosts reach the API, any other host is forwarded.
        listeners += listener.substitute(
            common,
            listen_address=egress_address,
            name="egress",
            port=egress_port,
            api_domains='["api-*"]',
            other_hosts=_EGRESS_OTHER_HOSTS,
            proxy_filter=_EGRESS_PROXY_FILTER,
            transport_socket="",
        )
        clusters += _EGRESS_CLUSTER
    if console_port:
        listeners += _console_listener(console_port, console_address, transcoder)
        clusters += cluster("scheduler", scheduler or [])
    if otlp_endpoint:
        clusters += cluster("otlp", [_host_port(otlp_endpoint)], health_checked=False)
    bootstrap = Template((ENVOY_DIR / "envoy.yaml.tmpl").read_text())
    return bootstrap.substitute(admin_port=admin_port, listeners=listeners, clusters=clusters)


def _console_listener(port: int, address: str, transcoder: Callable[..., str]) -> str:
    """The console's listener (YAML lines): the Scheduler's console RPCs transcoded, each line of a stream as one
    JSON line; on loopback, loopback names only."""
    names = ["localhost", "127.0.0.1", "[::1]"]
    domains = json.dumps([d for n in names for d in (n, f"{n}:*")]) if is_loopback_host(address) else '["*"]'
    settings = transcoder(
        "Scheduler",
        # Path fields cannot be given again in the query (?name=other).
        ignored_query_parameters=["name", "id", "path"],
        # A path no console RPC answers is a 404 here, not a call the scheduler cannot read.
        request_validation_options={"reject_unknown_method": True, "reject_unknown_query_parameters": False},
        print_options={
            "preserve_proto_field_names": True,
            "always_print_primitive_fields": True,
            "stream_newline_delimited": True,
        },
    )
    template = Template((ENVOY_DIR / "console.yaml.tmpl").read_text())
    retries = "{retry_on: 'connect-failure,refused-stream,reset,unavailable', num_retries: 3}"
    return template.substitute(listen_address=address, port=port, domains=domains, transcoder=settings, retries=retries)


def _cluster(
    name: str,
    addresses: list[str],
    max_waiting_calls: int = MAX_WAITING_CALLS,
    max_short_calls: int = MAX_SHORT_CALLS,
    health_checked: bool = True,
    tls_ca: str = "",
) -> str:
    """A STATIC cluster (YAML lines) of gRPC servers at addresses (host:port), health-checked unless told not, with
    two budgets (circuit breakers): calls that may wait use DEFAULT's, calls that never wait HIGH's. With tls_ca
    (a CA file) it speaks TLS and trusts only certificates that CA signed for the first address's host."""
    endpoints = "\n".join(
        f"          - endpoint: {{address: {{socket_address: {{address: {a.rsplit(':', 1)[0]}, "
        f"port_value: {a.rsplit(':', 1)[1]}}}}}}}"
        for a in addresses
    )
    # A service that is stopping answers NOT_SERVING: Envoy stops sending it new calls.
    checks = (
        "    health_checks:\n"
        "    - {timeout: 1s, interval: 0.5s, unhealthy_threshold: 1, healthy_threshold: 1,"
        " no_traffic_interval: 0.5s, grpc_health_check: {}}\n"
        if health_checked
        else ""
    )
    # Envoy's defaults (1,024 calls, 3 retries at once, per priority) are set explicitly, sized for long polls.
    breakers = (
        "    circuit_breakers:\n"
        "      thresholds:\n"
        f"      - {{priority: DEFAULT, max_connections: 1024, max_pending_requests: {max_waiting_calls},"
        f" max_requests: {max_waiting_calls}, max_retries: 3, track_remaining: true}}\n"
        f"      - {{priority: HIGH, max_connections: 1024, max_pending_requests: {max_short_calls},"
        f" max_requests: {max_short_calls}, max_retries: 3, track_remaining: true}}\n"
    )
    return (
        f"  - name: {name}\n"
        "    type: STATIC\n"
        "    connect_timeout: 1s\n"
        f"{_upstream_tls(tls_ca, addresses[0].rsplit(':', 1)[0]) if tls_ca else ''}"
        f"{checks}"
        f"{breakers}"
        "    typed_extension_protocol_options:\n"
        "      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n"
        '        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n'
        "        explicit_http_config: {http2_protocol_options: {}}\n"
        "    load_assignment:\n"
        f"      cluster_name: {name}\n"
        "      endpoints:\n"
        "      - lb_endpoints:\n"
        f"{endpoints}\n"
    )


def _upstream_tls(ca_file: str, host: str) -> str:
    """A cluster's TLS transport socket (YAML lines): certificates chained to ca_file and made out to host."""
    bare = host.strip("[]")
    try:
        ipaddress.ip_address(bare)
        kind = "IP_ADDRESS"
    except ValueError:
        kind = "DNS"
    context: dict[str, object] = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": {
            "alpn_protocols": ["h2"],
            "validation_context": {
                "trusted_ca": {"filename": str(Path(ca_file).resolve())},
                "match_typed_subject_alt_names": [{"san_type": kind, "matcher": {"exact": bare}}],
            },
        },
    }
    if kind == "DNS":
        context["sni"] = bare
    socket = "    transport_socket:\n      name: envoy.transport_sockets.tls\n"
    return socket + f"      typed_config: {json.dumps(context)}\n"


def _transcoder(services: tuple[str, ...], max_body_bytes: int, **overrides: object) -> str:
    """The grpc_json_transcoder's settings (one line of YAML) for the given services, overrides applied."""
    settings: dict[str, object] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
        "proto_descriptor": str(ENVOY_DIR / "cortado.pb"),
        "services": [f"cortado.v1.{s}" for s in services],
        "match_incoming_request_route": True,
        "convert_grpc_status": True,
        # Path fields must not be overridable from the query string (?api=other); over HTTP the
        # idempotency key is the Idempotency-Key header only.
        "ignored_query_parameters": ["api", "id", "idempotency_key"],
        "ignore_unknown_query_parameters": True,
        "max_request_body_size": max_body_bytes,
        "max_response_body_size": max_body_bytes,
        "print_options": {"preserve_proto_field_names": True, "always_print_primitive_fields": True},
    }
    settings.update(overrides)
    return json.dumps(settings)


def render_console_config(
    port: int, admin_port: int, scheduler: str, ca_file: str = "", listen_address: str = "127.0.0.1"
) -> str:
    """Envoy's bootstrap YAML for the web console alone, in front of the scheduler at `scheduler` (host:port),
    over TLS trusting ca_file when given: what `cortado console` runs on an operator's machine."""
    listener = _console_listener(
        port, listen_address, lambda *services, **overrides: _transcoder(services, MAX_BODY_BYTES, **overrides)
    )
    cluster = _cluster("scheduler", [scheduler], tls_ca=ca_file)
    bootstrap = Template((ENVOY_DIR / "envoy.yaml.tmpl").read_text())
    return bootstrap.substitute(admin_port=admin_port, listeners=listener, clusters=cluster)


TLS_CERT_SETTING, TLS_KEY_SETTING = "CORTADO_HTTP_TLS_CERT", "CORTADO_HTTP_TLS_KEY"
"""The public port's certificate chain and private key (PEM files): set both to serve https (and gRPC over TLS)."""


def public_tls_files(environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """The public port's (certificate, key) files from CORTADO_HTTP_TLS_CERT and _KEY, checked to be a usable
    pair; None when neither is set. TlsError naming the setting when one is missing or its file unusable."""
    env = os.environ if environ is None else environ
    certificate, key = env.get(TLS_CERT_SETTING, ""), env.get(TLS_KEY_SETTING, "")
    if not certificate and not key:
        return None
    if not certificate or not key:
        missing = TLS_KEY_SETTING if certificate else TLS_CERT_SETTING
        raise tls.TlsError(f"{missing} is not set: set both {TLS_CERT_SETTING} and {TLS_KEY_SETTING}, or neither")
    tls.load_server_pair(certificate, key, TLS_CERT_SETTING, TLS_KEY_SETTING)
    return str(Path(certificate).resolve()), str(Path(key).resolve())


def _tls_socket(certificate: str, key: str) -> str:
    """The public filter chain's TLS transport socket (YAML lines), serving the certificate chain and key files."""
    context = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "common_tls_context": {
            "alpn_protocols": ["h2", "http/1.1"],
            "tls_certificates": [{"certificate_chain": {"filename": certificate}, "private_key": {"filename": key}}],
        },
    }
    socket = "      transport_socket:\n        name: envoy.transport_sockets.tls\n"
    return socket + f"        typed_config: {json.dumps(context)}\n"


_DNS_CACHE = "{name: egress_dns, dns_lookup_family: V4_PREFERRED}"

_EGRESS_OTHER_HOSTS = """\
            - name: outbound
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: egress_dynamic, timeout: 300s}
                typed_per_filter_config:
                  envoy.filters.http.grpc_json_transcoder:
                    "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
                    disabled: true
"""

_EGRESS_PROXY_FILTER = f"""\
          - name: envoy.filters.http.dynamic_forward_proxy
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig
              dns_cache_config: {_DNS_CACHE}
"""

_EGRESS_CLUSTER = f"""\
  - name: egress_dynamic
    connect_timeout: 5s
    lb_policy: CLUSTER_PROVIDED
    cluster_type:
      name: envoy.clusters.dynamic_forward_proxy
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig
        dns_cache_config: {_DNS_CACHE}
"""


_ENVOY_TRACING = """\
          tracing:
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                grpc_service: {envoy_grpc: {cluster_name: otlp}, timeout: 1s}
                service_name: cortado-envoy
"""


def _host_port(url: str) -> str:
    parsed = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    return f"{parsed.hostname}:{parsed.port or 4317}"


NATS_MAX_PAYLOAD = "8MB"
"""NATS's message limit in Cortado's deployments: log lines up to 5 MB and results up to ~8 MB travel whole."""


NATS_SYNC_INTERVAL = "2m"
"""How often the local NATS server fsyncs JetStream's files (`CORTADO_NATS_SYNC_INTERVAL`; nats-server's default).

Every write reaches the operating system before JetStream acknowledges it, so a killed nats-server (even
SIGKILL) loses nothing acknowledged: tests/reliability/test_restarts.py kills it mid-load and counts one final
record per accepted request. Only a crash of the machine itself can lose the writes of the last interval;
`always` closes that too, at a quarter to a tenth of the writes per second (docs/decisions.md)."""


def nats_config(
    port: int,
    store: Path,
    listen: str = "127.0.0.1",
    monitor_port: int = 0,
    credentials: Mapping[str, natsauth.NatsCredentials] | None = None,
    sync_interval: str = NATS_SYNC_INTERVAL,
    max_file_store: str = "",
) -> str:
    """nats-server configuration: JetStream on file storage (fsynced every sync_interval, or `always`; at most
    max_file_store bytes when given, such as `4GB`), Cortado's message limit, the service users and their
    permissions (when credentials are given), and (when a port is given) the HTTP monitoring endpoint (`/varz`,
    `/jsz`) on loopback."""
    if not re.fullmatch(r"always|[1-9][0-9]*(ms|s|m|h)", sync_interval):
        raise MeshError(f"CORTADO_NATS_SYNC_INTERVAL must be `always` or a duration such as 2m, got {sync_interval!r}")
    if max_file_store and not re.fullmatch(r"[1-9][0-9]*(KB|MB|GB|TB)?", max_file_store):
        raise MeshError(f"CORTADO_NATS_MAX_FILE_STORE must be a size such as 4GB, got {max_file_store!r}")
    limit = f"  max_file_store: {max_file_store}\n" if max_file_store else ""
    text = (
        f"listen: {listen}:{port}\n"
        f"max_payload: {NATS_MAX_PAYLOAD}\n"
        f"jetstream {{\n  store_dir: {json.dumps(str(store))}\n  sync_interval: {json.dumps(sync_interval)}\n"
        f"{limit}}}\n"
    )
    if credentials:
        text += natsauth.authorization_config(credentials)
    if monitor_port:
        text += f"http: 127.0.0.1:{monitor_port}\n"
    return text


LOCAL_STORE_LIMITS = {
    "CORTADO_REQUESTS_MAX_BYTES": str(512 * 1024**2),
    "CORTADO_PAYLOADS_MAX_BYTES": str(1024**3),
    "CORTADO_RESULTS_MAX_BYTES": str(2 * 1024**3),
    "CORTADO_BUNDLES_MAX_BYTES": str(256 * 1024**2),
    "CORTADO_IDEMPOTENCY_MAX_BYTES": str(64 * 1024**2),
    "CORTADO_DEAD_MAX_BYTES": str(64 * 1024**2),
    "CORTADO_LOGS_MAX_BYTES": str(256 * 1024**2),
    "CORTADO_QUEUE_MAX_BYTES": str(64 * 1024**2),
    "CORTADO_WEBHOOKS_MAX_BYTES": str(64 * 1024**2),
}
"""Byte limits of the local mesh's buckets and streams (its `env` overrides them): JetStream reserves each from
its storage, which on a developer's machine is 75% of the free disk; these reserve about 4.3 GiB, plus 64 MiB per
API."""


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
    credentials: dict[str, natsauth.NatsCredentials] = field(default_factory=dict)
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
        return natsauth.with_credentials(self.nats_url, self.credentials[natsauth.ADMIN])

    @property
    def credentials_dir(self) -> Path:
        """Where the NATS passwords are kept, readable by this user only."""
        return self.workdir / "credentials"

    @property
    def chain_secret_file(self) -> Path:
        """The mesh's chaining secret (cortado.chaining), new at each start, readable by this user only."""
        return self.credentials_dir / "chaining.secret"

    def address(self, service: str) -> str:
        """host:port of a service's own gRPC server."""
        return f"127.0.0.1:{self.ports[service]}"

    def _service_env(self, module: str = "") -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CORTADO_") or k.startswith(PASSED_THROUGH)}
        env.update(LOCAL_STORE_LIMITS)
        if module:
            env["CORTADO_NATS_USER"] = module
            env["CORTADO_NATS_PASSWORD_FILE"] = str(natsauth.password_file(self.credentials_dir, module))
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
        self.credentials = natsauth.generate(self.credentials_dir, [*SERVICES, natsauth.ADMIN])
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
            route = self.credentials[natsauth.ROUTE_USER]
            routes = ", ".join(
                f"nats-route://{route.user}:{route.password}@127.0.0.1:{self.ports[n + '-cluster']}"
                for n in self.nats_names
            )
            text += (
                f"server_name: {name}\n"
                f"cluster {{\n  name: cortado\n  listen: 127.0.0.1:{self.ports[name + '-cluster']}\n"
                f"  authorization {{ user: {route.user}, password: {json.dumps(route.password)} }}\n"
                f"  routes: [{routes}]\n}}\n"
            )
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
            # Executors give handlers their API's chaining token; ingest and results check it (cortado.chaining).
            env["CORTADO_CHAIN_SECRET_FILE"] = str(self.chain_secret_file)
        if module == "executor":
            env["CORTADO_EXECUTOR_ID"] = f"{socket.gethostname()}-{name}-{self.ports[name]}"
            env["CORTADO_EGRESS_PROXY"] = f"http://127.0.0.1:{self.ports['egress']}"
            env.setdefault("CORTADO_EXECUTOR_WORKDIR", str(self.executor_workdir(name)))
        proc = ManagedProcess(
            name, [sys.executable, "-m", f"services.{module}"], env, self.workdir / "logs" / f"{name}.log"
        )
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
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_mesh(workdir: Path, **options: object) -> Iterator[LocalMesh]:
    """A started LocalMesh for the duration of the block."""
    mesh = LocalMesh(workdir, **options)  # type: ignore[arg-type]
    with mesh:
        yield mesh


def cortado_home() -> Path:
    """Where the local mesh keeps its state and logs: `$CORTADO_HOME`, else `~/.cortado`."""
    return Path(os.environ.get("CORTADO_HOME") or Path.home() / ".cortado")


STATE_FILE = "mesh.json"
"""File in cortado_home() that says where the running local mesh listens (read by the CLI)."""


def read_state(home: Path | None = None) -> dict[str, str] | None:
    """The running local mesh's addresses, or None when none runs."""
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


def _write_state(home: Path, mesh: LocalMesh) -> Path:
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


STATE_ENTRIES = ("jetstream-*", "credentials", "logs", "nats*.conf", "envoy.yaml")
"""What a mesh keeps in its folder: JetStream's stores (APIs, bundles, queues, requests), the NATS passwords,
the logs and the rendered configurations. `--fresh` deletes exactly these, nothing else in the folder."""


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
    """`python -m cortado.mesh`: run the local mesh in the foreground until Ctrl-C."""
    import argparse

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
    except tls.TlsError as exc:
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
    state_file = _write_state(cortado_home(), mesh)
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


if __name__ == "__main__":
    sys.exit(main())
