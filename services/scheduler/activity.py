"""Recent throughput and latency of each API, for the console's charts.

Each executor's heartbeat carries, per replica, how many requests it completed and failed since it started and
the sum of their latencies (submission to outcome). `Activity.sample` turns successive heartbeats into what
happened in between: per API, requests completed and failed, and their summed latency, added to the current
interval's bucket. A window of `WINDOW_SECONDS` is kept in memory, so a restarted scheduler starts its charts
empty: Prometheus keeps the lasting series (docs/operations.md).

Pure and clock-injected: no NATS, no asyncio; the scheduler calls `sample` on a timer.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from cortado.v1 import control_pb2

INTERVAL_SECONDS = 10
"""Length of one point of the charts."""

WINDOW_SECONDS = 15 * 60
"""How far back the charts reach."""

SAMPLE_SECONDS = 2.0
"""How often the scheduler samples the executors' heartbeats (they beat every 2 s by default)."""

_ReplicaKey = tuple[str, str, int, int]
"""(executor id, API, version, replica number): one handler process's counters."""


@dataclass
class _Bucket:
    start: int
    completed: int = 0
    failed: int = 0
    latency_sum: float = 0.0


@dataclass
class _Counters:
    completed: int
    failed: int
    latency_sum: float


@dataclass
class Activity:
    """Per-API buckets of finished requests over the last `window` seconds, fed by heartbeats."""

    interval: int = INTERVAL_SECONDS
    window: int = WINDOW_SECONDS
    _last: dict[_ReplicaKey, _Counters] = field(default_factory=dict)
    _buckets: dict[str, deque[_Bucket]] = field(default_factory=dict)
    _started: float | None = None

    def sample(self, executors: Iterable[control_pb2.ExecutorInfo], now: float) -> None:
        """Add what each replica finished since the last sample to the bucket of `now` (seconds since the epoch).

        The first sample only records where the counters stand. A replica seen for the first time later counts
        everything it reports (it started after the last sample); counters that went down belong to a new
        process under the same key, which counts from zero.
        """
        first = self._started is None
        if first:
            self._started = now
        seen: dict[_ReplicaKey, _Counters] = {}
        for info in executors:
            for replica in info.replicas:
                key = (info.id, replica.api, replica.version, replica.replica)
                now_counters = _Counters(
                    int(replica.completed), int(replica.failed), float(replica.latency_seconds_sum)
                )
                seen[key] = now_counters
                if first:
                    continue
                before = self._last.get(key)
                if before is None or now_counters.completed < before.completed or now_counters.failed < before.failed:
                    before = _Counters(0, 0, 0.0)
                completed = now_counters.completed - before.completed
                failed = now_counters.failed - before.failed
                if completed or failed:
                    bucket = self._bucket(replica.api, now)
                    bucket.completed += completed
                    bucket.failed += failed
                    bucket.latency_sum += max(0.0, now_counters.latency_sum - before.latency_sum)
        self._last = seen
        self._expire(now)

    def forget(self, api: str) -> None:
        """Drop an API's history (it was deleted)."""
        self._buckets.pop(api, None)

    def of(self, api: str, now: float) -> control_pb2.ApiActivity:
        """The API's points over the window ending at `now`, oldest first, one per interval (empty ones too)."""
        started = self._started if self._started is not None else now
        first_start = self._start_of(max(now - self.window + self.interval, started))
        last_start = self._start_of(now)
        buckets = {b.start: b for b in self._buckets.get(api, ())}
        activity = control_pb2.ApiActivity(
            interval=Duration(seconds=self.interval),
            window=Duration(seconds=int(last_start + self.interval - first_start)),
        )
        for start in range(first_start, last_start + 1, self.interval):
            bucket = buckets.get(start, _Bucket(start))
            finished = bucket.completed + bucket.failed
            activity.points.append(
                control_pb2.ActivityPoint(
                    start=Timestamp(seconds=start),
                    completed=bucket.completed,
                    failed=bucket.failed,
                    mean_latency_seconds=bucket.latency_sum / finished if finished else 0.0,
                )
            )
            activity.completed += bucket.completed
            activity.failed += bucket.failed
        return activity

    def _start_of(self, moment: float) -> int:
        return int(moment // self.interval) * self.interval

    def _bucket(self, api: str, now: float) -> _Bucket:
        buckets = self._buckets.setdefault(api, deque())
        start = self._start_of(now)
        if not buckets or buckets[-1].start != start:
            buckets.append(_Bucket(start))
        return buckets[-1]

    def _expire(self, now: float) -> None:
        oldest = self._start_of(now - self.window + self.interval)
        for api in list(self._buckets):
            buckets = self._buckets[api]
            while buckets and buckets[0].start < oldest:
                buckets.popleft()
            if not buckets:
                del self._buckets[api]
