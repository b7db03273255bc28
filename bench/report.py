"""The side-by-side table, the ratios, and the issue's targets, from the figures of each side.

Sides: Cortado, the floor (a minimal skeleton of the same stack, bench/floor/) and Celery; the ratios are
Cortado / floor (what Cortado's design costs over the stack's least) and Cortado / Celery.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

FLOOR_FACTOR = 0.9
"""Cortado's two-call no-op throughput must be at least this fraction of the floor's."""
CELERY_FACTOR = 1.0
"""Cortado's two-call no-op throughput must be at least this many times Celery's."""
ONE_CALL_FACTOR = 1.5
"""Cortado's one-call (`POST ?wait=`) throughput must be at least this many times Celery's no-op throughput."""
NATS_MESSAGES_LIMIT = 8.0
"""NATS messages per two-call no-op request (in + out) must be at most this: half of the 16 the path once took."""
IDLE_RSS_LIMIT_MB = 300.0
"""The whole idle mesh must take at most this much memory (RSS)."""
BULK_FACTOR = 5.0
"""Cortado's bulk streams must carry at least this many times the requests/s of Celery's fastest bulk API."""
BATCH_FEED_RATE = 3000.0
"""A no-op batch handler fed by a bulk stream must get at least this many requests/s through one executor."""


@dataclass(frozen=True)
class Row:
    """One line of the table: its label, and where its figure is in each side's figures.

    With processes, path leads to a run's CPU per request by process, and the figure is the sum over the
    processes with those names (a trailing instance number ignored: `executor1` counts as `executor`).
    """

    label: str
    path: tuple[str, ...]
    processes: tuple[str, ...] = ()

    def value(self, side: dict[str, Any] | None) -> float | None:
        """This row's figure in one side's figures, or None."""
        if not self.processes:
            return figure(side, self.path)
        return process_figure(side, self.path, self.processes)


ROWS = (
    Row("no-op throughput (req/s)", ("throughput", "requests_per_second")),
    Row("  under that load: round trip p50 (ms)", ("throughput", "p50_ms")),
    Row("  under that load: round trip p99 (ms)", ("throughput", "p99_ms")),
    Row("  server CPU per request (ms)", ("throughput", "server_cpu_ms_per_request")),
    Row("  client CPU per request (ms)", ("throughput", "client_cpu_ms_per_request")),
    Row("  NATS messages per request, in", ("throughput", "nats_msgs_per_request", "in")),
    Row("  NATS messages per request, out", ("throughput", "nats_msgs_per_request", "out")),
    Row("sequential round trip p50 (ms)", ("latency", "p50_ms")),
    Row("sequential round trip p90 (ms)", ("latency", "p90_ms")),
    Row("sequential round trip p99 (ms)", ("latency", "p99_ms")),
    Row("one call (POST ?wait=): throughput (req/s)", ("one_call", "requests_per_second")),
    Row("  under that load: p50 (ms)", ("one_call", "p50_ms")),
    Row("  server CPU per request (ms)", ("one_call", "server_cpu_ms_per_request")),
    Row("one call: sequential round trip p50 (ms)", ("one_call_latency", "p50_ms")),
    Row("10 ms handler, 8-way: throughput (req/s)", ("slow", "requests_per_second")),
    Row("10 ms handler, 8-way: round trip p50 (ms)", ("slow", "p50_ms")),
    Row("idle memory, RSS (MB)", ("idle_memory", "rss_mb")),
    Row("idle memory, PSS (MB)", ("idle_memory", "pss_mb")),
    Row("bulk, one client: throughput (req/s)", ("bulk", "requests_per_second")),
    Row("  server CPU per request (ms)", ("bulk", "server_cpu_ms_per_request")),
    Row("  client CPU per request (ms)", ("bulk", "client_cpu_ms_per_request")),
    Row("  NATS messages per request", ("bulk", "nats_msgs_per_request", "total")),
    Row("batch feed (64 per batch), end to end (req/s)", ("batch", "requests_per_second")),
    Row("  mean batch size", ("batch", "mean_batch_size")),
    Row("  server CPU per request (ms)", ("batch", "server_cpu_ms_per_request")),
    Row("  NATS messages per request", ("batch", "nats_msgs_per_request", "total")),
    Row("batch feed at the executor (req/s)", ("batch_executor", "requests_per_second")),
    Row("  mean batch size", ("batch_executor", "mean_batch_size")),
)

PROCESSES = (
    ("  envoy", ("envoy",)),
    ("  nats", ("nats",)),
    ("  ingest", ("ingest",)),
    ("  results", ("results",)),
    ("  executor (+ handler) / worker", ("executor", "worker", "celery worker")),
    ("  scheduler", ("scheduler",)),
    ("  redis", ("redis",)),
)
"""Each kind of process, by name: Cortado's executor, the floor's and Celery's workers share a row."""


