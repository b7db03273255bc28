"""Where webhooks may go: the URL policy, checked at submit (ingest), at deploy (scheduler) and per attempt (sender).

A webhook URL must not reach the mesh's own services, cloud metadata endpoints or private addresses unless the
operator allows them (CORTADO_WEBHOOK_ALLOW_HOSTS); names are checked as given and again once resolved.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

from cortado._env import Env

ALLOW_SETTING = "CORTADO_WEBHOOK_ALLOW_HOSTS"
"""The operator's setting that lets webhooks go to hosts the policy refuses otherwise."""

MESH_HOSTS_SETTING = "CORTADO_WEBHOOK_MESH_HOSTS"
"""More names of the mesh's own services (beside MESH_HOSTS), which webhooks may not reach."""

MESH_PORTS_SETTING = "CORTADO_WEBHOOK_MESH_PORTS"
"""More ports of the mesh's own processes on loopback (beside MESH_PORTS), which webhooks may not reach."""

MAX_URL_LENGTH = 2048
"""Longest webhook URL, in characters."""

MESH_HOSTS = frozenset(
    {
        "nats",
        "nats-headless",
        "nats-exporter",
        "envoy",
        "ingest",
        "results",
        "scheduler",
        "cortado-scheduler",
        "executor",
        "webhooks",
        "jaeger",
        "prometheus",
        "grafana",
    }
)
"""Names of the mesh's services in docker-compose and Kubernetes (deploy/)."""

MESH_PORTS = frozenset(
    {4222, 6222, 8222, 7777, 8888, 9901, 4317, 4318, 16686, 9090, 3000, *range(9461, 9466), *range(50051, 50056)}
)
"""Default ports of the mesh's processes: NATS (client, cluster, monitoring, exporter), Envoy (public, admin),
OTLP and Jaeger, Prometheus, Grafana, the services' metrics and their gRPC ports."""

METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.com",
        "metadata.tencentyun.com",
        "metadata.platformequinix.com",
    }
)
"""Names cloud providers answer instance metadata (and often credentials) on."""

METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("fd00:ec2::254"),  # AWS, over IPv6
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    }
)
"""Metadata addresses outside the link-local ranges (169.254.169.254 is link-local, refused as such)."""

_CLUSTER_SUFFIXES = (".svc", ".svc.cluster.local", ".cluster.local")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_FORBIDDEN_CHARACTERS = re.compile(r"[\x00-\x20\x7f\\]")
_NUMERIC_HOST = re.compile(r"[0-9a-fx.]+")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class WebhookUrlError(ValueError):
    """A webhook URL the policy refuses; the message says what is wrong and which setting allows it."""


def _parse_allowed(entries: Iterable[str]) -> frozenset[str]:
    """Entries of ALLOW_SETTING as `host` or `host:port` in the form policy checks compare (`*` kept as is)."""
    allowed: set[str] = set()
    for raw in entries:
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            allowed.add(entry)
            continue
        host, port = entry, ""
        if entry.startswith("["):
            host, _, rest = entry[1:].partition("]")
            port = rest.removeprefix(":")
        elif entry.count(":") == 1:
            host, _, port = entry.partition(":")
        host = _canonical_host(host)
        allowed.add(f"{_bracketed(host)}:{port}" if port else host)
    return frozenset(allowed)


@dataclass(frozen=True)
class UrlPolicy:
    """Where webhooks may go: the public internet, never the mesh itself or a cloud metadata service.

    `allowed` holds hosts (`example.internal`, `127.0.0.1`) or `host:port` entries the other rules do not apply
    to; `*` allows every URL with a host. Build it with `UrlPolicy.of(...)` or `UrlPolicy.from_env()`.
    """

    allowed: frozenset[str] = frozenset()
    mesh_hosts: frozenset[str] = MESH_HOSTS
    mesh_ports: frozenset[int] = MESH_PORTS

    @classmethod
    def of(
        cls, allowed: Iterable[str] = (), mesh_hosts: Iterable[str] = (), mesh_ports: Iterable[int] = ()
    ) -> UrlPolicy:
        """A policy allowing `allowed` (as ALLOW_SETTING spells them), refusing the defaults and these hosts/ports."""
        return cls(
            allowed=_parse_allowed(allowed),
            mesh_hosts=MESH_HOSTS | {_canonical_host(h.strip()) for h in mesh_hosts if h.strip()},
            mesh_ports=MESH_PORTS | frozenset(mesh_ports),
        )

    @classmethod
    def from_env(cls, env: Env | None = None) -> UrlPolicy:
        """The policy `CORTADO_WEBHOOK_ALLOW_HOSTS`, `_MESH_HOSTS` and `_MESH_PORTS` (all comma-separated) make.

        Raises SettingsError (env.SettingsError) when a port is not a number from 1 to 65535.
        """
        from cortado._env import SettingsError

        env = env or Env()
        ports: list[int] = []
        for raw in env.text("WEBHOOK_MESH_PORTS", "").split(","):
            if not raw.strip():
                continue
            if not raw.strip().isdigit() or not 0 < int(raw) < 65536:
                raise SettingsError(f"{MESH_PORTS_SETTING} must be comma-separated ports, got {raw.strip()!r}")
            ports.append(int(raw))
        return cls.of(
            allowed=env.text("WEBHOOK_ALLOW_HOSTS", "").split(","),
            mesh_hosts=env.text("WEBHOOK_MESH_HOSTS", "").split(","),
            mesh_ports=ports,
        )

    def allows(self, host: str, port: int | None = None) -> bool:
        """Whether the operator allowed host (in its canonical form), or host on port, explicitly."""
        if "*" in self.allowed or host in self.allowed:
            return True
        return port is not None and f"{_bracketed(host)}:{port}" in self.allowed


