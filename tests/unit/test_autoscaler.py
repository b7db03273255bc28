"""Cortex's autoscaling algorithm, driven by a simulated clock (plain floats, in seconds)."""

from __future__ import annotations

from typing import Any

from google.protobuf import duration_pb2

from cortado.v1 import control_pb2
from services.scheduler.autoscaler import Autoscaler, ScalingDecision

API = "api"


def spec(
    *,
    min_replicas: int = 1,
    max_replicas: int = 100,
    target: float = 1.0,
    window: float = 60,
    down_period: float = 300,
    up_period: float = 60,
    down_factor: float = 0.75,
    up_factor: float = 1.5,
    down_tolerance: float = 0.05,
    up_tolerance: float = 0.05,
) -> control_pb2.Autoscaling:
    """Cortex's defaults unless told otherwise."""

    def seconds(value: float) -> duration_pb2.Duration:
        return duration_pb2.Duration(seconds=int(value), nanos=round((value - int(value)) * 1e9))

    return control_pb2.Autoscaling(
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        init_replicas=min_replicas,
        target_in_flight=target,
        max_replica_concurrency=1024,
        window=seconds(window),
        downscale_stabilization_period=seconds(down_period),
        upscale_stabilization_period=seconds(up_period),
        max_downscale_factor=down_factor,
        max_upscale_factor=up_factor,
        downscale_tolerance=down_tolerance,
        upscale_tolerance=up_tolerance,
    )


# Stabilization and start-up guards off: one evaluation shows one step of the algorithm.
UNSTABILIZED: dict[str, Any] = {"down_period": 0.0, "up_period": 0.0}


def once(load: int, current: int, **overrides: Any) -> ScalingDecision:
    """One sample and one evaluation on a fresh autoscaler."""
    autoscaler = Autoscaler()
    autoscaler.observe(API, 0.0, load, 0)
    return autoscaler.evaluate(API, spec(**{**UNSTABILIZED, **overrides}), current, 0.0)


class Simulation:
    """An API whose replica count follows the autoscaler, sampled and evaluated every `step` seconds."""

    def __init__(self, autoscaling: control_pb2.Autoscaling, current: int, step: float = 10.0) -> None:
        self.autoscaler = Autoscaler()
        self.spec = autoscaling
        self.current = current
        self.step = step
        self.now = 0.0
        self.decisions: list[ScalingDecision] = []

    def run(self, seconds: float, load: int) -> ScalingDecision:
        """Hold `load` (queued) for `seconds`, applying every decision; the last decision."""
        end = self.now + seconds
        while self.now < end:
            self.now += self.step
            self.autoscaler.observe(API, self.now, load, 0)
            decision = self.autoscaler.evaluate(API, self.spec, self.current, self.now)
            self.decisions.append(decision)
            self.current = decision.desired
        return self.decisions[-1]

    def counts(self) -> list[int]:
        return [d.desired for d in self.decisions]


def test_steady_load_recommends_the_load_divided_by_the_target_rounded_up() -> None:
    assert once(7, current=4, target=2).recommended == 4
    assert once(8, current=4, target=2).recommended == 4
    assert once(3, current=4, target=0.5).recommended == 6
    sim = Simulation(spec(target=2), current=4)
    decision = sim.run(600, load=7)
    assert (decision.recommended, decision.desired, decision.average_load) == (4, 4, 7.0)


def test_ceil_forgives_floating_point_noise() -> None:
    # 1.1 / 0.1 == 11.000000000000002 in floating point: still 11 replicas, not 12.
    autoscaler = Autoscaler()
    for t, load in enumerate([1, 1, 1, 1, 1, 1, 1, 1, 1, 2]):
        autoscaler.observe(API, float(t), load, 0)
    decision = autoscaler.evaluate(API, spec(target=0.1, window=10, **UNSTABILIZED), 11, 9.0)
    assert decision.recommended == 11


def test_load_within_the_tolerance_band_keeps_the_current_count() -> None:
    # Band for 40 replicas at 5%: raw recommendation strictly between 38 and 42.
    assert once(39, current=40).desired == 40  # ceil 39, but within 5% below
    assert once(41, current=40).desired == 40  # ceil 41, but within 5% above
    assert once(38, current=40).desired == 38  # on the edge: outside the band
    assert once(42, current=40).desired == 42
    within = once(41, current=40)
    assert within.recommended == 41
    assert "within tolerance of 40" in within.reason