def process_rows(run: str) -> tuple[Row, ...]:
    """CPU per request of each kind of process in one run (`throughput`, `bulk`, `batch`)."""
    path = (run, "cpu_ms_per_request_by_process")
    return tuple(Row(label, path, names) for label, names in PROCESSES)


BY_PROCESS = ("throughput", "cpu_ms_per_request_by_process")
PROCESS_HEADING = "no-op throughput run: CPU per request (ms)"
PROCESS_ROWS = process_rows("throughput")
PROCESS_BLOCKS = (
    (PROCESS_HEADING, PROCESS_ROWS),
    ("bulk run: CPU per request (ms)", process_rows("bulk")),
    ("batch feed, end to end: CPU per request (ms)", process_rows("batch")),
)
"""The CPU-by-process blocks of the table: a heading and its rows (a block no side measured is left out)."""


@dataclass(frozen=True)
class Target:
    """One of the issue's targets and whether this run met it (None: not measured, e.g. without Celery)."""

    name: str
    value: str
    met: bool | None

    @property
    def mark(self) -> str:
        """met, MISSED or n/a."""
        return {True: "met", False: "MISSED", None: "n/a"}[self.met]


def figure(side: dict[str, Any] | None, path: tuple[str, ...]) -> float | None:
    """The number at path in one side's figures, or None."""
    value: Any = side
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, int | float) else None


def process_figure(side: dict[str, Any] | None, path: tuple[str, ...], names: tuple[str, ...]) -> float | None:
    """The sum of the per-process figures at path of the processes called one of names (None: none of them)."""
    value: Any = side
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    if not isinstance(value, dict):
        return None
    found = [float(v) for k, v in value.items() if k.rstrip("0123456789") in names and isinstance(v, int | float)]
    return round(sum(found), 3) if found else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, rounded to 0.01; None where either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return round(numerator / denominator, 2)


RATIOS = {
    "throughput": ("throughput", "requests_per_second"),
    "server_cpu_per_request": ("throughput", "server_cpu_ms_per_request"),
    "latency_p50": ("latency", "p50_ms"),
    "latency_p90": ("latency", "p90_ms"),
    "latency_p99": ("latency", "p99_ms"),
    "one_call_throughput": ("one_call", "requests_per_second"),
    "one_call_server_cpu_per_request": ("one_call", "server_cpu_ms_per_request"),
    "one_call_latency_p50": ("one_call_latency", "p50_ms"),
    "nats_msgs_per_request": ("throughput", "nats_msgs_per_request", "total"),
    "slow_throughput": ("slow", "requests_per_second"),
    "slow_p50": ("slow", "p50_ms"),
    "idle_rss": ("idle_memory", "rss_mb"),
    "bulk_throughput": ("bulk", "requests_per_second"),
    "bulk_server_cpu_per_request": ("bulk", "server_cpu_ms_per_request"),
    "batch_throughput": ("batch", "requests_per_second"),
    "batch_at_executor": ("batch_executor", "requests_per_second"),
}
"""The ratios written to the JSON file, by name: where the figure is in each side's figures."""


def ratios(cortado: dict[str, Any], other: dict[str, Any] | None) -> dict[str, float | None]:
    """Cortado / the other side (Celery or the floor) of the main figures, and of each kind of process's CPU per
    request in the throughput run (`cpu_<process>`); higher is better for throughput, lower for the rest."""
    main = {name: ratio(figure(cortado, path), figure(other, path)) for name, path in RATIOS.items()}
    for row in PROCESS_ROWS:
        key = "cpu_" + row.processes[0]
        main[key] = ratio(row.value(cortado), row.value(other))
    return main


