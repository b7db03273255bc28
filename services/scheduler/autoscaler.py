"""Cortex's autoscaling algorithm, pure and clock-injected.

The scheduler feeds :class:`Autoscaler` one load sample per API every few seconds (:meth:`Autoscaler.observe`:
messages queued plus requests in flight), asks it for a replica count on its evaluation tick
(:meth:`Autoscaler.evaluate`), and asks :meth:`Autoscaler.wake` whenever work arrives for an API at zero replicas,
which must not wait for the next tick (that tick may be an hour away). Nothing here does I/O, sleeps or reads a
clock: every method takes ``now``, in seconds on any monotonic clock, and calls for one API must not go back in time.

The algorithm is Cortex's (``pkg/autoscaler/autoscaler.go``, v0.3x), step for step:

1. average the load (queued + in flight) over ``window``;
2. ``raw = average / target_in_flight``, recommendation ``ceil(raw)``;
3. tolerance: when ``raw`` lies strictly between ``current * (1 - downscale_tolerance)`` and ``current``, or strictly
   between ``current`` and ``current * (1 + upscale_tolerance)``, the recommendation is ``current``;
4. step limits: never below ``min(current - 1, ceil(current * max_downscale_factor))`` and never above
   ``max(current + 1, ceil(current * max_upscale_factor))``, so every step may move by at least one replica and
   zero replicas may always become one;
5. clamp to ``[min_replicas, max_replicas]``; the result is recorded in the API's recommendation history;
6. stabilization: a step down goes no lower than the highest recommendation recorded over the downscale
   stabilization period (nor, during the first such period after the API's first evaluation, anywhere: Cortex's
   start-up guard), a step up no higher than the lowest recommendation over the upscale stabilization period (same
   start-up guard); both bounds are capped at ``current`` so that stabilization only ever holds the count back.

Because the history holds step-limited recommendations (step 4 comes before step 5), a sustained change moves the
count by one factor-limited step per stabilization period (2 -> 3, a period later 5, then 8 ...), as in Cortex.
The downscale limit rounds ``current * max_downscale_factor`` up, as Cortex did, so no step removes more than the
factor allows (10 replicas at 0.75 go to 8, not 7).

Where Cortado had to choose, or differs from Cortex on purpose:

* the window is left-open, ``(now - window, now]``, like a Prometheus range selector; every sample in it counts
  once (the scheduler samples at a steady rate, so an arithmetic mean is the time average Cortex queried);
* ``ceil`` forgives a rounding error of ``1e-9`` (``1.1 / 0.1`` is ``11.000000000000002``, which is 11, not 12);
* with no sample in the window the count is kept (within min/max) and nothing is recorded (Cortex: "metrics not
  available yet");
* a ``target_in_flight`` of 0 (unset) is taken as 1, Cortex's AsyncAPI default; a ``window`` of 0 means "the latest
  sample only";
* the ``[min_replicas, max_replicas]`` clamp is applied once more after stabilization, so a lowered
  ``max_replicas`` (or raised ``min_replicas``) takes effect at the next evaluation instead of after a
  stabilization period;
* scale-from-zero: :meth:`Autoscaler.wake` answers at once and records its answer in the recommendation history,
  as Cortex's ``Awaken`` did, so the downscale stabilization period keeps a woken API from dropping straight back
  to zero. :meth:`Autoscaler.evaluate` applies the same rule (zero replicas with work waiting gets at least what
  :meth:`Autoscaler.wake` would give, whatever the stabilization says), so a scheduler that only evaluates never
  leaves requests waiting at zero replicas either.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from google.protobuf import duration_pb2

from cortado.v1 import control_pb2

_CEIL_SLACK = 1e-9
"""Rounding error forgiven by :func:`_ceil`."""


@dataclass(frozen=True)
class ScalingDecision:
    """The outcome of one evaluation for one API."""

    api: str
    """The API's name."""
    current: int
    """Replicas the API had when evaluated."""
    recommended: int
    """``ceil(average_load / target_in_flight)``, clamped to ``[min_replicas, max_replicas]``: what the load alone
    asks for, before tolerance, step limits and stabilization."""
    desired: int
    """Replicas the API should have now, after tolerance, step limits, stabilization and the min/max clamp."""
    average_load: float
    """Queued plus in-flight work averaged over the window (0 when the window holds no sample)."""
    reason: str
    """How ``desired`` came about, in words, e.g. ``load 12.0 over target 1 -> 12, limited to 2 by
    max_upscale_factor 1.5; scaling 1 -> 2``."""

    @property
    def changed(self) -> bool:
        """Whether the decision asks for a different replica count."""
        return self.desired != self.current


