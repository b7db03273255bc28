"""Settings of the webhook sender, read once from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from cortado import webhooks
from cortado._env import Env, ServiceSettings
from services.webhooks import stream


@dataclass(frozen=True)
class WebhookSettings(ServiceSettings):
    """What the webhook sender needs to run: each field names its `CORTADO_*` setting and its default.

    Of the shared settings: CORTADO_WEBHOOKS_ADDRESS (127.0.0.1:50055) serves gRPC health checking only;
    CORTADO_METRICS_ADDRESS (127.0.0.1:9465) has `cortado_webhook_attempts_total{api, outcome}` among its
    metrics; CORTADO_GRACE_SECONDS (10) is how long the attempts under way may go on after SIGTERM (a job cut
    short goes to another sender after the ack wait).
    """

    policy: webhooks.UrlPolicy
    """CORTADO_WEBHOOK_ALLOW_HOSTS (none), CORTADO_WEBHOOK_MESH_HOSTS (none), CORTADO_WEBHOOK_MESH_PORTS (none), all
    comma-separated: where webhooks may go (cortado.webhooks.UrlPolicy). Ingest and the scheduler read the same
    settings, and must be given the same values."""
    retry_seconds: float
    """CORTADO_WEBHOOK_RETRY_SECONDS (86400, a day): how long after a webhook's first attempt a failed one is tried
    again; past it, the sender gives up (`gave_up`)."""
    timeout_seconds: float
    """CORTADO_WEBHOOK_TIMEOUT_SECONDS (10): how long one attempt may take, from connecting to reading the start of
    the answer."""
    concurrency: int
    """CORTADO_WEBHOOK_CONCURRENCY (32, 1 to 10000): webhooks one sender delivers at once."""
    first_retry_seconds: float
    """CORTADO_WEBHOOK_FIRST_RETRY_SECONDS (1): longest wait after a first failed attempt; each later wait may
    double, up to max_retry_seconds (each wait is drawn from the upper half of its ceiling)."""
    max_retry_seconds: float
    """CORTADO_WEBHOOK_MAX_RETRY_SECONDS (3600): longest wait between two attempts."""
    stream_max_bytes: int
    """CORTADO_WEBHOOKS_MAX_BYTES (256 MiB): byte limit the webhooks stream is created with (by the scheduler at
    start, or the sender if it comes first); a full stream refuses new jobs."""

    @classmethod
    def from_env(cls, env: Env | None = None) -> WebhookSettings:
        """Read `CORTADO_*` variables; SettingsError names a malformed one."""
        env = env or Env()
        return cls(
            **cls.common(env, "webhooks"),
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
