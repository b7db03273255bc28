"""Webhooks: Standard Webhooks signatures, the policy on where they may go, retry back-off and delivery state.

Pure logic, no I/O: the webhook sender (`services.webhooks`) and ingest (which checks a request's own URL at
submit) share it. A webhook is the request's final JSON, POSTed with the headers of the Standard Webhooks
specification (https://www.standardwebhooks.com/): `webhook-id` (the request id, the same on every retry),
`webhook-timestamp` and `webhook-signature`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import math
import random
import re
import secrets as _secrets
import socket
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from cortado.env import Env
from cortado.v1 import control_pb2, records_pb2

SECRET_PREFIX = "whsec_"
"""What every signing secret starts with; base64 of the key's bytes follows."""

SECRET_BYTES = 32
"""Random bytes in a new secret (the specification asks for 24 to 64)."""

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
_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# Secrets and signatures ------------------------------------------------------------------------------------------


def new_secret() -> str:
    """A new random signing secret: `whsec_` and the base64 of SECRET_BYTES random bytes."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret (the base64 after `whsec_` decoded); ValueError if it is not one."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise ValueError("a webhook secret must be `whsec_` followed by base64") from None
    if not key:
        raise ValueError("a webhook secret may not be empty")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature, `v1,<base64 of HMAC-SHA256 over "<msg_id>.<timestamp>.<body>">`; ValueError on a bad secret."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_headers(secrets: list[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers of a message: `webhook-id`, `webhook-timestamp` and `webhook-signature`.

    The signature header holds one signature per secret, in order, separated by spaces: a receiver that knows
    any one of them verifies the message (that is how a rotated secret keeps working for a while). msg_id must
    stay the same on every retry of one message, so receivers can drop duplicates. Raises ValueError when there
    is no secret or one is malformed.
    """
    if not secrets:
        raise ValueError("a webhook needs at least one signing secret")
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets),
    }


def active_secrets(stored: control_pb2.WebhookSecrets, now: float) -> list[str]:
    """The secrets to sign with at now (Unix seconds): the current one, then the previous one until previous_until."""
    found = [stored.current] if stored.current else []
    if stored.previous and stored.HasField("previous_until") and _seconds(stored.previous_until) > now:
        found.append(stored.previous)
    return found


# Where webhooks may go --------------------------------------------------------------------------------------------


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
        from cortado.env import SettingsError

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


# Retries -----------------------------------------------------------------------------------------------------------

FIRST_RETRY_SECONDS = 1.0
"""Longest wait after a first failed attempt (CORTADO_WEBHOOK_FIRST_RETRY_SECONDS)."""

MAX_RETRY_SECONDS = 3600.0
"""Longest wait between two attempts."""


def retry_delay(
    attempts: int,
    rng: random.Random | None = None,
    *,
    first: float = FIRST_RETRY_SECONDS,
    cap: float = MAX_RETRY_SECONDS,
) -> float:
    """Seconds to wait after `attempts` failed attempts: exponential back-off with equal jitter.

    The ceiling doubles with each attempt, `first * 2**(attempts - 1)`, up to cap; the delay is drawn uniformly
    from the upper half of it, [ceiling / 2, ceiling], so retries spread out but never come sooner than half the
    ceiling. With the defaults (first 1 s, cap 1 h) the ceilings are 1, 2, 4, ... 2048 s, then 1 h: 12 attempts
    in the first hour or so (51 minutes on average), then one every 30 to 60 minutes, some 40 in a day.
    attempts below 1 count as 1.
    """
    exponent = max(1, attempts) - 1
    # 2**exponent overflows a float past ~1024: the cap is reached long before.
    ceiling = cap if exponent >= 64 else min(cap, first * 2.0**exponent)
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


# Delivery state ---------------------------------------------------------------------------------------------------

FINISHED_STATES = frozenset(
    {records_pb2.WEBHOOK_STATE_DELIVERED, records_pb2.WEBHOOK_STATE_GAVE_UP, records_pb2.WEBHOOK_STATE_STOPPED}
)
"""Delivery states after which no attempt is made."""

STATE_NAMES = {
    records_pb2.WEBHOOK_STATE_PENDING: "pending",
    records_pb2.WEBHOOK_STATE_DELIVERED: "delivered",
    records_pb2.WEBHOOK_STATE_GAVE_UP: "gave_up",
    records_pb2.WEBHOOK_STATE_STOPPED: "stopped",
}
"""How the CLI names each delivery state."""

DELIVERED = "delivered"
FAILED = "failed"
GONE = "gone"
GAVE_UP = "gave_up"
REFUSED = "refused"
OUTCOMES = (DELIVERED, FAILED, GONE, GAVE_UP, REFUSED)
"""What an attempt came to, as the `outcome` label of `cortado_webhook_attempts_total` says it."""


@dataclass(frozen=True)
class Attempt:
    """What one attempt came to: DELIVERED (2xx), GONE (410), REFUSED (the policy refused the URL) or FAILED, when
    (Unix seconds), and why it failed (`HTTP 500: <the start of the answer>`, a connection error)."""

    outcome: str
    at: float
    error: str = ""


def _seconds(ts: Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def _timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.seconds, ts.nanos = divmod(round(seconds * 1e9), 1_000_000_000)
    return ts


def apply_attempt(delivery: records_pb2.WebhookDelivery, attempt: Attempt, retry_seconds: float) -> str | None:
    """Record attempt in delivery (changed in place) and answer the outcome to count (one of OUTCOMES).

    A POST made (delivered, gone, failed) counts one more attempt and sets first_attempt_at (once) and
    last_attempt_at; a refused URL makes no POST and counts none. DELIVERED clears last_error; GONE and REFUSED
    stop delivery (STOPPED); a failure leaves it PENDING unless more than retry_seconds passed since the first
    attempt, which gives up (GAVE_UP, outcome `gave_up`). A delivery already finished is left as it is and None
    answered, so a duplicate attempt never undoes a result.
    """
    if delivery.state in FINISHED_STATES:
        return None
    delivery.last_error = attempt.error
    if attempt.outcome == REFUSED:
        delivery.state = records_pb2.WEBHOOK_STATE_STOPPED
        return REFUSED
    delivery.attempts += 1
    if not delivery.HasField("first_attempt_at"):
        delivery.first_attempt_at.CopyFrom(_timestamp(attempt.at))
    delivery.last_attempt_at.CopyFrom(_timestamp(attempt.at))
    if attempt.outcome == DELIVERED:
        delivery.state = records_pb2.WEBHOOK_STATE_DELIVERED
        delivery.last_error = ""
        return DELIVERED
    if attempt.outcome == GONE:
        delivery.state = records_pb2.WEBHOOK_STATE_STOPPED
        return GONE
    if attempt.at - _seconds(delivery.first_attempt_at) > retry_seconds:
        delivery.state = records_pb2.WEBHOOK_STATE_GAVE_UP
        return GAVE_UP
    delivery.state = records_pb2.WEBHOOK_STATE_PENDING
    return FAILED


def parse_ttl(header: str | None) -> float | None:
    """Seconds a `Nats-TTL` header value says (`3600`, `1h30m`, `90s`); None for none, `never` or a bad value."""
    if not header or header.strip() == "never":
        return None
    text = header.strip()
    if text.isdigit():
        return float(text)
    pieces = _GO_DURATION.findall(text)
    if not pieces or "".join(n + u for n, u in pieces) != text:
        return None
    return math.fsum(float(n) * _DURATION_UNITS[u] for n, u in pieces)