def test_tolerance_uses_the_unrounded_ratio() -> None:
    # Load 10.4 at target 1 on 10 replicas: 10.4 < 10 * 1.05, so no 11th replica although ceil(10.4) is 11.
    autoscaler = Autoscaler()
    for t, load in enumerate([10, 10, 11, 10, 11]):
        autoscaler.observe(API, float(t), load, 0)
    decision = autoscaler.evaluate(API, spec(window=10, **UNSTABILIZED), 10, 4.0)
    assert decision.average_load == 10.4
    assert (decision.recommended, decision.desired) == (11, 10)


def test_upscale_is_limited_by_max_upscale_factor() -> None:
    assert once(100, current=4).desired == 6  # ceil(4 * 1.5)
    assert once(100, current=10).desired == 15
    assert once(100, current=10, up_factor=3).desired == 30
    decision = once(12, current=1)
    assert (decision.recommended, decision.desired) == (12, 2)


def test_upscale_is_at_least_one_replica_even_where_the_factor_gives_none() -> None:
    # ceil(0 * 1.5) is 0: zero replicas with work may still become one.
    assert once(50, current=0, min_replicas=0).desired == 1
    assert once(50, current=2, up_factor=1.01).desired == 3


def test_downscale_is_limited_by_max_downscale_factor() -> None:
    assert once(0, current=8).desired == 6  # ceil(8 * 0.75)
    # Cortex rounds the floor up: 10 * 0.75 = 7.5 -> 8, so no step removes more than 25%.
    assert once(0, current=10).desired == 8
    assert once(0, current=10, down_factor=0.5).desired == 5
    decision = once(0, current=8)
    assert "limited to 6 by max_downscale_factor 0.75" in decision.reason


def test_downscale_is_at_least_one_replica_even_where_the_factor_gives_none() -> None:
    assert once(0, current=2).desired == 1  # ceil(2 * 0.75) is 2
    assert once(0, current=5, down_factor=0.9).desired == 4  # ceil(4.5) is 5


def test_a_load_spike_shorter_than_the_upscale_stabilization_period_does_not_scale_up() -> None:
    sim = Simulation(spec(window=10, up_period=60), current=2)
    assert sim.run(300, load=2).desired == 2
    spike = sim.run(50, load=10)  # 5 evaluations, all within 60 s of the last recommendation of 2
    assert spike.recommended == 10
    assert spike.desired == 2
    assert "lowest recommendation over the upscale stabilization period 60s" in spike.reason
    assert sim.run(100, load=2).desired == 2
    assert max(sim.counts()) == 2


def test_sustained_load_scales_up_one_factor_limited_step_per_upscale_stabilization_period() -> None:
    # Cortex records the step-limited recommendation, so while a step is held back the history fills with that one
    # step (2 -> 3), and the next step (3 -> 5) waits until a whole period has seen it.
    sim = Simulation(spec(window=10, up_period=60), current=2)
    sim.run(300, load=2)
    start = len(sim.decisions)
    sim.run(400, load=10)
    counts = sim.counts()[start:]
    assert counts[:6] == [2] * 6
    assert counts[6:] == [3] * 7 + [5] * 7 + [8] * 7 + [10] * 13


def test_a_load_dip_shorter_than_the_downscale_stabilization_period_does_not_scale_down() -> None:
    sim = Simulation(spec(window=10, down_period=300), current=8)
    assert sim.run(600, load=8).desired == 8
    dip = sim.run(200, load=0)
    assert dip.recommended == 1
    assert dip.desired == 8
    assert "highest recommendation over the downscale stabilization period 300s" in dip.reason
    assert sim.run(100, load=8).desired == 8
    assert min(sim.counts()) == 8


def test_a_long_dip_scales_down_one_factor_limited_step_per_downscale_stabilization_period() -> None:
    # As for upscaling: the history holds step-limited recommendations, so each step waits a whole period.
    sim = Simulation(spec(window=10, down_period=300), current=8)
    sim.run(600, load=8)
    start = len(sim.decisions)
    sim.run(2000, load=0)
    counts = sim.counts()[start:]
    steps = [(i, n) for i, n in enumerate(counts) if i == 0 or n != counts[i - 1]]
    assert steps == [(0, 8), (30, 6), (61, 5), (92, 4), (123, 3), (154, 2), (185, 1)]