@dataclass
class _ApiState:
    samples: deque[tuple[float, int]] = field(default_factory=deque)
    """(time, queued + in flight), oldest first, trimmed to the last window seen."""
    latest: int | None = None
    """Load of the most recent sample, kept even when the window has moved past it."""
    recommendations: deque[tuple[float, int]] = field(default_factory=deque)
    """(time, recommendation), oldest first, trimmed to the longer stabilization period."""
    started: float | None = None
    """Time of the first evaluation (Cortex's start-up guard)."""
    window: float | None = None
    """The window of the last spec seen, so that :meth:`Autoscaler.observe` can trim samples."""


def _seconds(duration: duration_pb2.Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def _ceil(value: float) -> int:
    return math.ceil(value - _CEIL_SLACK)


def _trim_samples(state: _ApiState, now: float, window: float) -> None:
    samples = state.samples
    if window <= 0:
        while len(samples) > 1:
            samples.popleft()
        return
    while samples and samples[0][0] <= now - window:
        samples.popleft()


class Autoscaler:
    """Replica counts for every API from its load samples, by Cortex's algorithm (see the module docstring).

    Holds, per API, the load samples of the last window, the most recent sample, the recommendations of the longer
    stabilization period and the time of the first evaluation; nothing else, and nothing shared between APIs.
    """

    def __init__(self) -> None:
        """An autoscaler that knows no API yet."""
        self._apis: dict[str, _ApiState] = {}

    def observe(self, api: str, now: float, queued: int, in_flight: int) -> None:
        """Record one load sample for ``api`` taken at ``now``: requests waiting in its queue and being worked on."""
        state = self._apis.setdefault(api, _ApiState())
        load = max(0, queued) + max(0, in_flight)
        state.samples.append((now, load))
        state.latest = load
        if state.window is not None:
            _trim_samples(state, now, state.window)

    def evaluate(self, api: str, spec: control_pb2.Autoscaling, current: int, now: float) -> ScalingDecision:
        """Decide how many replicas ``api``, now at ``current``, should have at ``now``.

        Records the recommendation in the API's history (so call it once per evaluation tick, not speculatively).
        """
        state = self._apis.setdefault(api, _ApiState())
        if state.started is None:
            state.started = now
        window = _seconds(spec.window)
        state.window = window
        _trim_samples(state, now, window)

        lowest, highest = int(spec.min_replicas), int(spec.max_replicas)
        target = spec.target_in_flight if spec.target_in_flight > 0 else 1.0

        if not state.samples:
            desired, notes = current, [f"no load sample in the last {window:g}s"]
            desired = self._clamp(desired, lowest, highest, notes)
            desired = self._wake_floor(state, spec, current, desired, notes)
            return self._decision(api, current, current, desired, 0.0, notes)

        average = sum(load for _, load in state.samples) / len(state.samples)
        raw = average / target
        recommendation = _ceil(raw)
        recommended = min(max(recommendation, lowest), highest)
        notes = [f"load {average:.1f} over target {target:g} -> {recommendation}"]

        if current * (1 - spec.downscale_tolerance) < raw < current or (
            current < raw < current * (1 + spec.upscale_tolerance)
        ):
            if recommendation != current:
                notes.append(f", within tolerance of {current} (raw {raw:.2f}), kept at {current}")
            recommendation = current

        downscale_floor = min(current - 1, _ceil(current * spec.max_downscale_factor))
        if recommendation < downscale_floor:
            recommendation = downscale_floor
            notes.append(f", limited to {recommendation} by max_downscale_factor {spec.max_downscale_factor:g}")
        upscale_ceiling = max(current + 1, _ceil(current * spec.max_upscale_factor))
        if recommendation > upscale_ceiling:
            recommendation = upscale_ceiling
            notes.append(f", limited to {recommendation} by max_upscale_factor {spec.max_upscale_factor:g}")

        recommendation = self._clamp(recommendation, lowest, highest, notes)

        down_period = _seconds(spec.downscale_stabilization_period)
        up_period = _seconds(spec.upscale_stabilization_period)
        history = state.recommendations
        history.append((now, recommendation))
        while history and history[0][0] < now - max(down_period, up_period):
            history.popleft()

        desired = recommendation
        running = now - state.started
        if desired < current:
            if running < down_period:
                desired = current
                notes.append(
                    f", held at {current}: evaluating for {running:g}s only, "
                    f"less than the downscale stabilization period {down_period:g}s"
                )
            else:
                floor = min(max(r for t, r in history if t >= now - down_period), current)
                if desired < floor:
                    desired = floor
                    notes.append(
                        f", held at {floor}: the highest recommendation over the "
                        f"downscale stabilization period {down_period:g}s"
                    )
        elif desired > current:
            if running < up_period:
                desired = current
                notes.append(
                    f", held at {current}: evaluating for {running:g}s only, "
                    f"less than the upscale stabilization period {up_period:g}s"
                )
            else:
                ceiling = max(min(r for t, r in history if t >= now - up_period), current)
                if desired > ceiling:
                    desired = ceiling
                    notes.append(
                        f", held at {ceiling}: the lowest recommendation over the "
                        f"upscale stabilization period {up_period:g}s"
                    )

        desired = self._clamp(desired, lowest, highest, notes)
        desired = self._wake_floor(state, spec, current, desired, notes)
        return self._decision(api, current, recommended, desired, average, notes)

    def wake(self, api: str, spec: control_pb2.Autoscaling, current: int, now: float) -> int | None:
        """Scale-from-zero: the replica count ``api`` needs at once, or None when it needs nothing now.

        When ``current`` is 0 and the latest sample shows work waiting (queued + in flight > 0) this answers
        ``max(1, min_replicas)``, bypassing the window, the stabilization periods and the evaluation tick, and
        records that answer in the recommendation history (as Cortex's ``Awaken`` did) so that the downscale
        stabilization period keeps the API up. Otherwise it answers None and changes nothing.
        """
        state = self._apis.get(api)
        if state is None:
            return None
        replicas = self._wake_replicas(state, spec, current)
        if replicas is not None:
            state.recommendations.append((now, replicas))
        return replicas

    def forget(self, api: str) -> None:
        """Drop everything known about ``api`` (it was deleted, or redeployed from scratch)."""
        self._apis.pop(api, None)

    @staticmethod
    def _wake_replicas(state: _ApiState, spec: control_pb2.Autoscaling, current: int) -> int | None:
        if current != 0 or not state.latest:
            return None
        return max(1, int(spec.min_replicas))

    def _wake_floor(
        self, state: _ApiState, spec: control_pb2.Autoscaling, current: int, desired: int, notes: list[str]
    ) -> int:
        replicas = self._wake_replicas(state, spec, current)
        if replicas is None or desired >= replicas:
            return desired
        notes.append(f", raised to {replicas}: {state.latest} requests waiting at zero replicas")
        return replicas

    @staticmethod
    def _clamp(replicas: int, lowest: int, highest: int, notes: list[str]) -> int:
        if replicas < lowest:
            notes.append(f", raised to {lowest} by min_replicas {lowest}")
            return lowest
        if replicas > highest:
            notes.append(f", limited to {highest} by max_replicas {highest}")
            return highest
        return replicas

    @staticmethod
    def _decision(
        api: str, current: int, recommended: int, desired: int, average: float, notes: list[str]
    ) -> ScalingDecision:
        outcome = f"; scaling {current} -> {desired}" if desired != current else f"; keeping {current}"
        return ScalingDecision(
            api=api,
            current=current,
            recommended=recommended,
            desired=desired,
            average_load=average,
            reason="".join(notes) + outcome,
        )
