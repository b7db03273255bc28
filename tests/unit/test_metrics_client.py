"""The metrics_client handed to handlers: Cortex's three methods, with clear errors."""

from __future__ import annotations

import pytest

from cortado.metrics import MetricError, MetricsClient


def test_counters_gauges_and_histograms_record_by_name_and_tags() -> None:
    client = MetricsClient()
    client.increment("predictions")
    client.increment("predictions", 2, tags={"label": "cat"})
    client.increment("predictions", tags={"label": "cat"})
    client.gauge("queue_size", 7)
    client.histogram("latency", 0.5)
    client.histogram("latency", 1.5)
    assert client.counters[("predictions", ())] == 1
    assert client.counters[("predictions", (("label", "cat"),))] == 3
    assert client.gauges[("queue_size", ())] == 7
    assert client.histograms[("latency", ())] == [0.5, 1.5]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.increment("cortado_requests"), "reserved for Cortado"),
        (lambda c: c.gauge("bad name", 1), "must match"),
        (lambda c: c.histogram("x", "slow"), "value must be a number, got str"),
        (lambda c: c.increment("x", tags={"a": 1}), "tags must be a dict of strings"),
    ],
)
def test_malformed_metric_calls_say_what_is_wrong(call, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MetricError, match=message):
        call(MetricsClient())
