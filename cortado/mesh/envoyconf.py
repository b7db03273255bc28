"""Envoy's configuration, rendered from the templates in cortado/mesh/envoy/ (package data).

Each template is a `string.Template` whose leading `#` lines describe it and are not rendered; the values put in
are numbers, names, JSON strings and lists, or other rendered templates: no configuration is built here. The
descriptor set Envoy transcodes with (`cortado.pb`, from `make proto`) lies beside the templates and is passed
to Envoy by its path, so the package must be installed as files (a wheel or an editable checkout), not zipped.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import urllib.parse
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from string import Template

from cortado import _tls
from cortado._auth import is_loopback_host
from cortado.runtime import MAX_BODY_BYTES

_TEMPLATES = resources.files("cortado.mesh") / "envoy"
ENVOY_DIR = Path(str(_TEMPLATES))
"""Envoy's templates and descriptor set, package data of cortado.mesh."""
DESCRIPTOR = ENVOY_DIR / "cortado.pb"
"""The descriptor set of Cortado's protos (`make proto` writes it) that Envoy's transcoders read."""

MAX_DRAIN_BYTES = 1024 * 1024 * 1024
"""A body declared larger than MAX_BODY_BYTES is read (and dropped) up to this size before Envoy answers 413;
a larger one is answered at once (a client that reads only after sending everything then sees a reset)."""
MAX_WAITING_CALLS = 8192
"""Calls that may wait (long polls, waiting submits, gRPC streams) Envoy keeps open at once to one service."""
MAX_SHORT_CALLS = 4096
"""Calls that never wait (a plain POST or GET) Envoy keeps open at once to one service, beside the waiting ones."""
MAX_STREAMS_PER_CONNECTION = 128
"""Calls one client HTTP/2 connection (a gRPC channel) may have open at once; more wait on the client's side."""

TLS_CERT_SETTING, TLS_KEY_SETTING = "CORTADO_HTTP_TLS_CERT", "CORTADO_HTTP_TLS_KEY"
"""The public port's certificate chain and private key (PEM files): set both to serve https (and gRPC over TLS)."""


@functools.cache
def _template(name: str) -> Template:
    """The template cortado/mesh/envoy/<name>, without its leading comment lines."""
    lines = _TEMPLATES.joinpath(name).read_text().splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return Template("".join(lines))


def _render(template: str, /, **values: object) -> str:
    """The template cortado/mesh/envoy/<template> with values put in (KeyError when one is missing)."""
    return _template(template).substitute(values)


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

    common = {
        "listen_address": listen_address,
        "max_body_mib": max_body_bytes // (1024 * 1024),
        "max_body_bytes": max_body_bytes,
        "max_drain_bytes": max_drain_bytes,
        "max_streams_per_connection": max_streams_per_connection,
        # Routes whose calls may wait (GET ?wait=, a waiting submit): above the services' maximum wait.
        "results_timeout": f"{results_timeout_seconds}s",
        "tracing": _render("tracing.yaml.tmpl") if otlp_endpoint else "",
        "transcoder": _transcoder(["Submission", "Results", "Requests"], max_body_bytes),
        # POST /<api>?wait= and POST /<api> with `Prefer: wait=` (routed by query parameter and header).
        "waiting_transcoder": _transcoder(["WaitingSubmission"], max_body_bytes),
    }
    listeners = _render(
        "listener.yaml.tmpl",
        **common,
        name="public",
        port=http_port,
        api_domains='["*"]',
        other_hosts="",
        proxy_filter="",
        transport_socket=_listener_tls(*tls_files) if tls_files else "",
    )
    clusters = cluster("ingest", ingest) + cluster("results", results)
    if egress_port:
        # Handlers' outbound HTTP (HTTP_PROXY): api-<name> hosts reach the API, any other host is forwarded.
        listeners += _render(
            "listener.yaml.tmpl",
            **{**common, "listen_address": egress_address},
            name="egress",
            port=egress_port,
            api_domains='["api-*"]',
            other_hosts=_render("egress_routes.yaml.tmpl"),
            proxy_filter=_render("egress_filter.yaml.tmpl"),
            transport_socket="",
        )
        clusters += _render("egress_cluster.yaml.tmpl")
    if console_port:
        listeners += _console_listener(console_port, console_address, max_body_bytes)
        clusters += cluster("scheduler", scheduler or [])
    if otlp_endpoint:
        clusters += cluster("otlp", [_host_port(otlp_endpoint)], health_checked=False)
    return _render("envoy.yaml.tmpl", admin_port=admin_port, listeners=listeners, clusters=clusters)


