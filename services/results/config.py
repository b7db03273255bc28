"""Settings of the results service, read once from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from cortado.env import Env
from cortado.waiting import max_wait_seconds, max_watch_seconds


@dataclass(frozen=True)
class ResultsSettings:
    """What the results service needs to run."""

    nats_url: str
    address: str
    max_wait_seconds: float
    max_watch_seconds: float
    grace_seconds: float
    metrics_address: str

    @classmethod
    def from_env(cls, env: Env | None = None) -> ResultsSettings:
        """Read `CORTADO_*` variables; SettingsError names a malformed one."""
        env = env or Env()
        return cls(
            nats_url=env.text("NATS_URL", "nats://127.0.0.1:4222"),
            address=env.text("RESULTS_ADDRESS", "127.0.0.1:50052"),
            max_wait_seconds=max_wait_seconds(env),
            max_watch_seconds=max_watch_seconds(env),
            grace_seconds=env.number("GRACE_SECONDS", 10.0, minimum=0),
            # Prometheus metrics (host:port; empty: not served).
            metrics_address=env.text("METRICS_ADDRESS", "127.0.0.1:9462"),
        )
