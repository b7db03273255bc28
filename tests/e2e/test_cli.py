"""The `cortado` CLI against the session's mesh: in-process through `cortado.cli.main`; `up` and `down` for real."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from cortado.cli import main
from cortado.client import SchedulerClient
from cortado.mesh import LocalMesh, free_port
from tests.helpers import eventually, unique_name, write_project

ECHO = """
from cortado import log


class Handler:
    def handle_async(self, payload, request_id):
        if isinstance(payload, dict) and payload.get("fail"):
            raise ValueError("asked to fail")
        log.info("handling a request", extra={"payload_type": type(payload).__name__})
        print(f"printed while handling {request_id}")
        if isinstance(payload, bytes):
            return {"type": "bytes", "hex": payload.hex()}
        return {"type": type(payload).__name__, "value": payload}
"""

BROKEN = """
class Handler:
    def __init__(self, config):
        raise RuntimeError("the model file is missing")

    def handle_async(self, payload):
        return payload
"""


@dataclass
class Run:
    """One CLI run: exit code and output."""

    code: int
    out: str
    err: str


def flags(mesh: LocalMesh) -> list[str]:
    """Point the CLI at the session's mesh."""
    return ["--scheduler", mesh.scheduler_address, "--endpoint", mesh.grpc_address]


def run_captured(*argv: str) -> Run:
    """`cortado ARGV` in-process with its output captured (for module fixtures, where capsys is not available)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return Run(code, out.getvalue(), err.getvalue())


Cli = Callable[..., Run]


@pytest.fixture
def cli(mesh: LocalMesh, capsys: pytest.CaptureFixture[str]) -> Cli:
    """cli("get", "-o", "json") runs `cortado get -o json --scheduler ... --endpoint ...` in-process."""

    def run(*argv: str) -> Run:
        capsys.readouterr()
        code = main([*argv, *flags(mesh)])
        out, err = capsys.readouterr()
        return Run(code, out, err)

    return run


@dataclass
class Deployed:
    """An API this module deployed through the CLI, and what `cortado deploy` said."""

    name: str
    deploy: Run


@pytest.fixture(scope="module")
def apis(
    mesh: LocalMesh, scheduler: SchedulerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Deployed]]:
    """An echo API (deployed and waited for), and one whose __init__ raises (deployed with -o json)."""
    root = tmp_path_factory.mktemp("cli")
    made: dict[str, Deployed] = {}
    try:
        for role, source, extra in (("echo", ECHO, ()), ("broken", BROKEN, ("-o", "json"))):
            name = unique_name(f"cli-{role}")
            project = write_project(root, name, source)
            made[role] = Deployed(name, run_captured("deploy", str(project), *extra, *flags(mesh)))
        yield made
    finally:
        for deployed in made.values():
            with contextlib.suppress(grpc.RpcError):
                scheduler.delete(deployed.name, force=True)


def echo(apis: dict[str, Deployed]) -> str:
    deployed = apis["echo"]
    assert deployed.deploy.code == 0, deployed.deploy
    return deployed.name


def submit_and_wait(cli: Cli, api: str, *payload: str) -> tuple[str, Run]:
    """`cortado submit API PAYLOAD`, then `cortado result API ID --wait`: (id, result run)."""
    submitted = cli("submit", api, *payload)
    assert submitted.code == 0, submitted
    request_id = submitted.out.strip()
    assert request_id and "\n" not in request_id, submitted.out
    return request_id, cli("result", api, request_id, "--wait", "--timeout", "60")


# --- deploy ----------------------------------------------------------------------------------------------------------


def test_deploy_shows_progress_on_stderr_and_the_api_on_stdout(apis: dict[str, Deployed]) -> None:
    name = echo(apis)
    run = apis["echo"].deploy
    assert run.out == f"{name}: live (version 1)\n", run
    assert "packaging 1 file" in run.err, run.err  # handler.py: the configuration file is left out
    assert re.search(r"uploading [0-9.]+ (B|KiB) to the scheduler", run.err), run.err
    assert f"{name}: live" in run.err, run.err


def test_deploy_of_an_api_that_fails_to_start_exits_1_and_json_output_parses(apis: dict[str, Deployed]) -> None:
    run = apis["broken"].deploy
    assert run.code == 1, run
    statuses = json.loads(run.out)
    assert isinstance(statuses, list) and len(statuses) == 1, run.out
    status = statuses[0]
    assert status["name"] == apis["broken"].name
    assert status["status"] == "failed", status
    assert status["replicas"] == {"ready": 0, "desired": 1}
    assert "RuntimeError: the model file is missing" in status["message"], status


def test_deploy_of_a_missing_folder_exits_1(cli: Cli, tmp_path: Path) -> None:
    run = cli("deploy", str(tmp_path / "nowhere"))
    assert run.code == 1
    assert run.err.startswith("error: ") and "nowhere is not a folder" in run.err, run.err


def test_deploy_of_an_invalid_config_exits_1_naming_file_api_and_key(cli: Cli, tmp_path: Path) -> None:
    name = unique_name("cli-invalid")
    project = write_project(tmp_path, name, ECHO, {"compute": {"inf": 1}})
    run = cli("deploy", str(project))
    assert run.code == 1, run
    assert f"error: cortado.yaml: api '{name}': compute.inf" in run.err, run.err


def test_deploy_of_an_api_at_zero_replicas_says_it_is_idle_and_exits_0(
    cli: Cli, scheduler: SchedulerClient, tmp_path: Path
) -> None:
    name = unique_name("cli-idle")
    project = write_project(tmp_path, name, ECHO, {"autoscaling": {"min_replicas": 0}})
    try:
        started = time.monotonic()
        run = cli("deploy", str(project), "--timeout", "30")
        assert run.code == 0, run
        assert (
            run.out
            == f"{name}: idle (version 1): scaled to zero (min_replicas 0); the first request starts a replica\n"
        )
        assert f"{name}: idle" in run.err and "starting" not in run.err, run.err
        assert time.monotonic() - started < 20  # it did not wait for a replica that is not coming
        got = cli("get", name)
        assert got.code == 0, got
        row = next(line for line in got.out.splitlines() if line.startswith(name))
        assert row.split()[1:3] == ["idle", "0/0"], got.out
        assert json.loads(cli("get", name, "-o", "json").out)["status"] == "idle"
        # Ready to wake: the first request starts a replica and is answered.
        _, result = submit_and_wait(cli, name, "--json", '{"a": 1}')
        assert result.code == 0, result
        assert json.loads(result.out)["result"] == {"type": "dict", "value": {"a": 1}}
    finally:
        with contextlib.suppress(grpc.RpcError):
            scheduler.delete(name, force=True)


# --- get and describe ------------------------------------------------------------------------------------------------


def test_get_prints_a_table_of_every_api(cli: Cli, apis: dict[str, Deployed]) -> None:
    name = echo(apis)
    run = cli("get")
    assert run.code == 0, run
    header, *rows = run.out.splitlines()
    for column in ("NAME", "STATUS", "REPLICAS", "QUEUED", "IN FLIGHT"):
        assert column in header, header
    assert header.index("NAME") < header.index("STATUS") < header.index("REPLICAS") < header.index("QUEUED")
    by_name = {row.split()[0]: row for row in rows}
    assert by_name[name].split()[1:3] == ["live", "1/1"], by_name[name]
    assert by_name[apis["broken"].name].split()[1:3] == ["failed", "0/1"], by_name[apis["broken"].name]


def test_get_json_is_a_list_of_statuses(cli: Cli, apis: dict[str, Deployed]) -> None:
    name = echo(apis)
    run = cli("get", "-o", "json")
    assert run.code == 0, run
    statuses = {status["name"]: status for status in json.loads(run.out)}
    status = statuses[name]
    assert status["status"] == "live"
    assert status["replicas"] == {"ready": 1, "desired": 1}
    assert status["queued"] == 0 and status["in_flight"] == 0
    assert status["version"] == 1
    one = cli("get", name, "--output", "json")
    assert one.code == 0, one
    assert json.loads(one.out)["name"] == name


def test_describe_a_failed_api_shows_the_traceback(cli: Cli, apis: dict[str, Deployed]) -> None:
    run = cli("describe", apis["broken"].name)
    assert run.code == 0, run
    assert "failed" in run.out.splitlines()[1], run.out
    assert "Traceback (most recent call last)" in run.out, run.out
    assert "handler.py" in run.out, run.out
    assert "RuntimeError: the model file is missing" in run.out, run.out


def test_describe_a_live_api(cli: Cli, apis: dict[str, Deployed]) -> None:
    name = echo(apis)
    run = cli("describe", name)
    assert run.code == 0, run
    lines = dict(line.split(":", 1) for line in run.out.splitlines() if ":" in line)
    assert lines["name"].strip() == name
    assert lines["status"].strip() == "live"
    assert lines["replicas"].strip() == "1 ready of 1"


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


# --- delete ----------------------------------------------------------------------------------------------------------


def test_delete_removes_the_api(cli: Cli, tmp_path: Path) -> None:
    name = unique_name("cli-delete")
    project = write_project(tmp_path, name, ECHO)
    deployed = cli("deploy", str(project), "--no-wait")
    assert deployed.code == 0, deployed
    assert deployed.out.startswith(f"{name}: "), deployed.out

    run = cli("delete", name)
    assert run.code == 0, run
    assert run.out == f"deleted {name}\n"
    assert name not in {status["name"] for status in json.loads(cli("get", "-o", "json").out)}
    gone = cli("describe", name)
    assert gone.code == 1
    assert gone.err == f"error: API '{name}' is not deployed\n"


# --- errors ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [("describe", "x"), ("get", "x"), ("delete", "x"), ("logs", "x")],
    ids=["describe", "get", "delete", "logs"],
)
def test_an_unknown_api_is_an_error(cli: Cli, argv: tuple[str, ...]) -> None:
    run = cli(*argv)
    assert run.code == 1, run
    assert run.err == "error: API 'x' is not deployed\n", run.err


def test_submit_and_result_for_an_unknown_api_are_errors(cli: Cli) -> None:
    run = cli("submit", "no-such-api", "--json", "{}")
    assert run.code == 1, run
    assert "error: " in run.err and "no-such-api" in run.err and "not deployed" in run.err, run.err
    run = cli("result", "no-such-api", "0" * 32)
    assert run.code == 1, run
    assert "no-such-api" in run.err and "not deployed" in run.err, run.err


def test_bad_json_is_an_error(cli: Cli, apis: dict[str, Deployed]) -> None:
    run = cli("submit", echo(apis), "--json", "{not json")
    assert run.code == 1, run
    assert run.err.startswith("error: --json is not valid JSON"), run.err
    assert run.out == ""


def test_an_unreadable_file_is_an_error(cli: Cli, apis: dict[str, Deployed], tmp_path: Path) -> None:
    run = cli("submit", echo(apis), "--file", str(tmp_path / "missing.json"))
    assert run.code == 1, run
    assert run.err.startswith("error: cannot read ") and "missing.json" in run.err, run.err


def test_an_unreachable_scheduler_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["get", "--scheduler", "127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: cannot reach Cortado"), err
    assert "cortado up" in err


@pytest.mark.parametrize(
    "argv",
    [[], ["frobnicate"], ["submit", "x"], ["submit", "x", "--json", "{}", "--text", "t"], ["get", "-o", "yaml"]],
    ids=["no command", "unknown command", "no payload", "two payloads", "bad output format"],
)
def test_a_usage_error_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2
    assert "usage: cortado" in capsys.readouterr().err


# --- up and down -----------------------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie nobody reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_up_starts_a_local_mesh_that_get_finds_and_down_stops(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORTADO_")}
    env["CORTADO_HOME"] = str(home)
    port = free_port()

    def cortado(*argv: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cortado.cli", *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    state_file = home / "mesh.json"
    pid: int | None = None

    def mesh_pid() -> int | None:
        with contextlib.suppress(OSError, ValueError, KeyError):
            return int(json.loads(state_file.read_text())["pid"])
        return pid

    try:
        up = cortado("up", "--port", str(port), "--timeout", "180")
        pid = mesh_pid()
        log = home / "mesh.log"
        assert up.returncode == 0, (up.stdout, up.stderr, log.read_text()[-3000:] if log.is_file() else "no mesh.log")
        console = json.loads((home / "mesh.json").read_text())["console_url"]
        assert up.stdout.splitlines() == [
            f"Cortado is serving on http://localhost:{port}",
            f"The web console is at {console}",
        ], up.stdout
        assert console.startswith("http://localhost:")
        assert pid is not None and _alive(pid)

        again = cortado("up", "--port", str(port))
        assert again.returncode == 0, again
        assert "already runs" in again.stderr, again.stderr

        get = cortado("get")  # no flags: the addresses come from $CORTADO_HOME/mesh.json
        assert get.returncode == 0, (get.stdout, get.stderr)
        assert get.stdout.strip() == "no APIs are deployed", get.stdout
        listed = cortado("get", "-o", "json")
        assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed
        project = write_project(tmp_path, "kept", "class Handler:\n    def handle_async(self):\n        return {}\n")
        deployed = cortado("deploy", str(project), "--no-wait")
        assert deployed.returncode == 0, (deployed.stdout, deployed.stderr)

        def down() -> None:
            stopped = cortado("down", "--timeout", "120")
            assert stopped.returncode == 0, (stopped.stdout, stopped.stderr)
            assert "stopped" in stopped.stderr
            assert not state_file.exists()
            gone = pid
            eventually(lambda: gone is None or not _alive(gone), timeout=60, interval=0.2, what=f"mesh {gone} exited")

        down()
        after = cortado("down")
        assert after.returncode == 0 and "no local mesh is running" in after.stderr, after

        # The state folder outlives the mesh (every checkout shares it): the next start says so and lists the API.
        again = cortado("up", "--port", str(port), "--timeout", "180")
        pid = mesh_pid()
        assert again.returncode == 0, (again.stdout, again.stderr)
        assert f"state: {home / 'mesh'}, APIs and requests of earlier runs kept; --fresh starts empty" in again.stderr
        assert [a["name"] for a in json.loads(cortado("get", "-o", "json").stdout)] == ["kept"]
        down()
        # --fresh starts empty.
        fresh = cortado("up", "--port", str(port), "--timeout", "180", "--fresh")
        pid = mesh_pid()
        assert fresh.returncode == 0, (fresh.stdout, fresh.stderr)
        assert f"state: {home / 'mesh'}, cleared first" in fresh.stderr
        assert cortado("get").stdout.strip() == "no APIs are deployed"
        assert f"state: {home / 'mesh'} (fresh: cleared)" in (home / "mesh.log").read_text()
        down()
    finally:
        pid = mesh_pid()
        if pid is not None and _alive(pid):
            # The mesh runs in its own session (process group): stop it and whatever it started.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


HOLDING = """
import time


class Handler:
    def handle_async(self, payload):
        time.sleep(30)
        return {}
"""


def test_delete_refuses_an_api_with_queued_requests_unless_forced(deploy, http, mesh, capsys) -> None:  # type: ignore[no-untyped-def]
    from cortado.cli import main
    from tests.conftest import submit
    from tests.helpers import eventually

    api = deploy(HOLDING)
    for _ in range(3):
        submit(http, api, json={})
    flags = ["--scheduler", mesh.scheduler_address]
    eventually(
        lambda: main(["get", api, "-o", "json", *flags]) == 0 and '"in_flight": 2' in capsys.readouterr().out, 20
    )
    assert main(["delete", api, *flags]) == 1
    err = capsys.readouterr().err
    assert f"error: API {api!r} has 1 queued and 2 in-flight requests" in err
    assert "--force" in err
    assert main(["delete", api, "--force", *flags]) == 0
    assert f"deleted {api}" in capsys.readouterr().out