def render_console_config(
    port: int, admin_port: int, scheduler: str, ca_file: str = "", listen_address: str = "127.0.0.1"
) -> str:
    """Envoy's bootstrap YAML for the web console alone, in front of the scheduler at `scheduler` (host:port),
    over TLS trusting ca_file when given: what `cortado console` runs on an operator's machine."""
    listener = _console_listener(port, listen_address, MAX_BODY_BYTES)
    cluster = _cluster("scheduler", [scheduler], tls_ca=ca_file)
    return _render("envoy.yaml.tmpl", admin_port=admin_port, listeners=listener, clusters=cluster)


def public_tls_files(environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """The public port's (certificate, key) files from CORTADO_HTTP_TLS_CERT and _KEY, checked to be a usable
    pair; None when neither is set. TlsError naming the setting when one is missing or its file unusable."""
    env = os.environ if environ is None else environ
    certificate, key = env.get(TLS_CERT_SETTING, ""), env.get(TLS_KEY_SETTING, "")
    if not certificate and not key:
        return None
    if not certificate or not key:
        missing = TLS_KEY_SETTING if certificate else TLS_CERT_SETTING
        raise _tls.TlsError(f"{missing} is not set: set both {TLS_CERT_SETTING} and {TLS_KEY_SETTING}, or neither")
    _tls.load_server_pair(certificate, key, TLS_CERT_SETTING, TLS_KEY_SETTING)
    return str(Path(certificate).resolve()), str(Path(key).resolve())


def _console_listener(port: int, address: str, max_body_bytes: int) -> str:
    """The console's listener (envoy/console.yaml.tmpl) on address:port; on loopback it answers loopback names
    only."""
    names = ["localhost", "127.0.0.1", "[::1]"]
    domains = json.dumps([d for n in names for d in (n, f"{n}:*")]) if is_loopback_host(address) else '["*"]'
    return _render(
        "console.yaml.tmpl",
        listen_address=address,
        port=port,
        domains=domains,
        descriptor=json.dumps(str(DESCRIPTOR)),
        max_body_bytes=max_body_bytes,
    )


def _transcoder(services: list[str], max_body_bytes: int) -> str:
    """The grpc_json_transcoder's settings (envoy/transcoder.json.tmpl) for the given cortado.v1 services, as
    one line of JSON (it also stands in YAML's flow mappings)."""
    text = _render(
        "transcoder.json.tmpl",
        descriptor=json.dumps(str(DESCRIPTOR)),
        services=json.dumps([f"cortado.v1.{s}" for s in services]),
        max_body_bytes=max_body_bytes,
    )
    return json.dumps(json.loads(text))


def _cluster(
    name: str,
    addresses: list[str],
    max_waiting_calls: int = MAX_WAITING_CALLS,
    max_short_calls: int = MAX_SHORT_CALLS,
    health_checked: bool = True,
    tls_ca: str = "",
) -> str:
    """A STATIC cluster (envoy/cluster.yaml.tmpl) of gRPC servers at addresses (host:port), health-checked unless
    told not, with two budgets (circuit breakers): calls that may wait use DEFAULT's, calls that never wait HIGH's.
    With tls_ca (a CA file) it speaks TLS and trusts only certificates that CA signed for the first address's
    host."""
    endpoints = "".join(
        _render("cluster_endpoint.yaml.tmpl", host=host, port=port)
        for host, port in (a.rsplit(":", 1) for a in addresses)
    )
    return _render(
        "cluster.yaml.tmpl",
        name=name,
        endpoints=endpoints,
        transport_socket=_cluster_tls(tls_ca, addresses[0].rsplit(":", 1)[0]) if tls_ca else "",
        health_checks=_render("cluster_health_checks.yaml.tmpl") if health_checked else "",
        max_waiting_calls=max_waiting_calls,
        max_short_calls=max_short_calls,
    )


def _cluster_tls(ca_file: str, host: str) -> str:
    """A cluster's TLS (envoy/cluster_tls.yaml.tmpl): certificates chained to ca_file and made out to host (a DNS
    name, also asked for by SNI, or an IP address)."""
    bare = host.strip("[]")
    try:
        ipaddress.ip_address(bare)
        kind = "IP_ADDRESS"
    except ValueError:
        kind = "DNS"
    return _render(
        "cluster_tls.yaml.tmpl",
        ca_file=json.dumps(str(Path(ca_file).resolve())),
        san_type=kind,
        host=json.dumps(bare),
        sni=_render("cluster_tls_sni.yaml.tmpl", host=json.dumps(bare)) if kind == "DNS" else "",
    )


def _listener_tls(certificate: str, key: str) -> str:
    """The public listener's TLS (envoy/listener_tls.yaml.tmpl), serving the certificate chain and key files."""
    return _render("listener_tls.yaml.tmpl", certificate=json.dumps(certificate), key=json.dumps(key))


def _host_port(url: str) -> str:
    """host:port of an OTLP endpoint URL (or bare host[:port]); the port is OTLP/gRPC's 4317 when not given."""
    parsed = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    return f"{parsed.hostname}:{parsed.port or 4317}"
