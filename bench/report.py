"""The side-by-side table, the ratios, and the issue's targets, from the figures of both sides."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

THROUGHPUT_FACTOR = 3.0
"""Cortado's no-op throughput must be at least this many times Celery's."""
P99_LIMIT_MS = 20.0
"""Cortado's sequential round trip p99 must be under this."""
IDLE_RSS_LIMIT_MB = 400.0
"""The whole idle mesh must take less memory (RSS) than this."""


@dataclass(frozen=True)
class Row:
    """One line of the table: its label, and where its figure is in each side's figures."""

    label: str
    path: tuple[str, ...]


ROWS = (
    Row("no-op throughput (req/s)", ("throughput", "requests_per_second")),
    Row("  under that load: round trip p50 (ms)", ("throughput", "p50_ms")),
    Row("  under that load: round trip p99 (ms)", ("throughput", "p99_ms")),
    Row("  server CPU per request (ms)", ("throughput", "server_cpu_ms_per_request")),
    Row("  client CPU per request (ms)", ("throughput", "client_cpu_ms_per_request")),
    Row("sequential round trip p50 (ms)", ("latency", "p50_ms")),
    Row("sequential round trip p90 (ms)", ("latency", "p90_ms")),
    Row("sequential round trip p99 (ms)", ("latency", "p99_ms")),
    Row("10 ms handler, 8-way: throughput (req/s)", ("slow", "requests_per_second")),
    Row("10 ms handler, 8-way: round trip p50 (ms)", ("slow", "p50_ms")),
    Row("idle memory, RSS (MB)", ("idle_memory", "rss_mb")),
    Row("idle memory, PSS (MB)", ("idle_memory", "pss_mb")),
)


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
    "slow_throughput": ("slow", "requests_per_second"),
    "slow_p50": ("slow", "p50_ms"),
    "idle_rss": ("idle_memory", "rss_mb"),
}
"""The ratios written to the JSON file, by name: where the figure is in each side's figures."""


def ratios(cortado: dict[str, Any], celery: dict[str, Any] | None) -> dict[str, float | None]:
    """Cortado / Celery of the main figures (higher is better for throughput, lower for latency and memory)."""
    return {name: ratio(figure(cortado, path), figure(celery, path)) for name, path in RATIOS.items()}


def _check(value: float | None, test: Callable[[float], bool]) -> bool | None:
    return None if value is None else test(value)


def _text(value: float | None, unit: str) -> str:
    return "not measured" if value is None else f"{value:g}{unit}"


def targets(cortado: dict[str, Any], celery: dict[str, Any] | None) -> list[Target]:
    """The issue's four targets, evaluated on this run's figures."""
    speedup = ratio(figure(cortado, RATIOS["throughput"]), figure(celery, RATIOS["throughput"]))
    p50, celery_p50 = figure(cortado, RATIOS["latency_p50"]), figure(celery, RATIOS["latency_p50"])
    p99 = figure(cortado, RATIOS["latency_p99"])
    rss = figure(cortado, RATIOS["idle_rss"])
    p50_met = None if p50 is None or celery_p50 is None else p50 <= celery_p50
    return [
        Target(
            f"no-op throughput >= {THROUGHPUT_FACTOR:g}x Celery's",
            _text(speedup, "x"),
            _check(speedup, lambda r: r >= THROUGHPUT_FACTOR),
        ),
        Target("sequential p50 <= Celery's", f"{_text(p50, ' ms')} vs {_text(celery_p50, ' ms')}", p50_met),
        Target(f"sequential p99 < {P99_LIMIT_MS:g} ms", _text(p99, " ms"), _check(p99, lambda v: v < P99_LIMIT_MS)),
        Target(
            f"idle mesh RSS < {IDLE_RSS_LIMIT_MB:g} MB", _text(rss, " MB"), _check(rss, lambda v: v < IDLE_RSS_LIMIT_MB)
        ),
    ]


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.2f}"


def _ratio_cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table(cortado: dict[str, Any], celery: dict[str, Any] | None) -> str:
    """The side-by-side table with the Cortado / Celery ratio of each row, then the targets."""
    width = max(len(r.label) for r in ROWS) + 2
    header = f"{'':<{width}}{'cortado':>12}{'celery':>12}{'cortado/celery':>16}"
    lines = [header, "-" * len(header)]
    for row in ROWS:
        ours, theirs = figure(cortado, row.path), figure(celery, row.path)
        lines.append(f"{row.label:<{width}}{_cell(ours):>12}{_cell(theirs):>12}{_ratio_cell(ratio(ours, theirs)):>16}")
    lines.append("-" * len(header))
    lines.append("ratio: cortado / celery; higher is better for throughput, lower for latency, CPU and memory")
    expired = {run: int(figure(cortado, (run, "expired_waits")) or 0) for run in ("throughput", "latency", "slow")}
    if any(expired.values()):
        counts = ", ".join(f"{n} in the {run} run" for run, n in expired.items() if n)
        lines.append(f"note: {counts}: Cortado round trips whose result came only after a whole ?wait= ran out")
    lines.append("")
    lines.append("targets")
    for target in targets(cortado, celery):
        lines.append(f"  [{target.mark:^6}] {target.name}: {target.value}")
    return "\n".join(lines)


def document(
    cortado: dict[str, Any], celery: dict[str, Any] | None, settings: dict[str, Any], machine: dict[str, Any]
) -> dict[str, Any]:
    """Everything the run measured, as written to the JSON file."""
    return {
        "machine": machine,
        "workloads": settings,
        "cortado": cortado,
        "celery": celery,
        "ratios": ratios(cortado, celery),
        "targets": [{**asdict(t), "mark": t.mark} for t in targets(cortado, celery)],
    }
