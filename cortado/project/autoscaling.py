"""The `autoscaling` section of an API: replica counts, the in-flight target, and how fast the scaler moves."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cortado.project.fields import UINT32_MAX, FieldReader
from cortado.project.messages import format_number
from cortado.project.units import NANOS_PER_SECOND
from cortado.v1 import control_pb2

_AUTOSCALING_KEYS = (
    "min_replicas",
    "max_replicas",
    "init_replicas",
    "target_replica_concurrency",
    "target_in_flight",
    "max_replica_concurrency",
    "window",
    "downscale_stabilization_period",
    "upscale_stabilization_period",
    "max_downscale_factor",
    "max_upscale_factor",
    "downscale_tolerance",
    "upscale_tolerance",
)


def parse_autoscaling(reader: FieldReader, api: Mapping[str, Any], spec: control_pb2.ApiSpec) -> None:
    """Fill spec.autoscaling from `api["autoscaling"]`, defaults applied; fail naming the key for anything invalid.

    Reads spec.max_concurrency and spec.max_batch_size, so the handler section must be parsed first.
    """
    section = reader.section(api, "autoscaling", _AUTOSCALING_KEYS)
    scaling = spec.autoscaling
    scaling.min_replicas = reader.integer(section, "autoscaling.min_replicas", 1, 0)
    scaling.max_replicas = reader.integer(section, "autoscaling.max_replicas", 100, 1)
    if scaling.max_replicas < scaling.min_replicas:
        reader.fail(
            "autoscaling.max_replicas",
            f"must be at least min_replicas ({scaling.min_replicas}) (got {scaling.max_replicas})",
        )
    scaling.init_replicas = reader.integer(section, "autoscaling.init_replicas", scaling.min_replicas, 0)
    if not scaling.min_replicas <= scaling.init_replicas <= scaling.max_replicas:
        reader.fail(
            "autoscaling.init_replicas",
            f"must be between min_replicas ({scaling.min_replicas}) and max_replicas ({scaling.max_replicas}) "
            f"(got {scaling.init_replicas})",
        )

    # v0.35 called it target_replica_concurrency; later Cortex releases target_in_flight.
    old, new = section.get("target_replica_concurrency"), section.get("target_in_flight")
    if old is not None and new is not None:
        reader.fail(
            "autoscaling.target_in_flight",
            "and autoscaling.target_replica_concurrency are two spellings of one setting; give only one",
        )
    target_key = "autoscaling.target_replica_concurrency" if old is not None else "autoscaling.target_in_flight"
    target = reader.number(section, target_key, 1.0)
    if target <= 0:
        reader.fail(target_key, f"must be greater than 0 (got {format_number(target)})")
    scaling.target_in_flight = target
    # Cortex's meaning: the most requests one replica holds, running or waiting. A Cortado replica holds at most
    # replica_holds_at_most(...) (the rest wait in the API's queue), so a value at least that is honoured as it
    # stands, and a smaller one cannot be: it is refused rather than silently exceeded.
    held = replica_holds_at_most(spec.max_concurrency, spec.max_batch_size)
    limit = reader.integer(section, "autoscaling.max_replica_concurrency", 1024, 1, 30000)
    if section.get("max_replica_concurrency") is None:
        limit = min(max(limit, held), UINT32_MAX)
    elif limit < held:
        reader.fail(
            "autoscaling.max_replica_concurrency",
            f"must be at least {held} (got {limit}): a replica of this API holds up to {held} requests, the "
            f"{held // 2} its handler works on at once (handler.max_concurrency {spec.max_concurrency} x "
            f"handler.max_batch_size {spec.max_batch_size}) and as many fetched ahead; lower those to hold fewer",
        )
    scaling.max_replica_concurrency = limit

    window = reader.duration(section, "autoscaling.window", "60s")
    assert window is not None  # it has a default
    if window < 10 * NANOS_PER_SECOND or window % (10 * NANOS_PER_SECOND):
        reader.fail(
            "autoscaling.window",
            f"must be at least 10s and a multiple of 10s (got {section.get('window')!r})",
        )
    scaling.window.FromNanoseconds(window)
    down_period = reader.duration(section, "autoscaling.downscale_stabilization_period", "5m")
    up_period = reader.duration(section, "autoscaling.upscale_stabilization_period", "1m")
    assert down_period is not None and up_period is not None  # they have defaults
    scaling.downscale_stabilization_period.FromNanoseconds(down_period)
    scaling.upscale_stabilization_period.FromNanoseconds(up_period)

    checks: tuple[tuple[str, float, Callable[[float], bool], str], ...] = (
        ("max_downscale_factor", 0.75, lambda v: 0 <= v < 1, "must be at least 0 and less than 1"),
        ("max_upscale_factor", 1.5, lambda v: v > 1, "must be greater than 1"),
        ("downscale_tolerance", 0.05, lambda v: 0 <= v < 1, "must be at least 0 and less than 1"),
        ("upscale_tolerance", 0.05, lambda v: v >= 0, "must be at least 0"),
    )
    for key, default, valid, rule in checks:
        value = reader.number(section, f"autoscaling.{key}", default)
        if not valid(value):
            reader.fail(f"autoscaling.{key}", f"{rule} (got {format_number(value)})")
        setattr(scaling, key, value)


def replica_holds_at_most(max_concurrency: int, max_batch_size: int) -> int:
    """The most requests one replica holds at once: the executor feeds its handler process up to max_concurrency x
    max_batch_size requests (max_batch_size only when the handler batches) and fetches as many ahead, no more.

    `autoscaling.max_replica_concurrency` (Cortex's bound on a replica's running and waiting requests) is honoured
    by refusing values below this.
    """
    return 2 * max(1, max_concurrency) * max(1, max_batch_size)