def _check(value: float | None, test: Callable[[float], bool]) -> bool | None:
    return None if value is None else test(value)


def _text(value: float | None, unit: str) -> str:
    return "not measured" if value is None else f"{value:g}{unit}"


def _rate(value: float | None) -> str:
    return "not measured" if value is None else f"{value:,.0f} req/s"


def bulk_target(cortado: dict[str, Any], celery: dict[str, Any] | None) -> Target:
    """Cortado's bulk streams against Celery's fastest bulk API (named when known)."""
    ours, theirs = figure(cortado, RATIOS["bulk_throughput"]), figure(celery, RATIOS["bulk_throughput"])
    speedup = ratio(ours, theirs)
    variant = (celery or {}).get("bulk", {}).get("variant")
    against = f"Celery's {variant}" if variant else "Celery's"
    value = f"{_text(speedup, 'x')} ({_rate(ours)} vs {against} {_rate(theirs)})"
    met = _check(speedup, lambda r: r >= BULK_FACTOR)
    return Target(f"bulk >= {BULK_FACTOR:g}x Celery's fastest bulk API", value, met)


def batch_target(cortado: dict[str, Any]) -> Target:
    """The batch feed, judged end to end (submit_many to the last result); the executor's own rate beside it."""
    end_to_end, at_executor = figure(cortado, RATIOS["batch_throughput"]), figure(cortado, RATIOS["batch_at_executor"])
    value = f"{_rate(end_to_end)} end to end ({_rate(at_executor)} at the executor)"
    return Target(
        f"batch feed >= {BATCH_FEED_RATE:,.0f} req/s through one executor, end to end",
        value,
        _check(end_to_end, lambda v: v >= BATCH_FEED_RATE),
    )


def targets(
    cortado: dict[str, Any], celery: dict[str, Any] | None, floor: dict[str, Any] | None = None
) -> list[Target]:
    """The issue's targets, evaluated on this run's figures (never asserted: printed)."""
    throughput = figure(cortado, RATIOS["throughput"])
    to_floor = ratio(throughput, figure(floor, RATIOS["throughput"]))
    to_celery = ratio(throughput, figure(celery, RATIOS["throughput"]))
    one_call = ratio(figure(cortado, RATIOS["one_call_throughput"]), figure(celery, RATIOS["throughput"]))
    p50, celery_p50 = figure(cortado, RATIOS["one_call_latency_p50"]), figure(celery, RATIOS["latency_p50"])
    messages = figure(cortado, RATIOS["nats_msgs_per_request"])
    rss = figure(cortado, RATIOS["idle_rss"])
    p50_met = None if p50 is None or celery_p50 is None else p50 <= celery_p50
    return [
        Target(
            f"two-call no-op throughput >= {FLOOR_FACTOR:g}x the floor's",
            _text(to_floor, "x"),
            _check(to_floor, lambda r: r >= FLOOR_FACTOR),
        ),
        Target(
            f"two-call no-op throughput >= {CELERY_FACTOR:g}x Celery's",
            _text(to_celery, "x"),
            _check(to_celery, lambda r: r >= CELERY_FACTOR),
        ),
        Target(
            f"one-call throughput >= {ONE_CALL_FACTOR:g}x Celery's",
            _text(one_call, "x"),
            _check(one_call, lambda r: r >= ONE_CALL_FACTOR),
        ),
        Target(
            "one-call sequential p50 <= Celery's sequential p50",
            f"{_text(p50, ' ms')} vs {_text(celery_p50, ' ms')}",
            p50_met,
        ),
        bulk_target(cortado, celery),
        batch_target(cortado),
        Target(
            f"idle mesh RSS <= {IDLE_RSS_LIMIT_MB:g} MB",
            _text(rss, " MB"),
            _check(rss, lambda v: v <= IDLE_RSS_LIMIT_MB),
        ),
        Target(
            f"NATS messages per two-call request <= {NATS_MESSAGES_LIMIT:g}",
            _text(messages, ""),
            _check(messages, lambda v: v <= NATS_MESSAGES_LIMIT),
        ),
    ]


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.2f}"


