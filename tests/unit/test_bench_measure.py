"""The benchmark (`make bench`): the figures it measures and derives (percentiles, rates, memory, CPU, ratios,
drains)."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from bench import report, streams
from bench.drain import DrainError, drained
from bench.http_client import figures_of
from bench.measure import cpu_seconds, memory, per_request, percentiles, run_figures, with_cpu
from cortado.v1 import records_pb2
from tests.unit.benchfigures import CELERY_CPU, CORTADO_CPU, FLOOR_CPU, bulk_side, celery_bulk, measured_side, side


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
        deadline = time.process_time() + 0.2
        while time.process_time() < deadline:
            pass
        return {"requests": 10}

    assert cpu_seconds(os.getpid()) > 0
    figures = with_cpu(busy, lambda: {"me": os.getpid()})
    # This process is both client and server here: each of the 10 requests cost it about 20 ms. The process
    # tree's CPU time comes in clock ticks (10 ms here), so it may read a tick or two short.
    assert figures["client_cpu_ms_per_request"] >= 19.5
    assert figures["server_cpu_ms_per_request"] >= 17.5
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


def test_ratios_of_the_bulk_and_batch_runs() -> None:
    cortado = bulk_side(300, 2400, batch=1800, at_executor=4200)
    ratios = report.ratios(cortado, celery_bulk({"group": 400, "chunks of 100": 1200}))
    assert ratios["bulk_throughput"] == 2.0
    assert ratios["batch_throughput"] is None  # Celery has no batch feed
    floor_like = bulk_side(600, 4800, batch=3600, at_executor=8400)
    to_floor = report.ratios(cortado, floor_like)
    assert (to_floor["batch_throughput"], to_floor["batch_at_executor"]) == (0.5, 0.5)


def test_rate_figures_and_batch_sizes() -> None:
    assert streams.rate_figures(500, 0.25, streams=1) == {
        "requests": 500,
        "seconds": 0.25,
        "requests_per_second": 2000.0,
        "streams": 1,
    }
    with pytest.raises(ValueError):
        streams.rate_figures(1, 0)
    assert streams.mean_batch_size([64, 64, 32]) == 53.3
    assert streams.mean_batch_size([]) is None
    assert streams._batch_size(b'{"ok": true, "batch_size": 12}') == 12
    assert streams._batch_size(b'{"ok": true}') is None
    assert streams._batch_size(b"[1, 2]") is None
    assert streams._batch_size(b"not json") is None
    assert streams.CODES[8] == "RESOURCE_EXHAUSTED"


def _record(request_id: str, started: float, finished: float, completed: bool = True) -> records_pb2.RequestRecord:
    record = records_pb2.RequestRecord(id=request_id)
    record.status = records_pb2.REQUEST_STATUS_COMPLETED if completed else records_pb2.REQUEST_STATUS_FAILED
    record.started_at.FromNanoseconds(int(started * 1e9))
    record.finished_at.FromNanoseconds(int(finished * 1e9))
    return record


def test_a_drain_spans_the_first_start_to_the_last_finish() -> None:
    span = drained([_record("b", 100.5, 100.75), _record("a", 100.0, 100.25), _record("c", 100.25, 101.0)])
    assert (span.requests, span.first_started, span.last_finished) == (3, 100.0, 101.0)
    assert span.seconds == 1.0
    assert span.rate == 3.0
    with pytest.raises(DrainError, match="request x did not complete"):
        drained([_record("a", 1, 2), _record("x", 1, 2, completed=False)])
    with pytest.raises(DrainError):
        drained([])


def test_per_request_nats_messages() -> None:
    assert per_request({"in": 100, "out": 50}, {"in": 500, "out": 950}, 100) == {"in": 4.0, "out": 9.0, "total": 13.0}
    assert per_request({"in": 0, "out": 0}, {"in": 1, "out": 2}, 3) == {"in": 0.33, "out": 0.67, "total": 1.0}
    assert per_request({"in": 0, "out": 0}, {"in": 5, "out": 5}, 0)["total"] == 10.0  # no division by zero


def test_process_rows_sum_instances_and_share_the_worker_row() -> None:
    rows = {row.label.strip(): row for row in report.PROCESS_ROWS}
    worker = rows["executor (+ handler) / worker"]
    cortado, floor = measured_side(300, CORTADO_CPU), measured_side(700, FLOOR_CPU)
    celery = measured_side(500, CELERY_CPU)
    assert worker.value(cortado) == 2.0  # executor and executor1
    assert worker.value(floor) == 0.2
    assert worker.value(celery) == 2.0
    assert rows["scheduler"].value(floor) is None
    assert rows["redis"].value(celery) == 0.4 and rows["redis"].value(cortado) is None
    assert rows["envoy"].value(None) is None
    assert (
        report.process_figure({"throughput": {"cpu_ms_per_request_by_process": 3}}, report.BY_PROCESS, ("x",)) is None
    )


def test_ratios_to_the_floor() -> None:
    cortado, floor = measured_side(300, CORTADO_CPU, 20.0), measured_side(750, FLOOR_CPU, 9.0)
    cortado["one_call"] = {"requests_per_second": 400.0}
    floor["one_call"] = {"requests_per_second": 1000.0}
    ratios = report.ratios(cortado, floor)
    assert ratios["throughput"] == 0.4
    assert ratios["one_call_throughput"] == 0.4
    assert ratios["nats_msgs_per_request"] == 2.22
    assert ratios["cpu_results"] == 2.5
    assert ratios["cpu_executor"] == 10.0
    assert ratios["cpu_scheduler"] is None  # the floor has none
    del floor["slow"]  # the floor has no 10 ms handler run
    assert report.ratios(cortado, floor)["slow_throughput"] is None


def test_figures_count_expired_waits() -> None:
    figures = figures_of([(0.01, 1), (0.02, 2), (0.03, 1), (0.04, 3)], 0.1, 2)
    assert figures["requests"] == 4
    assert figures["expired_waits"] == 2
