"""Handler logs: JSON lines with Cortex's keys and labels, extra flattened, print captured, big lines handled."""

from __future__ import annotations

import json
import os
import secrets
import threading
from typing import Any

import httpx
import pytest

from cortado.client import SchedulerClient
from tests.helpers import eventually
from tests.meshcalls import Deploy, result, submit

HANDLER = """
from cortado import log
from cortex_internal.lib.log import logger as cortex_log


class Handler:
    def handle_async(self, payload, request_id):
        kind = payload["kind"]
        if kind == "extra":
            log.info("received", extra={"payload": {"nested": {"deep": 1}}, "name": "x", "levelname": "FAKE"})
            log.info("again", extra={"levelname": "FAKE", "message": "fake"})
        elif kind == "print":
            print("printed", payload["n"])
        elif kind == "cortex":
            cortex_log.warning("from the cortex logger", extra={"score": 0.5})
        elif kind == "size":
            log.info("x" * payload["bytes"])
            log.info("after the big one")
        elif kind == "trace":
            log.info("traced")
            print("printed while traced")
        return {"ok": True}
"""


def lines(scheduler: SchedulerClient, api: str, tail: int = 1000) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in scheduler.logs(api, tail=tail)]


def run(http: httpx.Client, api: str, payload: dict[str, Any], **request: Any) -> str:
    request_id = submit(http, api, json=payload, **request)
    assert result(http, api, request_id)["status"] == "completed"
    return request_id


def test_log_lines_have_cortex_keys_labels_and_flattened_extra(
    deploy: Deploy, http: httpx.Client, scheduler: SchedulerClient
) -> None:
    api = deploy(HANDLER)
    request_id = run(http, api, {"kind": "extra"})
    line = eventually(lambda: next((x for x in lines(scheduler, api) if x["message"] == "received"), None), 10)
    assert {"asctime", "levelname", "message", "process", "labels"} <= set(line)
    assert line["levelname"] == "INFO"
    assert line["labels"] == {"api": api, "replica": "0", "request_id": request_id}
    assert line["payload"] == {"nested": {"deep": 1}}
    assert line["name"] == "x"
    again = eventually(lambda: next((x for x in lines(scheduler, api) if x["message"] == "again"), None), 10)
    assert again["levelname"] == "INFO"
    warnings = [x for x in lines(scheduler, api) if "is reserved and was ignored" in x["message"]]
    # Each reserved key is reported once, however often it is used.
    assert sorted(w["message"].split("'")[1] for w in warnings) == ["levelname", "message"]


def test_print_and_the_cortex_logger_become_log_lines_of_the_request(
    deploy: Deploy, http: httpx.Client, scheduler: SchedulerClient
) -> None:
    api = deploy(HANDLER)
    printed_id = run(http, api, {"kind": "print", "n": 7})
    cortex_id = run(http, api, {"kind": "cortex"})
    printed = eventually(lambda: next((x for x in lines(scheduler, api) if x["message"] == "printed 7"), None), 10)
    assert printed["labels"]["request_id"] == printed_id
    assert printed["levelname"] == "INFO"
    cortex = eventually(
        lambda: next((x for x in lines(scheduler, api) if x["message"] == "from the cortex logger"), None), 10
    )
    assert cortex["levelname"] == "WARNING"
    assert cortex["score"] == 0.5
    assert cortex["labels"]["request_id"] == cortex_id


def test_a_line_over_5_mb_is_dropped_and_one_between_1_and_5_mb_arrives(
    deploy: Deploy, http: httpx.Client, scheduler: SchedulerClient
) -> None:
    api = deploy(HANDLER)
    run(http, api, {"kind": "size", "bytes": 2 * 1024 * 1024})
    run(http, api, {"kind": "size", "bytes": 6 * 1024 * 1024})

    def settled() -> list[dict[str, Any]] | None:
        got = lines(scheduler, api)
        return got if sum(1 for x in got if x["message"] == "after the big one") == 2 else None

    got = eventually(settled, 20)
    sizes = [len(x["message"]) for x in got if x["message"].startswith("xxx")]
    assert sizes == [2 * 1024 * 1024]
    assert any(x["message"] == "a log line over 5 MB was dropped" for x in got)


def test_logs_follow_streams_new_lines_as_they_come(
    deploy: Deploy, http: httpx.Client, scheduler: SchedulerClient
) -> None:
    api = deploy(HANDLER)
    seen: list[str] = []
    arrived = threading.Event()

    def follow() -> None:
        for raw in scheduler.logs(api, tail=0, follow=True):
            seen.append(json.loads(raw)["message"])
            if "printed 99" in seen:
                arrived.set()
                return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    run(http, api, {"kind": "print", "n": 99})
    assert arrived.wait(20), seen


def test_every_line_a_handler_writes_carries_its_request_trace_id_without_an_exporter(
    deploy: Deploy, http: httpx.Client, scheduler: SchedulerClient
) -> None:
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        pytest.skip("the session's mesh exports traces: this test is about a mesh without an exporter")
    api = deploy(HANDLER)
    trace_id = secrets.token_hex(16)
    given = run(http, api, {"kind": "trace"}, headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})
    fresh = [run(http, api, {"kind": "trace"}) for _ in range(2)]

    def traced() -> dict[str, dict[str, str]] | None:
        found: dict[str, dict[str, str]] = {}
        for line in lines(scheduler, api):
            if line["message"] in ("traced", "printed while traced"):
                found[f"{line['labels']['request_id']} {line['message']}"] = line
        return found if len(found) == 6 else None

    found = eventually(traced, 10, what="both lines of each of the three requests")
    for message in ("traced", "printed while traced"):
        assert found[f"{given} {message}"]["trace_id"] == trace_id, found[f"{given} {message}"]
        ids = [found[f"{request_id} {message}"].get("trace_id", "") for request_id in fresh]
        # A request without a traceparent gets a trace of its own: a valid W3C id, new for each request.
        assert all(len(i) == 32 and int(i, 16) != 0 for i in ids), ids
        assert len({trace_id, *ids}) == 3, ids
        assert ids == [found[f"{request_id} traced"]["trace_id"] for request_id in fresh]
