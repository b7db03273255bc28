"""`python -m bench` (`make bench`): Cortado, the floor and Celery side by side, on the same machine, in one run.

Cortado: a fresh local mesh as it ships (NATS JetStream on file storage, ingest, results, scheduler, webhooks,
an executor, Envoy), measured through Envoy over HTTP. The floor: a minimal skeleton of the same stack (Envoy,
one ingest, one results server, one worker, NATS; bench/floor/), measured with the same client on the no-op workloads.
Celery: Celery 5 with an in-memory Redis, the prefork pool, and the Redis result backend, measured through its
client API. Bulk: one client sends 50,000 no-op requests at once (Cortado: SubmitStream piped into WatchMany;
Celery: the fastest of group, chunks and an apply_async loop). Batch feed: a no-op batch handler (64 per batch)
fed over SubmitStream, end to end and at the executor (bench/drain.py). Prints one table with the ratios, CPU per
request by process and the issue's targets, and writes every figure as JSON. `--quick` runs a few hundred
requests on Cortado and the floor (`make test`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import json
import os
import platform
import signal
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from bench import cortado_side, report
from bench.floor import side as floor_side
from bench.measure import Workloads

DEFAULT_JSON = Path("bench-results") / "bench.json"


def progress(message: str) -> None:
    """A line on stderr while the benchmark runs (stdout has the table)."""
    print(message, file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def describe(workloads: Workloads, with_celery: bool, on: dict[str, Any], with_floor: bool = True) -> str:
    """The lines above the table: what was sent, and on what."""
    start, end = (", ".join(f"{x:.2f}" for x in on[key]) for key in ("load_average_at_start", "load_average_at_end"))
    sides = ", ".join(["Cortado", *(["the floor"] if with_floor else []), *(["Celery"] if with_celery else [])])
    return (
        f"{sides} on {on['cpus']} CPUs; load average {start} at the start, {end} at the end\n"
        f"throughput: {workloads.requests} no-op round trips from {workloads.concurrency} concurrent clients; "
        f"latency: {workloads.sequential} sequential round trips;\n"
        f"one call: {workloads.requests} POST ?wait= from {workloads.concurrency} clients (where served);\n"
        f"10 ms handler (8 at once): {workloads.slow_requests} round trips from {workloads.slow_concurrency} clients; "
        "idle memory: every process, after the no-op runs;\n"
        f"bulk: {workloads.bulk_requests} no-op requests from one client (Cortado: SubmitStream piped into WatchMany; "
        "Celery: the fastest of group, chunks and an apply_async loop);\n"
        f"batch feed: {workloads.batch_requests} requests to a no-op batch handler (64 per batch) over SubmitStream, "
        "end to end and at the executor\n"
    )


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a few hundred requests, no Celery (make test)")
    parser.add_argument("--no-celery", action="store_true", help="leave Celery out")
    parser.add_argument("--no-floor", action="store_true", help="leave the floor out")
    parser.add_argument("--requests", type=int, help="no-op round trips in the throughput run (5000)")
    parser.add_argument("--concurrency", type=int, help="concurrent clients in the throughput runs (16)")
    parser.add_argument("--sequential", type=int, help="round trips in the latency run (1000)")
    parser.add_argument("--slow-requests", type=int, help="round trips of the 10 ms handler (2000)")
    parser.add_argument("--bulk-requests", type=int, help="no-op requests of the bulk run (50000)")
    parser.add_argument("--batch-requests", type=int, help="requests of the batch feed run (20000)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"write the figures here ({DEFAULT_JSON})")
    return parser.parse_args(argv)


def workloads_for(options: argparse.Namespace) -> Workloads:
    """The default (or quick) sizes, with what the command line overrides."""
    base = Workloads.quick() if options.quick else Workloads()
    overrides = {
        "requests": options.requests,
        "concurrency": options.concurrency,
        "slow_concurrency": options.concurrency,
        "sequential": options.sequential,
        "slow_requests": options.slow_requests,
        "bulk_requests": options.bulk_requests,
        "batch_requests": options.batch_requests,
    }
    chosen = {k: v for k, v in overrides.items() if v is not None}
    for key, value in chosen.items():
        if value < 1:
            raise SystemExit(f"python -m bench: --{key.replace('_', '-')} must be at least 1")
    return dataclasses.replace(base, **chosen)


def _terminate(signum: int, frame: object) -> None:
    # Unwind like Ctrl-C, so every process the benchmark started is stopped.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run both sides, print the table, write the JSON; 0 whether or not the targets are met."""
    options = parse(argv)
    workloads = workloads_for(options)
    with_celery = not (options.quick or options.no_celery)
    with_floor = not options.no_floor
    signal.signal(signal.SIGTERM, _terminate)
    on = machine()
    try:
        celery_side: ModuleType | None = None
        redis_server = None
        if with_celery:
            try:  # Celery and Redis are needed only here
                celery_side = importlib.import_module("bench.celery_side")
                redis_server = celery_side.redis_server_binary(progress)
            except (ImportError, RuntimeError) as exc:
                progress(f"python -m bench: {exc}; `--no-celery` leaves Celery out")
                return 2
        cortado = cortado_side.run(workloads, progress)
        floor = floor_side.run(workloads, progress) if with_floor else None
        celery = None if celery_side is None else celery_side.run(workloads, progress, redis_server)
    except KeyboardInterrupt:
        progress("interrupted: everything the benchmark started is stopped")
        return 130
    on["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    figures = report.document(cortado, celery, workloads.as_dict(), on, floor)
    print(describe(workloads, with_celery, on, with_floor))
    print(report.table(cortado, celery, floor))
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nfigures written to {options.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
