"""Retry back-off and where a webhook's delivery stands: each attempt applied to the record's delivery state."""

from __future__ import annotations

import random
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from cortado.v1 import records_pb2

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


def timestamp_seconds(ts: Timestamp) -> float:
    """A Timestamp as Unix seconds."""
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
    if attempt.at - timestamp_seconds(delivery.first_attempt_at) > retry_seconds:
        delivery.state = records_pb2.WEBHOOK_STATE_GAVE_UP
        return GAVE_UP
    delivery.state = records_pb2.WEBHOOK_STATE_PENDING
    return FAILED
