"""Tests of cortado.project.autoscaling: the autoscaling section."""

from __future__ import annotations

import pytest

from cortado.project.config import parse_config
from tests.unit.projectsamples import config_error, with_api


def test_the_later_spelling_target_in_flight_is_accepted() -> None:
    text = with_api("  autoscaling:\n    target_in_flight: 2.5\n")
    [api] = parse_config(text, "cortado.yaml").apis
    assert api.autoscaling.target_in_flight == 2.5


def test_init_replicas_defaults_to_min_replicas() -> None:
    [api] = parse_config(with_api("  autoscaling:\n    min_replicas: 4\n"), "cortado.yaml").apis
    assert api.autoscaling.init_replicas == 4


@pytest.mark.parametrize(
    ("autoscaling", "message"),
    [
        ("max_upscale_factor: 0.5", "autoscaling.max_upscale_factor must be greater than 1 (got 0.5)"),
        ("max_upscale_factor: 1", "autoscaling.max_upscale_factor must be greater than 1 (got 1)"),
        ("max_downscale_factor: 1", "autoscaling.max_downscale_factor must be at least 0 and less than 1 (got 1)"),
        ("downscale_tolerance: -0.1", "autoscaling.downscale_tolerance must be at least 0 and less than 1 (got -0.1)"),
        ("upscale_tolerance: -1", "autoscaling.upscale_tolerance must be at least 0 (got -1)"),
        ("window: 5s", "autoscaling.window must be at least 10s and a multiple of 10s (got '5s')"),
        ("window: 15s", "autoscaling.window must be at least 10s and a multiple of 10s (got '15s')"),
        ("window: soon", "autoscaling.window must be a duration like 50ms, 10s, 5m, 1h or 7d (got 'soon')"),
        ("max_replica_concurrency: 30001", "autoscaling.max_replica_concurrency must be at most 30000 (got 30001)"),
        ("min_replicas: 5\n    max_replicas: 2", "autoscaling.max_replicas must be at least min_replicas (5) (got 2)"),
        (
            "min_replicas: 2\n    init_replicas: 1",
            "autoscaling.init_replicas must be between min_replicas (2) and max_replicas (100) (got 1)",
        ),
        ("target_replica_concurrency: 0", "autoscaling.target_replica_concurrency must be greater than 0 (got 0)"),
        ("min_replicas: two", "autoscaling.min_replicas must be an integer (got a string, 'two')"),
        ("min_replicas: true", "autoscaling.min_replicas must be an integer (got a boolean, True)"),
        (
            "target_replica_concurrency: 2\n    target_in_flight: 2",
            "autoscaling.target_in_flight and autoscaling.target_replica_concurrency are two spellings",
        ),
    ],
)
def test_bad_autoscaling_values_are_refused(autoscaling: str, message: str) -> None:
    text = with_api(f"  autoscaling:\n    {autoscaling}\n")
    assert config_error(text, "cortex.yaml").startswith(f"cortex.yaml: api 'echo': {message}")


def test_max_replica_concurrency_below_what_a_replica_holds_is_refused() -> None:
    text = with_api("  autoscaling:\n    max_replica_concurrency: 4\n", "max_concurrency: 2\nmax_batch_size: 2")
    assert config_error(text, "cortex.yaml") == (
        "cortex.yaml: api 'echo': autoscaling.max_replica_concurrency must be at least 8 (got 4): a replica of this "
        "API holds up to 8 requests, the 4 its handler works on at once (handler.max_concurrency 2 x "
        "handler.max_batch_size 2) and as many fetched ahead; lower those to hold fewer"
    )
    assert "must be at least 2 (got 1)" in config_error(with_api("  autoscaling:\n    max_replica_concurrency: 1\n"))


def test_max_replica_concurrency_at_or_above_what_a_replica_holds_is_kept() -> None:
    text = with_api("  autoscaling:\n    max_replica_concurrency: 8\n", "max_concurrency: 2\nmax_batch_size: 2")
    assert parse_config(text, "cortado.yaml").apis[0].autoscaling.max_replica_concurrency == 8
    text = with_api("  autoscaling:\n    max_replica_concurrency: 2\n")
    assert parse_config(text, "cortado.yaml").apis[0].autoscaling.max_replica_concurrency == 2


def test_without_max_replica_concurrency_the_default_grows_to_what_a_replica_holds() -> None:
    [api] = parse_config(with_api("", "max_concurrency: 600"), "cortado.yaml").apis
    assert api.autoscaling.max_replica_concurrency == 1200
    [api] = parse_config(with_api("", "max_concurrency: 4"), "cortado.yaml").apis
    assert api.autoscaling.max_replica_concurrency == 1024
