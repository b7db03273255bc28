"""The console's pure parts: the activity sampler, the request filter, previews, trace links and its files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cortado.console import console_file
from cortado.v1 import control_pb2, records_pb2
from services.executor.handlerprocess import user_traceback
from services.scheduler.activity import Activity
from services.scheduler.requestdetail import is_text, preview, trace_url
from services.scheduler.requestlist import BadFilterError, parse_filter, summary


def beat(*replicas: tuple[str, int, int, int, float], executor: str = "e1") -> control_pb2.ExecutorInfo:
    """A heartbeat: (api, replica number, completed, failed, latency sum) per replica, version 1."""
    return control_pb2.ExecutorInfo(
        id=executor,
        replicas=[
            control_pb2.ReplicaStatus(
                api=api, version=1, replica=n, completed=done, failed=failed, latency_seconds_sum=latency
            )
            for api, n, done, failed, latency in replicas
        ],
    )


def test_the_first_sample_only_sets_where_counters_stand() -> None:
    activity = Activity()
    activity.sample([beat(("a", 0, 100, 5, 50.0))], now=1000.0)
    shown = activity.of("a", now=1000.0)
    assert (shown.completed, shown.failed) == (0, 0)
    assert len(shown.points) == 1


def test_what_replicas_finish_between_samples_lands_in_its_interval_with_its_mean_latency() -> None:
    activity = Activity()
    activity.sample([beat(("a", 0, 10, 0, 5.0), ("b", 0, 0, 0, 0.0))], now=1000.0)
    activity.sample([beat(("a", 0, 14, 1, 10.0), ("b", 0, 2, 0, 1.0))], now=1005.0)
    activity.sample([beat(("a", 0, 16, 1, 12.0), ("b", 0, 2, 0, 1.0))], now=1012.0)
    a = activity.of("a", now=1012.0)
    assert (a.completed, a.failed) == (6, 1)
    assert [(p.start.seconds, p.completed, p.failed) for p in a.points] == [(1000, 4, 1), (1010, 2, 0)]
    assert a.points[0].mean_latency_seconds == pytest.approx(5.0 / 5)
    assert a.points[1].mean_latency_seconds == pytest.approx(2.0 / 2)
    assert a.interval.seconds == 10
    b = activity.of("b", now=1012.0)
    assert [p.completed for p in b.points] == [2, 0]


def test_a_new_replica_counts_everything_and_a_restarted_one_counts_from_zero() -> None:
    activity = Activity()
    activity.sample([beat(("a", 0, 50, 0, 10.0))], now=1000.0)
    # Replica 1 started after the first sample; replica 0's process restarted (its counters went down).
    activity.sample([beat(("a", 0, 3, 0, 0.3), ("a", 1, 7, 2, 0.9))], now=1001.0)
    a = activity.of("a", now=1001.0)
    assert (a.completed, a.failed) == (10, 2)
    assert a.points[-1].mean_latency_seconds == pytest.approx(1.2 / 12)


def test_the_window_keeps_fifteen_minutes_of_points_oldest_first() -> None:
    activity = Activity()
    activity.sample([beat(("a", 0, 0, 0, 0.0))], now=0.0)
    for step in range(1, 200):
        activity.sample([beat(("a", 0, step, 0, float(step)))], now=step * 10.0)
    a = activity.of("a", now=1990.0)
    assert len(a.points) == 90
    assert a.window.seconds == 900
    assert [p.start.seconds for p in a.points] == list(range(1100, 2000, 10))
    assert a.completed == 90
    activity.forget("a")
    assert activity.of("a", now=1990.0).completed == 0


def test_status_filters_name_request_states_and_refuse_anything_else() -> None:
    assert parse_filter("") is None
    assert parse_filter("failed") == records_pb2.REQUEST_STATUS_FAILED
    assert parse_filter(" In_Queue ") == records_pb2.REQUEST_STATUS_IN_QUEUE
    with pytest.raises(BadFilterError) as refused:
        parse_filter("not_found")
    assert str(refused.value) == (
        "status 'not_found' is not a request state; use one of in_queue, in_progress, completed, failed, cancelled, "
        "or none for all"
    )


def test_a_summary_keeps_phase_times_and_reads_an_unset_priority_as_normal() -> None:
    record = records_pb2.RequestRecord(id="x", status=records_pb2.REQUEST_STATUS_FAILED, attempts=2)
    record.error.type = "ValueError"
    record.submitted_at.FromSeconds(10)
    line = summary(record)
    assert line.priority == records_pb2.PRIORITY_NORMAL
    assert line.HasField("submitted_at") and not line.HasField("started_at")
    assert (line.error_type, line.attempts) == ("ValueError", 2)


def test_previews_show_text_only_and_say_when_cut() -> None:
    assert is_text("application/json") and is_text("text/csv; charset=utf-8") and is_text("application/ld+json")
    assert not is_text("image/png") and not is_text("application/octet-stream")
    shown = preview("text/plain", b"a" * 70_000, 70_000)
    assert len(shown.text) == 65_536 and shown.truncated
    image = preview("image/png", b"\x89PNG", 4)
    assert (image.text, image.size, image.retained) == ("", 4, True)
    assert preview("text/plain", "é".encode()[:1], 1).text == "\ufffd"


def test_trace_links_go_to_the_trace_when_known_else_to_a_search_by_request_id() -> None:
    assert trace_url("", "abc", "") == ""
    assert trace_url("http://jaeger:16686/", "abc", "f" * 32) == f"http://jaeger:16686/trace/{'f' * 32}"
    assert trace_url("http://jaeger:16686", "abc", "") == (
        "http://jaeger:16686/search?service=cortado-executor&tags=%7B%22cortado.request_id%22%3A%22abc%22%7D"
    )


def test_console_files_are_served_from_the_package_and_nothing_outside_it() -> None:
    page = console_file("")
    assert page is not None and page[1] == "text/html; charset=utf-8"
    assert console_file("index.html") == page
    script = console_file("app.js")
    assert script is not None and script[1] == "text/javascript; charset=utf-8"
    for path in ("../__init__.py", "nothing.html", ".hidden", "static/../../mesh.py", "..\\x"):
        assert console_file(path) is None, path


def test_a_handlers_traceback_starts_at_its_own_code(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "handler.py").write_text("def handle():\n    raise ValueError('bad')\n")
    code = compile((project / "handler.py").read_text(), str(project / "handler.py"), "exec")
    scope: dict[str, Any] = {}
    exec(code, scope)

    def cortados_call() -> None:
        scope["handle"]()

    with pytest.raises(ValueError) as raised:
        cortados_call()
    shown = user_traceback(raised.value, project)
    assert shown.startswith("Traceback (most recent call last):\n")
    assert f'File "{project / "handler.py"}", line 2, in handle' in shown
    assert "cortados_call" not in shown
    assert shown.endswith("ValueError: bad\n")
    # No frame of the project: the whole traceback.
    assert "cortados_call" in user_traceback(raised.value, tmp_path / "elsewhere")