def _ratio_cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _side_note(name: str, side: dict[str, Any] | None) -> list[str]:
    expired = {
        run: int(figure(side, (run, "expired_waits")) or 0) for run in ("throughput", "latency", "one_call", "slow")
    }
    if not any(expired.values()):
        return []
    counts = ", ".join(f"{n} in the {run} run" for run, n in expired.items() if n)
    return [f"note: {counts}: {name} round trips whose result came only after a whole ?wait= ran out"]


def _bulk_notes(cortado: dict[str, Any], celery: dict[str, Any] | None) -> list[str]:
    notes = []
    variants = (celery or {}).get("bulk_variants") or {}
    if variants:
        ranked = sorted(variants.values(), key=lambda v: -float(v["requests_per_second"]))
        rates = ", ".join(f"{v['variant']} {float(v['requests_per_second']):,.1f}" for v in ranked)
        tried = max(int(v["requests"]) for v in ranked)
        notes.append(f"celery bulk: its fastest API on {tried:,} tasks sent them all; tasks/s then: {rates}")
    for run, name in (("bulk", "bulk"), ("batch", "batch feed")):
        unanswered = (cortado.get(run) or {}).get("unanswered")
        if unanswered:
            by_status = unanswered["status"].items()
            states = ", ".join(f"{n} {status.removeprefix('REQUEST_STATUS_').lower()}" for status, n in by_status)
            notes.append(
                f"note: WatchMany never answered {unanswered['requests']} of the {name} run's requests (Get says: "
                f"{states}); the rate counts those it answered, up to the last answer"
            )
    replicas = figure(cortado, ("bulk", "replicas"))
    if replicas is not None and replicas > 1:
        notes.append(f"note: the no-op API had {replicas:g} replicas after the bulk run (the autoscaler added them)")
    return notes


def table(cortado: dict[str, Any], celery: dict[str, Any] | None, floor: dict[str, Any] | None = None) -> str:
    """The side-by-side table (Cortado, the floor, Celery) with the Cortado / floor and Cortado / Celery ratio
    of each row, CPU per request by process, then the targets."""
    headings = [Row(heading, ()) for heading, _ in PROCESS_BLOCKS]
    width = max(len(r.label) for r in (*ROWS, *PROCESS_ROWS, *headings)) + 2
    columns = f"{'cortado':>10}{'floor':>10}{'celery':>10}{'cortado/floor':>15}{'cortado/celery':>16}"
    header = f"{'':<{width}}{columns}"
    lines = [header, "-" * len(header)]

    def line(row: Row) -> str:
        ours, low, theirs = row.value(cortado), row.value(floor), row.value(celery)
        cells = f"{_cell(ours):>10}{_cell(low):>10}{_cell(theirs):>10}"
        return f"{row.label:<{width}}{cells}{_ratio_cell(ratio(ours, low)):>15}{_ratio_cell(ratio(ours, theirs)):>16}"

    lines += [line(row) for row in ROWS]
    for heading, rows in PROCESS_BLOCKS:
        if any(row.value(side) is not None for row in rows for side in (cortado, floor, celery)):
            lines.append(heading)
            lines += [line(row) for row in rows]
    lines.append("-" * len(header))
    lines.append("ratios: cortado / floor, cortado / celery; higher is better for throughput, lower for the rest")
    if floor is not None:
        lines.append("floor: Envoy, one ingest, one results server and one worker on NATS, nothing else (bench/floor/)")
    if cortado.get("one_call_available") is False:
        lines.append("note: Cortado's POST ?wait= answers only an id here: no one-call run for Cortado")
    lines += _side_note("Cortado", cortado) + _side_note("floor", floor) + _bulk_notes(cortado, celery)
    lines.append("")
    lines.append("targets")
    for target in targets(cortado, celery, floor):
        lines.append(f"  [{target.mark:^6}] {target.name}: {target.value}")
    return "\n".join(lines)


def document(
    cortado: dict[str, Any],
    celery: dict[str, Any] | None,
    settings: dict[str, Any],
    machine: dict[str, Any],
    floor: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the run measured, as written to the JSON file (`ratios`: Cortado / Celery)."""
    return {
        "machine": machine,
        "workloads": settings,
        "cortado": cortado,
        "floor": floor,
        "celery": celery,
        "ratios": ratios(cortado, celery),
        "ratios_to_floor": ratios(cortado, floor),
        "targets": [{**asdict(t), "mark": t.mark} for t in targets(cortado, celery, floor)],
    }
