"""Settings of the scheduler, read once from the environment."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from cortado.env import Env


@dataclass(frozen=True)
class SchedulerSettings:
    """What the scheduler needs to run."""

    nats_url: str
    address: str
    token: str
    ack_wait_seconds: float
    reconcile_seconds: float
    autoscale_seconds: float
    lease_seconds: float
    kubernetes_namespace: str
    scheduler_id: str
    grace_seconds: float
    metrics_address: str

    @classmethod
    def from_env(cls, env: Env | None = None) -> SchedulerSettings:
        """Read `CORTADO_*` variables; SettingsError names a malformed one."""
        env = env or Env()
        return cls(
            nats_url=env.text("NATS_URL", "nats://127.0.0.1:4222"),
            address=env.text("SCHEDULER_ADDRESS", "127.0.0.1:50053"),
            # Empty: no token needed (the default address is loopback only).
            token=env.text("SCHEDULER_TOKEN", ""),
            ack_wait_seconds=env.number("ACK_WAIT_SECONDS", 30.0, minimum=1),
            reconcile_seconds=env.number("RECONCILE_SECONDS", 1.0, minimum=0.05),
            # Cortex evaluated every 10 s; an API at zero replicas wakes on its first request regardless.
            autoscale_seconds=env.number("AUTOSCALE_SECONDS", 10.0, minimum=0.1),
            # Several schedulers may run; the lease (held in NATS) picks the one that places and scales.
            lease_seconds=env.number("LEASE_SECONDS", 10.0, minimum=1),
            # In Kubernetes: the namespace where the scheduler keeps a Service api-<name> per API (empty: off).
            kubernetes_namespace=env.text("KUBERNETES_NAMESPACE", ""),
            scheduler_id=env.text("SCHEDULER_ID", f"{socket.gethostname()}-{os.getpid()}"),
            grace_seconds=env.number("GRACE_SECONDS", 10.0, minimum=0),
            # Prometheus metrics (host:port; empty: not served).
            metrics_address=env.text("METRICS_ADDRESS", "127.0.0.1:9463"),
        )