def _canonical_host(host: str) -> str:
    """host lower-cased, without a trailing dot, in ASCII (IDNA), an address in its standard form."""
    host = host.strip().lower().rstrip(".")
    address = _literal_address(host)
    if address is not None:
        return str(address)
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise WebhookUrlError(f"webhook URL host {host!r} is not a valid host name") from None
    return host


def _literal_address(host: str) -> IPAddress | None:
    """The address a host written as an address means, as the system resolver reads it (`0x7f.1` included)."""
    candidate = host.strip("[]").split("%", 1)[0]
    try:
        address: IPAddress = ipaddress.ip_address(candidate)
    except ValueError:
        if not _NUMERIC_HOST.fullmatch(candidate) or not any(c.isdigit() for c in candidate):
            return None
        try:
            # inet_aton accepts what getaddrinfo does: `2130706433`, `0x7f000001`, `127.1`.
            address = ipaddress.IPv4Address(socket.inet_aton(candidate))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _first_label(host: str) -> str | None:
    """The service name a host names inside a cluster (`ingest`, `ingest.ns.svc.cluster.local`), else None."""
    if "." not in host:
        return host
    for suffix in _CLUSTER_SUFFIXES:
        if host.endswith(suffix):
            return host.split(".", 1)[0]
    return None


def _is_loopback(address: IPAddress) -> bool:
    # Connecting to 0.0.0.0 or :: reaches this machine's own listeners, as loopback does.
    return address.is_loopback or address.is_unspecified


def _refuse(what: str, allow: str) -> WebhookUrlError:
    return WebhookUrlError(f"{what}; set {ALLOW_SETTING}={allow} to allow it")


def _check_address(host: str, address: IPAddress, port: int, policy: UrlPolicy, resolved: bool) -> None:
    if policy.allows(str(address), port):
        return
    shown = f"webhook URL host {host} resolves to {address}, which is" if resolved else f"webhook URL host {host} is"
    if address.is_link_local:
        raise _refuse(f"{shown} a link-local address (169.254.0.0/16, fe80::/10), where cloud metadata answers", host)
    if address in METADATA_ADDRESSES:
        raise _refuse(f"{shown} a cloud metadata address", host)
    if _is_loopback(address) and port in policy.mesh_ports:
        kind = "a loopback address" if address.is_loopback else "an address of this machine"
        raise _refuse(f"{shown} {kind} on port {port}, a port of the mesh itself", f"{_bracketed(host)}:{port}")


def check_url(url: str, policy: UrlPolicy) -> str:
    """The URL normalised (scheme and host lower-cased, default port and fragment dropped), if policy allows it.

    Raises WebhookUrlError, whose message says what is wrong (and, where the operator may allow it, which
    setting does), when: it is longer than MAX_URL_LENGTH; it is not http or https; it has no host; it holds
    spaces, control characters or backslashes; it names a link-local address, a cloud metadata name or
    address, a service of the mesh (`api-<name>`, or one of policy.mesh_hosts, alone or under `.svc`), or a
    loopback address (`localhost` included) on one of policy.mesh_ports. Hosts in policy.allowed skip the last
    rules. A name is checked as written: check_resolved checks the addresses it resolves to when sending.
    """
    if len(url) > MAX_URL_LENGTH:
        raise WebhookUrlError(f"webhook URL is {len(url)} characters long; at most {MAX_URL_LENGTH} are allowed")
    if _FORBIDDEN_CHARACTERS.search(url):
        raise WebhookUrlError("webhook URL may not contain spaces, control characters or backslashes")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookUrlError(f"webhook URL is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise WebhookUrlError(f"webhook URL must start with http:// or https://, got scheme {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise WebhookUrlError("webhook URL has no host")
    host = _canonical_host(urllib.parse.unquote(parts.hostname))
    if not host:
        raise WebhookUrlError("webhook URL has no host")
    effective_port = port or _DEFAULT_PORTS[scheme]
    if not policy.allows(host, effective_port):
        address = _literal_address(host)
        if address is not None:
            _check_address(host, address, effective_port, policy, resolved=False)
        else:
            _check_name(host, effective_port, policy)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (f"{userinfo}@" if userinfo else "") + _bracketed(host)
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    return urllib.parse.urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def _check_name(host: str, port: int, policy: UrlPolicy) -> None:
    if host in METADATA_HOSTS:
        raise _refuse(f"webhook URL host {host} is a cloud metadata service", host)
    if host == "localhost" or host.endswith(".localhost"):
        if port in policy.mesh_ports:
            what = f"webhook URL host {host} is loopback on port {port}, a port of the mesh itself"
            raise _refuse(what, f"{host}:{port}")
        return
    label = _first_label(host)
    if label is None:
        return
    if label.startswith("api-"):
        raise _refuse(f"webhook URL host {host} is an API of the mesh itself (api-<name>)", host)
    if label in policy.mesh_hosts:
        raise _refuse(f"webhook URL host {host} is a service of the mesh itself", host)


def check_resolved(host: str, addresses: Iterable[str], policy: UrlPolicy, port: int | None = None) -> None:
    """Refuse sending to host when an address it resolved to is link-local, a cloud metadata address, or (with
    port) loopback on one of policy.mesh_ports: DNS can point a harmless name anywhere.

    Raises WebhookUrlError naming the address and the setting that allows it; the host (or host:port, or the
    address itself) in policy.allowed skips the check.
    """
    host = _canonical_host(host)
    if policy.allows(host, port):
        return
    for text in addresses:
        address = _literal_address(text)
        if address is None:
            raise WebhookUrlError(f"webhook URL host {host} resolves to {text!r}, which is not an address")
        _check_address(host, address, port or 0, policy, resolved=True)
