"""The metrics_client handed to handlers: Cortex's three methods, Prometheus metrics, clear errors."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client import REGISTRY

from cortado._metrics import MetricError, MetricsClient


def name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def test_counters_gauges_and_histograms_become_prometheus_metrics_labelled_by_api_and_tags() -> None:
    client = MetricsClient("iris")
    counter, gauge, histogram = name("predictions"), name("queue_size"), name("latency")
    client.increment(counter, 2, tags={"label": "cat"})
    client.increment(counter, tags={"label": "cat"})
    client.increment(counter, tags={"label": "dog"})
    client.gauge(gauge, 7)
    client.gauge(gauge, 5)
    client.histogram(histogram, 0.5)
    client.histogram(histogram, 1.5)
    assert REGISTRY.get_sample_value(f"{counter}_total", {"api": "iris", "label": "cat"}) == 3
    assert REGISTRY.get_sample_value(f"{counter}_total", {"api": "iris", "label": "dog"}) == 1
    assert REGISTRY.get_sample_value(gauge, {"api": "iris"}) == 5
    assert REGISTRY.get_sample_value(f"{histogram}_count", {"api": "iris"}) == 2
    assert REGISTRY.get_sample_value(f"{histogram}_sum", {"api": "iris"}) == 2.0


def test_a_metric_keeps_the_tag_names_of_its_first_use() -> None:
    client = MetricsClient("iris")
    metric = name("hits")
    client.increment(metric, tags={"a": "1"})
    with pytest.raises(MetricError, match=r"first used with tags \['a'\], now with \['b'\]"):
        client.increment(metric, tags={"b": "1"})


def test_a_metric_name_cannot_change_kind() -> None:
    client = MetricsClient("iris")
    metric = name("things")
    client.increment(metric)
    with pytest.raises(MetricError, match="is a counter; it cannot also be used as a gauge"):
        client.gauge(metric, 1)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.increment("cortado_requests"), "reserved for Cortado"),
        (lambda c: c.gauge("bad name", 1), "must match"),
        (lambda c: c.histogram("x", "slow"), "value must be a number, got str"),
        (lambda c: c.increment("x", tags={"a": 1}), "tags must be a dict of strings"),
        (lambda c: c.increment("x", tags={"api": "other"}), "not be 'api'"),
    ],
)
def test_malformed_metric_calls_say_what_is_wrong(call, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MetricError, match=message):
        call(MetricsClient("iris"))
