"""The `metrics_client` handed to handlers: counters, gauges and histograms with string tags."""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping

RESERVED_PREFIX = "cortado_"
_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

Key = tuple[str, tuple[tuple[str, str], ...]]


class MetricError(ValueError):
    """A metric call was malformed; the message says how."""


class MetricsClient:
    """Records a handler's custom metrics in the handler process (thread-safe).

    Same methods as Cortex's client: `increment(metric, value=1, tags=None)`,
    `gauge(metric, value, tags=None)`, `histogram(metric, value, tags=None)`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[Key, float] = {}
        self.gauges: dict[Key, float] = {}
        self.histograms: dict[Key, list[float]] = {}

    @staticmethod
    def _key(metric: str, value: float, tags: Mapping[str, str] | None) -> Key:
        if not isinstance(metric, str) or not _NAME.match(metric):
            raise MetricError(f"metric name {metric!r} must match [a-zA-Z_][a-zA-Z0-9_]*")
        if metric.startswith(RESERVED_PREFIX):
            raise MetricError(f"metric name {metric!r} uses the prefix {RESERVED_PREFIX!r}, reserved for Cortado")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MetricError(f"metric {metric!r}: value must be a number, got {type(value).__name__}")
        tags = tags or {}
        if not isinstance(tags, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
            raise MetricError(f"metric {metric!r}: tags must be a dict of strings")
        return metric, tuple(sorted(tags.items()))

    def increment(self, metric: str, value: float = 1, tags: Mapping[str, str] | None = None) -> None:
        """Add value to a counter."""
        key = self._key(metric, value, tags)
        with self._lock:
            self.counters[key] = self.counters.get(key, 0) + value

    def gauge(self, metric: str, value: float, tags: Mapping[str, str] | None = None) -> None:
        """Set a gauge."""
        key = self._key(metric, value, tags)
        with self._lock:
            self.gauges[key] = value

    def histogram(self, metric: str, value: float, tags: Mapping[str, str] | None = None) -> None:
        """Record one observation."""
        key = self._key(metric, value, tags)
        with self._lock:
            self.histograms.setdefault(key, []).append(value)
