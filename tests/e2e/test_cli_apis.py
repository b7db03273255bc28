"""`cortado deploy`, `get`, `describe` and `delete` against the session's mesh."""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path

import grpc

from cortado.client import SchedulerClient
from tests.e2e.cli_support import ECHO, Cli, Deployed, echo, submit_and_wait
from tests.helpers import unique_name, write_project

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


HOLDING = """
import time


class Handler:
    def handle_async(self, payload):
        time.sleep(30)
        return {}
"""


def test_delete_refuses_an_api_with_queued_requests_unless_forced(deploy, http, mesh, capsys) -> None:  # type: ignore[no-untyped-def]
    from cortado.cli import main
    from tests.helpers import eventually
    from tests.meshcalls import submit

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
