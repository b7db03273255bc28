"""Typed reading of `CORTADO_*` environment settings that fails fast with a clear message, and the settings
every service shares."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PREFIX = "CORTADO_"


class SettingsError(Exception):
    """A setting in the environment is malformed; the message names the variable."""


class Env:
    """Reads settings named `CORTADO_<NAME>` from a mapping (the process environment by default)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def text(self, name: str, default: str) -> str:
        """The variable's value, or default when unset or empty."""
        return self._environ.get(PREFIX + name) or default

    def integer(self, name: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
        """The variable as an integer; SettingsError if it is not one or is below minimum or above maximum."""
        raw = self._environ.get(PREFIX + name)
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{PREFIX}{name} must be an integer, got {raw!r}") from None
        if minimum is not None and value < minimum:
            raise SettingsError(f"{PREFIX}{name} must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise SettingsError(f"{PREFIX}{name} must be at most {maximum}, got {value}")
        return value

    def number(self, name: str, default: float, minimum: float | None = None) -> float:
        """The variable as a number; SettingsError if it is not one or is below minimum."""
        raw = self._environ.get(PREFIX + name)
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{PREFIX}{name} must be a number, got {raw!r}") from None
        if minimum is not None and value < minimum:
            raise SettingsError(f"{PREFIX}{name} must be at least {minimum}, got {value}")
        return value

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        """The variable's value, one of allowed; SettingsError naming the allowed values otherwise."""
        value = self.text(name, default)
        if value not in allowed:
            raise SettingsError(f"{PREFIX}{name} must be one of {', '.join(allowed)}, got {value!r}")
        return value


@dataclass(frozen=True)
class ServiceDefaults:
    """Where a service listens by default: its gRPC port, its metrics port, and its stop grace."""

    port: int
    metrics_port: int
    grace_seconds: float = 10.0


SERVICE_DEFAULTS: dict[str, ServiceDefaults] = {
    "ingest": ServiceDefaults(50051, 9461),
    "results": ServiceDefaults(50052, 9462),
    "scheduler": ServiceDefaults(50053, 9463),
    "executor": ServiceDefaults(50054, 9464, grace_seconds=30.0),
    "webhooks": ServiceDefaults(50055, 9465),
}
"""Each service's defaults, in one place (the local mesh sets every address explicitly)."""


@dataclass(frozen=True)
class ServiceSettings:
    """What every service reads; each service's settings add their own fields to these."""

    nats_url: str
    """CORTADO_NATS_URL (nats://127.0.0.1:4222): the NATS server(s), comma-separated; the user and password come
    from CORTADO_NATS_USER and CORTADO_NATS_PASSWORD_FILE."""
    address: str
    """CORTADO_<SERVICE>_ADDRESS (127.0.0.1 and the service's port): where its gRPC services and health are served."""
    grace_seconds: float
    """CORTADO_GRACE_SECONDS: on SIGTERM, how long calls and work under way may go on (each stop step too)."""
    metrics_address: str
    """CORTADO_METRICS_ADDRESS (127.0.0.1 and the service's metrics port): where Prometheus metrics are served
    (host:port; empty: nowhere)."""

    @staticmethod
    def common(env: Env, service: str) -> dict[str, Any]:
        """The fields above, read from env with `service`'s defaults (SERVICE_DEFAULTS); SettingsError names a
        malformed one."""
        defaults = SERVICE_DEFAULTS[service]
        return {
            "nats_url": env.text("NATS_URL", "nats://127.0.0.1:4222"),
            "address": env.text(f"{service.upper()}_ADDRESS", f"127.0.0.1:{defaults.port}"),
            "grace_seconds": env.number("GRACE_SECONDS", defaults.grace_seconds, minimum=0),
            "metrics_address": env.text("METRICS_ADDRESS", f"127.0.0.1:{defaults.metrics_port}"),
        }
