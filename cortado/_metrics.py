"""Prometheus metrics: Cortado's built-in ones and the `metrics_client` handed to handlers.

Handler processes write their metrics in prometheus_client's multiprocess mode
(`PROMETHEUS_MULTIPROC_DIR`, set by the executor), and the executor serves them,
summed across its handler processes, on its own metrics endpoint.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

RESERVED_PREFIX = "cortado_"
_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

# Seconds: from a millisecond handler to a long GPU job.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

# Built-in metrics. Every service imports this module, but each only updates its own.
REQUESTS_SUBMITTED = Counter("cortado_requests_submitted", "Requests accepted by ingest (answered 200).", ["api"])
REQUESTS_REJECTED = Counter("cortado_requests_rejected", "Submissions refused by ingest, by reason.", ["api", "reason"])
QUEUE_LENGTH = Gauge(
    "cortado_queue_length", "Requests waiting in the API's queue (not yet delivered).", ["api"], multiprocess_mode="max"
)
QUEUE_BY_PRIORITY = Gauge(
    "cortado_queue_length_by_priority",
    "Requests waiting in the API's queue (not yet delivered), by priority (high, normal, low).",
    ["api", "priority"],
    multiprocess_mode="max",
)
IN_FLIGHT = Gauge(
    "cortado_in_flight",
    "Requests delivered to a handler process and not yet finished.",
    ["api"],
    multiprocess_mode="max",
)
REPLICAS = Gauge(
    "cortado_replicas", "Replicas of the API, desired and ready.", ["api", "state"], multiprocess_mode="max"
)
QUEUE_WAIT = Histogram(
    "cortado_queue_wait_seconds", "Time from submission to the handler starting.", ["api"], buckets=LATENCY_BUCKETS
)
HANDLER_DURATION = Histogram(
    "cortado_handler_duration_seconds", "Time the handler ran, per request.", ["api"], buckets=LATENCY_BUCKETS
)
END_TO_END = Histogram(
    "cortado_request_duration_seconds",
    "Time from submission to the final record (end-to-end latency).",
    ["api"],
    buckets=LATENCY_BUCKETS,
)
REQUESTS_FINISHED = Counter("cortado_requests_finished", "Requests that reached a final status.", ["api", "status"])
FAILURES = Counter(
    "cortado_requests_failed",
    "Failed requests by kind: the exception's class, InvalidResult, TimedOut or HandlerProcessDied.",
    ["api", "kind"],
)
SCALING_DECISIONS = Counter(
    "cortado_scaling_decisions", "Autoscaler decisions that changed an API's replica count.", ["api", "direction"]
)

BUILTIN_METRICS = (
    "cortado_requests_submitted_total",
    "cortado_requests_rejected_total",
    "cortado_queue_length",
    "cortado_queue_length_by_priority",
    "cortado_in_flight",
    "cortado_replicas",
    "cortado_queue_wait_seconds",
    "cortado_handler_duration_seconds",
    "cortado_request_duration_seconds",
    "cortado_requests_finished_total",
    "cortado_requests_failed_total",
    "cortado_scaling_decisions_total",
    "cortado_webhook_attempts_total",
    "cortado_grpc_server_handled_total",
    "cortado_grpc_server_handling_seconds",
    "cortado_nats_client_messages_total",
    "cortado_nats_client_bytes_total",
    "cortado_nats_client_reconnects_total",
)
"""Names as Prometheus exposes them (counters get `_total`); the shipped Grafana dashboard uses these."""


class MetricError(ValueError):
    """A metric call was malformed; the message says how."""


class MetricsClient:
    """Custom metrics of one API's handler, labelled with the API: Cortex's three methods.

    `increment(metric, value=1, tags=None)`, `gauge(metric, value, tags=None)`,
    `histogram(metric, value, tags=None)`; tags are a dict of strings and become
    labels. A metric keeps the tag names of its first use.
    """

    # Prometheus allows one metric per name in a process: clients share them.
    _lock = threading.Lock()
    _metrics: dict[str, tuple[str, tuple[str, ...], Any]] = {}

    def __init__(self, api: str) -> None:
        self._api = api

    def _metric(self, kind: str, metric: str, value: float, tags: Mapping[str, str] | None) -> Any:
        if not isinstance(metric, str) or not _NAME.match(metric):
            raise MetricError(f"metric name {metric!r} must match [a-zA-Z_][a-zA-Z0-9_]*")
        if metric.startswith(RESERVED_PREFIX):
            raise MetricError(f"metric name {metric!r} uses the prefix {RESERVED_PREFIX!r}, reserved for Cortado")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MetricError(f"metric {metric!r}: value must be a number, got {type(value).__name__}")
        tags = dict(tags or {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
            raise MetricError(f"metric {metric!r}: tags must be a dict of strings")
        if "api" in tags or not all(_NAME.match(k) and not k.startswith("__") for k in tags):
            raise MetricError(f"metric {metric!r}: tag names must match [a-zA-Z_][a-zA-Z0-9_]* and not be 'api'")
        names = tuple(sorted(tags))
        with self._lock:
            known = self._metrics.get(metric)
            if known is None:
                labels = ("api", *names)
                if kind == "counter":
                    made: Any = Counter(metric, f"{metric} (custom, from the handler)", labels)
                elif kind == "gauge":
                    made = Gauge(metric, f"{metric} (custom, from the handler)", labels, multiprocess_mode="mostrecent")
                else:
                    made = Histogram(metric, f"{metric} (custom, from the handler)", labels, buckets=LATENCY_BUCKETS)
                known = self._metrics[metric] = (kind, names, made)
        if known[0] != kind:
            raise MetricError(f"metric {metric!r} is a {known[0]}; it cannot also be used as a {kind}")
        if known[1] != names:
            raise MetricError(f"metric {metric!r} was first used with tags {list(known[1])}, now with {list(names)}")
        return known[2].labels(self._api, *(tags[n] for n in names))

    def increment(self, metric: str, value: float = 1, tags: Mapping[str, str] | None = None) -> None:
        """Add value to a counter."""
        self._metric("counter", metric, value, tags).inc(value)

    def gauge(self, metric: str, value: float, tags: Mapping[str, str] | None = None) -> None:
        """Set a gauge."""
        self._metric("gauge", metric, value, tags).set(value)

    def histogram(self, metric: str, value: float, tags: Mapping[str, str] | None = None) -> None:
        """Record one observation."""
        self._metric("histogram", metric, value, tags).observe(value)
