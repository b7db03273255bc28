"""The benchmark (`make bench`): its pure helpers, and a short run of Cortado's side that checks only its output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.__main__ import parse, workloads_for
from bench.measure import Workloads, cpu_seconds, memory, percentiles, run_figures, with_cpu

ROOT = Path(__file__).resolve().parents[2]


def side(rps: float, p50: float, p99: float, rss: float) -> dict[str, Any]:
    def run() -> dict[str, float]:
        return {"requests_per_second": rps, "p50_ms": p50, "p90_ms": p50, "p99_ms": p99}

    return {"throughput": run(), "latency": run(), "slow": run(), "idle_memory": {"rss_mb": rss, "pss_mb": rss}}


def test_percentiles_of_a_uniform_spread() -> None:
    figures = percentiles([i / 1000 for i in range(1, 101)])  # 1 ms .. 100 ms
    assert figures == {"p50_ms": 50.5, "p90_ms": 90.1, "p99_ms": 99.01, "max_ms": 100.0}


def test_percentiles_ignore_order_and_accept_one_sample() -> None:
    assert percentiles([0.003, 0.001, 0.002])["p50_ms"] == 2.0
    assert percentiles([0.004]) == {"p50_ms": 4.0, "p90_ms": 4.0, "p99_ms": 4.0, "max_ms": 4.0}
    with pytest.raises(ValueError):
        percentiles([])


def test_run_figures_rate() -> None:
    figures = run_figures([0.01] * 50, 0.5, 4)
    assert figures["requests"] == 50
    assert figures["requests_per_second"] == 100.0
    assert figures["concurrency"] == 4
    with pytest.raises(ValueError):
        run_figures([0.01], 0, 1)


def test_memory_of_this_process() -> None:
    figures = memory({"me": os.getpid(), "gone": 2**22 + 12345})
    assert figures["parts"]["me"]["processes"] >= 1
    assert figures["parts"]["me"]["rss_mb"] > 0
    assert figures["parts"]["gone"] == {"processes": 0, "rss_mb": 0.0, "pss_mb": 0.0}
    assert figures["rss_mb"] == figures["parts"]["me"]["rss_mb"]


def test_cpu_per_request() -> None:
    def busy() -> dict[str, Any]:
        deadline = time.process_time() + 0.05
        while time.process_time() < deadline:
            pass
        return {"requests": 10}

    assert cpu_seconds(os.getpid()) > 0
    figures = with_cpu(busy, lambda: {"me": os.getpid()})
    # This process is both client and server here: each of the 10 requests cost it about 5 ms.
    assert figures["client_cpu_ms_per_request"] >= 4.5
    assert figures["server_cpu_ms_per_request"] >= 4.5
    assert figures["cpu_ms_per_request_by_process"]["me"] == figures["server_cpu_ms_per_request"]


def test_ratios() -> None:
    assert report.ratio(3.0, 2.0) == 1.5
    assert report.ratio(1.0, 0.0) is None
    assert report.ratio(None, 2.0) is None
    ratios = report.ratios(side(900, 4, 12, 300), side(300, 5, 20, 150))
    assert ratios["throughput"] == 3.0
    assert ratios["latency_p50"] == 0.8
    assert ratios["idle_rss"] == 2.0
    assert all(v is None for v in report.ratios(side(900, 4, 12, 300), None).values())


def test_targets_all_met() -> None:
    targets = report.targets(side(1200, 4, 12, 300), side(400, 5, 20, 150))
    assert [t.met for t in targets] == [True, True, True, True]
    assert targets[0].value == "3x"


def test_targets_missed_at_their_limits() -> None:
    # 2.99x, a slower median, p99 of exactly 20 ms and exactly 400 MB all miss.
    targets = report.targets(side(299, 5.01, 20, 400), side(100, 5, 8, 150))
    assert [t.met for t in targets] == [False, False, False, False]
    assert {t.mark for t in targets} == {"MISSED"}


def test_targets_without_celery() -> None:
    targets = report.targets(side(500, 4, 12, 300), None)
    assert [t.met for t in targets] == [None, None, True, True]
    assert targets[0].mark == "n/a"


def test_table_has_every_row_and_target() -> None:
    text = report.table(side(1200, 4, 12, 300), side(400, 5, 20, 150))
    lines = text.splitlines()
    assert "cortado" in lines[0] and "celery" in lines[0] and "cortado/celery" in lines[0]
    for row in report.ROWS:
        assert any(line.startswith(row.label) for line in lines), row.label
    assert "1,200.0" in text and "3.00x" in text
    assert text.count("[ met  ]") == 4
    assert "-" in report.table(side(1200, 4, 12, 300), None).splitlines()[2]


def test_table_notes_expired_waits() -> None:
    cortado = side(1200, 4, 12, 300)
    assert "?wait=" not in report.table(cortado, None)
    cortado["slow"]["expired_waits"] = 2
    assert "note: 2 in the slow run: Cortado round trips" in report.table(cortado, None)


def test_document_is_json() -> None:
    doc = report.document(side(1200, 4, 12, 300), None, Workloads.quick().as_dict(), {"cpus": 2})
    again = json.loads(json.dumps(doc))
    assert again["celery"] is None
    assert again["targets"][2] == {"name": "sequential p99 < 20 ms", "value": "12 ms", "met": True, "mark": "met"}


def test_command_line_sizes() -> None:
    assert workloads_for(parse([])) == Workloads()
    assert workloads_for(parse(["--quick"])) == Workloads.quick()
    chosen = workloads_for(parse(["--requests", "10", "--concurrency", "2"]))
    assert (chosen.requests, chosen.concurrency, chosen.slow_concurrency) == (10, 2, 2)
    with pytest.raises(SystemExit):
        workloads_for(parse(["--sequential", "0"]))


def test_redis_argv_keeps_everything_in_memory(tmp_path: Path) -> None:
    celery_side = pytest.importorskip("bench.celery_side")
    argv = celery_side.redis_argv("redis-server", 6400, tmp_path)
    assert argv[argv.index("--save") + 1] == ""
    assert argv[argv.index("--appendonly") + 1] == "no"
    assert argv[argv.index("--bind") + 1] == "127.0.0.1"
    worker = celery_side.worker_argv(8)
    assert worker[worker.index("--pool") + 1] == "prefork"
    assert worker[worker.index("--concurrency") + 1] == "8"


def test_missing_redis_server_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    celery_side = pytest.importorskip("bench.celery_side")

    def missing(name: str) -> str:
        raise celery_side.MeshError(f"{name} is not installed")

    monkeypatch.setattr(celery_side, "find_binary", missing)
    with pytest.raises(celery_side.RedisUnavailableError, match="redis-server is not installed"):
        celery_side.redis_server_binary(install=False)
    monkeypatch.setattr(celery_side, "find_binary", lambda name: f"/opt/{name}")
    assert celery_side.redis_server_binary(install=False) == "/opt/redis-server"


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_quick_run_writes_well_formed_figures(tmp_path: Path) -> None:
    """`python -m bench --quick` starts its own mesh, measures, and writes the figures; never judged on speed."""
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sequential round trip p99 (ms)" in done.stdout
    figures = json.loads(out.read_text())
    assert set(figures) == {"machine", "workloads", "cortado", "celery", "ratios", "targets"}
    assert figures["celery"] is None
    cortado = figures["cortado"]
    quick = Workloads.quick()
    assert cortado["throughput"]["requests"] == quick.requests
    assert cortado["latency"]["requests"] == quick.sequential
    assert cortado["slow"]["requests"] == quick.slow_requests
    for run in ("throughput", "latency", "slow"):
        keys = ("requests_per_second", "p50_ms", "p90_ms", "p99_ms", "max_ms", "seconds")
        for key in (*keys, "server_cpu_ms_per_request", "client_cpu_ms_per_request"):
            assert cortado[run][key] > 0, (run, key)
        assert cortado[run]["expired_waits"] >= 0
        assert cortado[run]["p50_ms"] <= cortado[run]["p90_ms"] <= cortado[run]["p99_ms"] <= cortado[run]["max_ms"]
    idle = cortado["idle_memory"]
    assert idle["rss_mb"] > 0 and idle["pss_mb"] > 0
    assert {"nats", "envoy", "scheduler", "ingest", "results", "executor"} <= set(idle["parts"])
    assert idle["parts"]["executor"]["processes"] >= 2  # the executor and its handler process
    assert [t["mark"] for t in figures["targets"]][:2] == ["n/a", "n/a"]
    assert all(t["mark"] in ("met", "MISSED") for t in figures["targets"][2:])