def test_no_downscale_during_the_first_downscale_stabilization_period() -> None:
    # Cortex's start-up guard: the history is too short to know the period's highest recommendation.
    sim = Simulation(spec(window=10, down_period=300, up_period=0), current=8)
    counts = [sim.run(10, load=0).desired for _ in range(31)]
    # First evaluation at 10 s; at 310 s the whole period has been seen.
    assert counts[:30] == [8] * 30
    assert counts[30] == 6
    first = sim.decisions[0]
    assert "evaluating for 0s only, less than the downscale stabilization period 300s" in first.reason


def test_no_upscale_during_the_first_upscale_stabilization_period() -> None:
    sim = Simulation(spec(window=10, down_period=0, up_period=60), current=1)
    counts = [sim.run(10, load=10).desired for _ in range(8)]
    assert counts == [1, 1, 1, 1, 1, 1, 2, 2]


def test_the_load_is_averaged_over_the_window() -> None:
    autoscaler = Autoscaler()
    for t, load in [(0.0, 100), (10.0, 0), (20.0, 0), (30.0, 0), (40.0, 12)]:
        autoscaler.observe(API, t, load, 0)
    # Window (0, 40]: the sample at 0 has left it.
    decision = autoscaler.evaluate(API, spec(window=40, **UNSTABILIZED), 3, 40.0)
    assert decision.average_load == 3.0
    assert decision.recommended == 3
    assert decision.desired == 3


def test_queued_and_in_flight_work_both_count_as_load() -> None:
    autoscaler = Autoscaler()
    autoscaler.observe(API, 0.0, queued=3, in_flight=2)
    decision = autoscaler.evaluate(API, spec(**UNSTABILIZED), 5, 0.0)
    assert (decision.average_load, decision.recommended, decision.desired) == (5.0, 5, 5)


def test_without_samples_in_the_window_the_count_is_kept() -> None:
    autoscaler = Autoscaler()
    autoscaler.observe(API, 0.0, 50, 0)
    decision = autoscaler.evaluate(API, spec(window=60, **UNSTABILIZED), 3, 120.0)
    assert (decision.desired, decision.average_load) == (3, 0.0)
    assert decision.reason == "no load sample in the last 60s; keeping 3"


def test_samples_and_recommendations_older_than_needed_are_dropped() -> None:
    sim = Simulation(spec(window=30, down_period=120, up_period=60), current=3, step=1.0)
    sim.run(3600, load=3)
    state = sim.autoscaler._apis[API]
    assert len(state.samples) == 30  # (now - 30, now]
    assert len(state.recommendations) == 121  # [now - 120, now]


def test_replica_counts_stay_within_min_and_max_replicas() -> None:
    high = once(1000, current=4, max_replicas=5)
    assert (high.recommended, high.desired) == (5, 5)
    assert "limited to 5 by max_replicas 5" in high.reason
    low = once(0, current=2, min_replicas=2)
    assert (low.recommended, low.desired) == (2, 2)
    # A lowered max_replicas applies at once, stabilization notwithstanding.
    sim = Simulation(spec(max_replicas=3), current=8)
    assert sim.run(10, load=8).desired == 3


def test_an_idle_api_with_min_replicas_zero_scales_to_zero_after_the_window_and_downscale_period() -> None:
    sim = Simulation(spec(min_replicas=0, window=60, down_period=300), current=1)
    sim.run(600, load=1)
    assert sim.current == 1
    idle_from = sim.now
    sim.run(600, load=0)
    zero_at = next(i for i, d in enumerate(sim.decisions) if d.desired == 0 and sim.decisions[i - 1].desired == 1)
    elapsed = (zero_at + 1) * sim.step - idle_from
    # The window must empty of load (60 s) and then the downscale period must see only zeros (300 s).
    assert elapsed == 360
    assert sim.current == 0
    assert sim.decisions[-1].reason == "load 0.0 over target 1 -> 0; keeping 0"


def test_an_idle_api_never_goes_below_min_replicas() -> None:
    sim = Simulation(spec(min_replicas=2), current=5)
    sim.run(3600, load=0)
    assert sim.current == 2
    assert min(sim.counts()) == 2


