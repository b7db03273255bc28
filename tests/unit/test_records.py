"""Request records: forward-only moves and the JSON clients read."""

from __future__ import annotations

import json

from cortado import records
from cortado.v1 import records_pb2

Q = records_pb2.REQUEST_STATUS_IN_QUEUE
P = records_pb2.REQUEST_STATUS_IN_PROGRESS
C = records_pb2.REQUEST_STATUS_COMPLETED
F = records_pb2.REQUEST_STATUS_FAILED


def test_records_only_move_forward_and_never_leave_a_final_state() -> None:
    assert records.may_move(Q, P)
    assert records.may_move(P, P)
    assert records.may_move(P, C)
    assert records.may_move(Q, F)
    assert not records.may_move(P, Q)
    assert not records.may_move(C, P)
    assert not records.may_move(C, F)
    assert not records.may_move(F, C)


def test_completed_json_splices_the_result_bytes_unchanged() -> None:
    record = records_pb2.RequestRecord(id="abc", api="x", status=C, result_json=b'{"z":1,"a":123456789012345678901234}')
    record.finished_at.FromJsonString("2026-11-27T08:00:00.250Z")
    text = records.render_json(records.view(record), "x")
    assert text == (
        b'{"id":"abc","status":"completed","result":{"z":1,"a":123456789012345678901234},'
        b'"timestamp":"2026-11-27T08:00:00.250000Z"}'
    )
    assert json.loads(text)["result"]["a"] == 123456789012345678901234


def test_failed_json_carries_the_error_and_no_result() -> None:
    record = records_pb2.RequestRecord(id="abc", api="x", status=F, result_json=b"{}")
    record.error.type = "ValueError"
    record.error.message = 'bad "input"'
    record.finished_at.FromJsonString("2026-11-27T08:00:00Z")
    body = json.loads(records.render_json(records.view(record), "x"))
    assert body == {
        "id": "abc",
        "status": "failed",
        "timestamp": "2026-11-27T08:00:00.000000Z",
        "error": {"type": "ValueError", "message": 'bad "input"'},
    }


def test_queued_json_has_only_id_and_status() -> None:
    record = records_pb2.RequestRecord(id="abc", api="x", status=Q)
    assert json.loads(records.render_json(records.view(record), "x")) == {"id": "abc", "status": "in_queue"}


def test_not_found_json_says_why() -> None:
    body = json.loads(records.render_json(records.not_found_view("nope"), "x"))
    assert body["status"] == "not_found"
    assert "unknown" in body["message"] and "expired" in body["message"]
