"""The services the local mesh runs and how each is launched: one table of their modules, in start order, and the
settings they take from the environment the mesh runs in."""

from __future__ import annotations

import sys

SERVICE_MODULES: dict[str, str] = {
    "scheduler": "services.scheduler",
    "ingest": "services.ingest",
    "results": "services.results",
    "executor": "services.executor",
    "webhooks": "services.webhooks",
}
"""Each service's module (of the `services` package, installed with the project), in the order they start."""

SERVICES = tuple(SERVICE_MODULES)
"""The services, in the order they start; each connects to NATS as the user of its name (cortado._natsauth)."""


def service_command(service: str) -> list[str]:
    """The command line of an instance of service (a name in SERVICES): this Python running its module from the
    installed packages. `-P` leaves the working folder off sys.path, so a `services/` folder there (a checkout's)
    cannot stand in for the installed one."""
    return [sys.executable, "-P", "-m", SERVICE_MODULES[service]]


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