def test_wake_from_zero_answers_at_once_even_an_hour_after_the_last_evaluation() -> None:
    autoscaler = Autoscaler()
    autoscaling = spec(min_replicas=0)
    autoscaler.observe(API, 0.0, 0, 0)
    assert autoscaler.evaluate(API, autoscaling, 0, 0.0).desired == 0
    # Idle samples for an hour, no evaluation, then a request arrives.
    for t in range(10, 3600, 10):
        autoscaler.observe(API, float(t), 0, 0)
        assert autoscaler.wake(API, autoscaling, 0, float(t)) is None
    autoscaler.observe(API, 3600.0, 1, 0)
    assert autoscaler.wake(API, autoscaling, 0, 3600.0) == 1


def test_wake_answers_min_replicas_when_that_is_more_than_one() -> None:
    autoscaler = Autoscaler()
    autoscaler.observe(API, 0.0, 0, 1)
    assert autoscaler.wake(API, spec(min_replicas=3), 0, 0.0) == 3


def test_wake_answers_none_with_replicas_running_or_no_work_waiting() -> None:
    autoscaler = Autoscaler()
    assert autoscaler.wake(API, spec(min_replicas=0), 0, 0.0) is None  # never observed
    autoscaler.observe(API, 0.0, 4, 0)
    assert autoscaler.wake(API, spec(min_replicas=0), 1, 0.0) is None
    autoscaler.observe(API, 1.0, 0, 0)
    assert autoscaler.wake(API, spec(min_replicas=0), 0, 1.0) is None


def test_a_woken_api_is_not_scaled_back_to_zero_before_the_downscale_period() -> None:
    sim = Simulation(spec(min_replicas=0, window=10, down_period=300), current=0)
    sim.run(600, load=0)
    sim.now += 5
    sim.autoscaler.observe(API, sim.now, 1, 0)
    woken = sim.autoscaler.wake(API, sim.spec, 0, sim.now)
    assert woken == 1
    sim.current = woken
    start = len(sim.decisions)
    sim.run(400, load=0)  # the request was handled at once; the API is idle again
    counts = sim.counts()[start:]
    assert counts[:29] == [1] * 29
    assert counts[-1] == 0


def test_evaluate_at_zero_with_work_waiting_wakes_regardless_of_stabilization() -> None:
    autoscaling = spec(min_replicas=0, window=10, up_period=600)
    sim = Simulation(autoscaling, current=0)
    sim.run(100, load=0)
    decision = sim.run(10, load=3)
    assert decision.desired == 1
    assert "raised to 1: 3 requests waiting at zero replicas" in decision.reason


def test_forget_drops_everything_known_about_an_api() -> None:
    autoscaler = Autoscaler()
    autoscaling = spec(min_replicas=0, window=60)
    autoscaler.observe(API, 0.0, 5, 0)
    autoscaler.observe("other", 0.0, 5, 0)
    autoscaler.evaluate(API, autoscaling, 1, 0.0)
    autoscaler.forget(API)
    assert autoscaler.wake(API, autoscaling, 0, 1.0) is None
    decision = autoscaler.evaluate(API, autoscaling, 2, 1.0)
    assert decision.reason == "no load sample in the last 60s; keeping 2"
    assert autoscaler.wake("other", autoscaling, 0, 1.0) == 1
    autoscaler.forget("never-seen")  # no error


def test_apis_are_scaled_independently() -> None:
    autoscaler = Autoscaler()
    autoscaler.observe("busy", 0.0, 9, 0)
    autoscaler.observe("idle", 0.0, 0, 0)
    assert autoscaler.evaluate("busy", spec(**UNSTABILIZED), 9, 0.0).desired == 9
    assert autoscaler.evaluate("idle", spec(**UNSTABILIZED), 9, 0.0).desired == 7


def test_reasons_say_in_words_how_the_count_was_reached() -> None:
    assert (
        once(12, current=1).reason
        == "load 12.0 over target 1 -> 12, limited to 2 by max_upscale_factor 1.5; scaling 1 -> 2"
    )
    assert once(3, current=3).reason == "load 3.0 over target 1 -> 3; keeping 3"
    assert once(0, current=4, target=2).reason == (
        "load 0.0 over target 2 -> 0, limited to 3 by max_downscale_factor 0.75; scaling 4 -> 3"
    )
    assert once(0, current=1, min_replicas=1).reason == (
        "load 0.0 over target 1 -> 0, raised to 1 by min_replicas 1; keeping 1"
    )
    decision = once(12, current=1)
    assert decision.changed
    assert not once(3, current=3).changed
