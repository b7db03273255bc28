"""`cortado submit`, `result` and `logs` against the session's mesh, and the errors of `submit`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.e2e.cli_support import Cli, Deployed, echo, submit_and_wait
from tests.helpers import eventually

# --- submit and result -----------------------------------------------------------------------------------------------


def test_submit_json_then_result_wait_prints_the_result_and_exits_0(cli: Cli, apis: dict[str, Deployed]) -> None:
    name = echo(apis)
    request_id, run = submit_and_wait(cli, name, "--json", '{"text": "café", "n": [1, 2]}')
    assert run.code == 0, run
    body = json.loads(run.out)
    assert body["id"] == request_id
    assert body["status"] == "completed"
    assert body["result"] == {"type": "dict", "value": {"text": "café", "n": [1, 2]}}
    assert "timestamp" in body
    # Once finished, `result` without --wait answers the same, and -o json is indented.
    again = cli("result", name, request_id, "-o", "json")
    assert again.code == 0, again
    assert json.loads(again.out) == body
    assert "\n  " in again.out


def test_submit_json_output_gives_the_id(cli: Cli, apis: dict[str, Deployed]) -> None:
    run = cli("submit", echo(apis), "--json", "1", "-o", "json")
    assert run.code == 0, run
    assert len(json.loads(run.out)["id"]) == 32


def test_submit_text(cli: Cli, apis: dict[str, Deployed]) -> None:
    _, run = submit_and_wait(cli, echo(apis), "--text", "hello world")
    assert run.code == 0, run
    assert json.loads(run.out)["result"] == {"type": "str", "value": "hello world"}


def test_submit_file_sends_json_files_as_json_and_others_as_bytes(
    cli: Cli, apis: dict[str, Deployed], tmp_path: Path
) -> None:
    name = echo(apis)
    payload = tmp_path / "payload.json"
    payload.write_text('{"from": "a file"}')
    _, run = submit_and_wait(cli, name, "--file", str(payload))
    assert run.code == 0, run
    assert json.loads(run.out)["result"] == {"type": "dict", "value": {"from": "a file"}}

    binary = tmp_path / "payload.bin"
    binary.write_bytes(b"\x00\xffbytes")
    _, run = submit_and_wait(cli, name, "--file", str(binary))
    assert run.code == 0, run
    assert json.loads(run.out)["result"] == {"type": "bytes", "hex": b"\x00\xffbytes".hex()}

    text = tmp_path / "note.txt"
    text.write_text("plain text")
    _, run = submit_and_wait(cli, name, "--file", str(text), "--content-type", "text/plain")
    assert run.code == 0, run
    assert json.loads(run.out)["result"] == {"type": "str", "value": "plain text"}


def test_result_of_a_failed_request_exits_1_with_the_error(cli: Cli, apis: dict[str, Deployed]) -> None:
    _, run = submit_and_wait(cli, echo(apis), "--json", '{"fail": true}')
    assert run.code == 1, run
    body = json.loads(run.out)
    assert body["status"] == "failed"
    assert "asked to fail" in body["error"]["message"], body
    assert "result" not in body


def test_result_of_an_unknown_request_exits_1(cli: Cli, apis: dict[str, Deployed]) -> None:
    name = echo(apis)
    for extra in ((), ("--wait",)):
        run = cli("result", name, "0" * 32, *extra)
        assert run.code == 1, run
        assert json.loads(run.out)["status"] == "not_found"


# --- logs ------------------------------------------------------------------------------------------------------------


def test_logs_show_what_the_handler_logged_and_printed(cli: Cli, apis: dict[str, Deployed]) -> None:
    name = echo(apis)
    request_id, run = submit_and_wait(cli, name, "--json", '{"for": "logs"}')
    assert run.code == 0, run

    def both_lines() -> str | None:
        logs = cli("logs", name)
        assert logs.code == 0, logs
        if "handling a request" in logs.out and f"printed while handling {request_id}" in logs.out:
            return logs.out
        return None

    text = eventually(both_lines, timeout=30, interval=0.2, what="the handler's lines in `cortado logs`")
    line = next(line for line in text.splitlines() if "handling a request" in line and request_id[:12] in line)
    assert "INFO" in line and '"payload_type": "dict"' in line, line

    def json_lines() -> list[dict[str, Any]] | None:
        logs = cli("logs", name, "-o", "json", "--tail", "1000")
        assert logs.code == 0, logs
        lines = [json.loads(raw) for raw in logs.out.splitlines()]
        mine = [line for line in lines if line.get("labels", {}).get("request_id") == request_id]
        return mine if len(mine) >= 2 else None

    mine = eventually(json_lines, timeout=30, interval=0.2, what="JSON log lines of the request")
    messages = {line["message"] for line in mine}
    assert {"handling a request", f"printed while handling {request_id}"} <= messages, mine
    logged = next(line for line in mine if line["message"] == "handling a request")
    assert logged["levelname"] == "INFO" and logged["payload_type"] == "dict"
    assert logged["labels"]["api"] == name
    assert {"asctime", "process"} <= set(logged)


# --- errors ----------------------------------------------------------------------------------------------------------


def test_bad_json_is_an_error(cli: Cli, apis: dict[str, Deployed]) -> None:
    run = cli("submit", echo(apis), "--json", "{not json")
    assert run.code == 1, run
    assert run.err.startswith("error: --json is not valid JSON"), run.err
    assert run.out == ""


def test_an_unreadable_file_is_an_error(cli: Cli, apis: dict[str, Deployed], tmp_path: Path) -> None:
    run = cli("submit", echo(apis), "--file", str(tmp_path / "missing.json"))
    assert run.code == 1, run
    assert run.err.startswith("error: cannot read ") and "missing.json" in run.err, run.err
