"""Settings of the webhook sender, read once from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from cortado import webhooks
from cortado.env import Env
from services.webhooks import stream


@dataclass(frozen=True)
class WebhookSettings:
    """What the webhook sender needs to run."""

    nats_url: str
    address: str
    """Where gRPC health checking is served (the sender has no other gRPC service)."""
    metrics_address: str
    grace_seconds: float
    policy: webhooks.UrlPolicy
    retry_seconds: float
    """How long after a webhook's first attempt a failed one is tried again; past it, the sender gives up."""
    timeout_seconds: float
    """How long one attempt may take, from connecting to reading the start of the answer."""
    concurrency: int
    """Webhooks delivered at once."""
    first_retry_seconds: float
    """Longest wait after a first failed attempt; each later wait may double, up to max_retry_seconds."""
    max_retry_seconds: float
    stream_max_bytes: int
    """Byte limit the webhooks stream is created with (when the sender is the first to need it)."""

    @classmethod
    def from_env(cls, env: Env | None = None) -> WebhookSettings:
        """Read `CORTADO_*` variables; SettingsError names a malformed one."""
        env = env or Env()
        return cls(
            nats_url=env.text("NATS_URL", "nats://127.0.0.1:4222"),
            address=env.text("WEBHOOKS_ADDRESS", "127.0.0.1:50055"),
            # Prometheus metrics (host:port; empty: not served).
            metrics_address=env.text("METRICS_ADDRESS", "127.0.0.1:9465"),
            grace_seconds=env.number("GRACE_SECONDS", 10.0, minimum=0),
            policy=webhooks.UrlPolicy.from_env(env),
            retry_seconds=env.number("WEBHOOK_RETRY_SECONDS", 86400.0, minimum=0),
            timeout_seconds=env.number("WEBHOOK_TIMEOUT_SECONDS", 10.0, minimum=0.1),
            concurrency=env.integer("WEBHOOK_CONCURRENCY", 32, minimum=1, maximum=10000),
            first_retry_seconds=env.number("WEBHOOK_FIRST_RETRY_SECONDS", webhooks.FIRST_RETRY_SECONDS, minimum=0.01),
            max_retry_seconds=env.number("WEBHOOK_MAX_RETRY_SECONDS", webhooks.MAX_RETRY_SECONDS, minimum=0.01),
            stream_max_bytes=stream.stream_max_bytes(env),
        )

    @property
    def ack_wait_seconds(self) -> float:
        """How long JetStream waits for a job's ack before handing it to another sender: an attempt, its record
        write and room to spare (a sender that dies mid-attempt delays that webhook by this much)."""
        return max(60.0, 3 * self.timeout_seconds + 30.0)
