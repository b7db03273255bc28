"""The webhooks stream and its consumer: what the senders pull from, and what the scheduler creates at start.

Kept apart from the sender (no HTTP client here), so the scheduler can create the stream without loading it.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from cortado import _names, _nats
from cortado._env import Env

STREAM_MAX_BYTES = 256 * 1024**2
"""Default byte limit of the webhooks stream (CORTADO_WEBHOOKS_MAX_BYTES): a job is some 100 bytes."""


def stream_max_bytes(env: Env | None = None) -> int:
    """The byte limit the webhooks stream is created with: CORTADO_WEBHOOKS_MAX_BYTES, else STREAM_MAX_BYTES."""
    return (env or Env()).integer("WEBHOOKS_MAX_BYTES", STREAM_MAX_BYTES, minimum=1024)


def stream_config(max_bytes: int) -> StreamConfig:
    """The webhooks stream: a work queue of jobs, one per request (its Nats-Msg-Id drops a retried publish).

    A full stream refuses new jobs (the publisher sees it) rather than dropping waiting ones.
    """
    return StreamConfig(
        name=_names.WEBHOOKS_STREAM,
        subjects=[_names.WEBHOOK_SUBJECTS],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        max_bytes=max_bytes,
        discard=DiscardPolicy.NEW,
        num_replicas=_nats.replicas(),
    )


def consumer_config(ack_wait_seconds: float) -> ConsumerConfig:
    """The senders' durable pull consumer: every job redelivered until acked, however often."""
    return ConsumerConfig(
        durable_name=_names.WEBHOOKS_CONSUMER,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait_seconds,
        max_deliver=-1,
        # A job waiting for its next retry (naked with a delay) counts as pending: no cap, or webhooks in
        # back-off would hold up the others.
        max_ack_pending=-1,
    )


async def ensure_stream(js: JetStreamContext, max_bytes: int) -> None:
    """Create the webhooks stream if it does not exist yet (retried while JetStream starts)."""
    await _nats.while_jetstream_starts(
        _names.WEBHOOKS_STREAM, lambda: _nats.ensure_stream(js, stream_config(max_bytes))
    )
