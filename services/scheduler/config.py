"""Settings of the scheduler, read once from the environment."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from cortado import _resultobjects
from cortado._auth import is_loopback_host
from cortado._env import Env, ServiceSettings, SettingsError
from cortado._tls import TlsError, load_server_pair
from cortado.webhooks import UrlPolicy
from services.webhooks import stream as webhooks_stream

MIN_TOKEN_LENGTH = 32
"""Fewest characters a scheduler token may have: the token guards deploying code, so it must not be guessable."""


def _token(env: Env) -> str:
    token = env.text("SCHEDULER_TOKEN", "")
    setting = "CORTADO_SCHEDULER_TOKEN"
    path = env.text("SCHEDULER_TOKEN_FILE", "")
    if not token and path:
        setting = "CORTADO_SCHEDULER_TOKEN_FILE"
        try:
            token = Path(path).read_text().strip()
        except OSError as exc:
            raise SettingsError(f"CORTADO_SCHEDULER_TOKEN_FILE {path!r} cannot be read: {exc.strerror}") from None
    if token and len(token) < MIN_TOKEN_LENGTH:
        raise SettingsError(
            f"{setting}: the scheduler token has {len(token)} characters; use at least {MIN_TOKEN_LENGTH} "
            "(for example `openssl rand -hex 32`)"
        )
    return token


TLS_CERT_SETTING = "CORTADO_SCHEDULER_TLS_CERT"
TLS_KEY_SETTING = "CORTADO_SCHEDULER_TLS_KEY"


def _tls(env: Env) -> tuple[bytes, bytes] | None:
    """The scheduler's (certificate chain, private key), read and checked at start; None when neither is set."""
    cert = env.text("SCHEDULER_TLS_CERT", "")
    key = env.text("SCHEDULER_TLS_KEY", "")
    if not cert and not key:
        return None
    if not cert or not key:
        given, missing = (TLS_CERT_SETTING, TLS_KEY_SETTING) if cert else (TLS_KEY_SETTING, TLS_CERT_SETTING)
        raise SettingsError(f"{given} is set but {missing} is not: the scheduler serves TLS with both or neither")
    try:
        return load_server_pair(cert, key, TLS_CERT_SETTING, TLS_KEY_SETTING)
    except TlsError as exc:
        raise SettingsError(str(exc)) from None


def _is_loopback(address: str) -> bool:
    return is_loopback_host(address.rpartition(":")[0])


@dataclass(frozen=True)
class SchedulerSettings(ServiceSettings):
    """What the scheduler needs to run."""

    token: str
    ack_wait_seconds: float
    reconcile_seconds: float
    autoscale_seconds: float
    lease_seconds: float
    kubernetes_namespace: str
    scheduler_id: str
    tls: tuple[bytes, bytes] | None = field(default=None, repr=False)
    """(certificate chain, private key), PEM, from CORTADO_SCHEDULER_TLS_CERT and _KEY: serve TLS only.
    None: plain text, allowed on a loopback address only."""
    webhook_policy: UrlPolicy = field(default_factory=UrlPolicy)
    """Where webhooks may go (CORTADO_WEBHOOK_ALLOW_HOSTS, _MESH_HOSTS, _MESH_PORTS): a deploy whose `webhook.url`
    it refuses fails. The webhook senders and ingest must be given the same settings."""
    webhooks_max_bytes: int = webhooks_stream.STREAM_MAX_BYTES
    """Byte limit of the webhooks stream, which the scheduler creates at start (CORTADO_WEBHOOKS_MAX_BYTES)."""
    result_sweep_seconds: float = _resultobjects.SWEEP_SECONDS
    """How often the leading scheduler deletes expired large results (CORTADO_RESULT_SWEEP_SECONDS)."""
    traces_url: str = ""
    """Jaeger's web address (CORTADO_CONSOLE_TRACES_URL, such as http://localhost:16686): the console links each
    request to its trace there. Empty: no links."""

    @classmethod
    def from_env(cls, env: Env | None = None) -> SchedulerSettings:
        """Read `CORTADO_*` variables; SettingsError names a malformed one.

        Deploying runs code: listening anywhere but on loopback requires a token, and TLS so that neither the
        token nor the code deployed crosses the network in clear.
        """
        env = env or Env()
        settings = cls._read(env)
        if _is_loopback(settings.address):
            return settings
        if not settings.token:
            raise SettingsError(
                f"the scheduler listens on {settings.address}, not a loopback address: set CORTADO_SCHEDULER_TOKEN "
                "(or CORTADO_SCHEDULER_TOKEN_FILE), which every control-plane call must then present"
            )
        if settings.tls is None:
            raise SettingsError(
                f"the scheduler listens on {settings.address}, not a loopback address: set {TLS_CERT_SETTING} and "
                f"{TLS_KEY_SETTING} (PEM files: its certificate and private key), so that it serves TLS and "
                "neither the token nor the code deployed crosses the network in clear"
            )
        return settings

    @classmethod
    def _read(cls, env: Env) -> SchedulerSettings:
        return cls(
            **cls.common(env, "scheduler"),
            # Empty: no token needed (the default address is loopback only).
            token=_token(env),
            ack_wait_seconds=env.number("ACK_WAIT_SECONDS", 30.0, minimum=1),
            reconcile_seconds=env.number("RECONCILE_SECONDS", 1.0, minimum=0.05),
            # Cortex evaluated every 10 s; an API at zero replicas wakes on its first request regardless.
            autoscale_seconds=env.number("AUTOSCALE_SECONDS", 10.0, minimum=0.1),
            # Several schedulers may run; the lease (held in NATS) picks the one that places and scales.
            lease_seconds=env.number("LEASE_SECONDS", 10.0, minimum=1),
            # In Kubernetes: the namespace where the scheduler keeps a Service api-<name> per API (empty: off).
            kubernetes_namespace=env.text("KUBERNETES_NAMESPACE", ""),
            scheduler_id=env.text("SCHEDULER_ID", f"{socket.gethostname()}-{os.getpid()}"),
            tls=_tls(env),
            webhook_policy=UrlPolicy.from_env(env),
            result_sweep_seconds=env.number("RESULT_SWEEP_SECONDS", _resultobjects.SWEEP_SECONDS, minimum=0.1),
            webhooks_max_bytes=webhooks_stream.stream_max_bytes(env),
            traces_url=env.text("CONSOLE_TRACES_URL", ""),
        )
