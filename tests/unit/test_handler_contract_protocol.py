"""The executor ↔ handler-process contract (services.executor.contract): the environment the executor writes and
the process reads back, the command that starts the process, and what the executor makes of its end."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from cortado._env import SettingsError
from services.executor import contract
from services.executor.contract import (
    EXIT_INIT_FAILED,
    EXIT_STOPPED,
    EXIT_TIMED_OUT,
    ProcessEnd,
    ProcessSettings,
    format_replica_environment,
    format_start_environment,
    handler_process_argv,
    parse_environment,
    parse_exit,
)


def test_what_the_executor_formats_the_handler_process_parses_back() -> None:
    environ = {
        "PATH": "/usr/bin",
        **format_replica_environment(replica=3, grace_seconds=12.5),
        **format_start_environment(Path("/work/projects/iris/v2.spec"), channel_fd=7, parent_pid=4242),
    }
    assert parse_environment(environ) == ProcessSettings(
        spec_file=Path("/work/projects/iris/v2.spec"),
        channel_fd=7,
        grace_seconds=12.5,
        replica="3",
        parent_pid=4242,
    )


def test_the_variables_keep_their_names() -> None:
    written = {
        **format_replica_environment(replica=0, grace_seconds=30.0),
        **format_start_environment(Path("spec"), channel_fd=5, parent_pid=1),
    }
    assert sorted(written) == [
        "CORTADO_GRACE_SECONDS",
        "CORTADO_WORKER_CHANNEL_FD",
        "CORTADO_WORKER_PARENT_PID",
        "CORTADO_WORKER_REPLICA",
        "CORTADO_WORKER_SPEC_FILE",
    ]
    assert all(contract.is_cortado_variable(name) for name in written)
    assert not contract.is_cortado_variable("PATH") and not contract.is_cortado_variable("cortado_lower")


def test_unset_variables_take_their_defaults() -> None:
    assert parse_environment({}) == ProcessSettings(
        spec_file=Path(""), channel_fd=-1, grace_seconds=30.0, replica="0", parent_pid=None
    )
    # Empty is unset, as for every CORTADO_ setting.
    assert parse_environment({"CORTADO_WORKER_CHANNEL_FD": "", "CORTADO_WORKER_PARENT_PID": ""}).channel_fd == -1


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CORTADO_WORKER_CHANNEL_FD", "seven", "CORTADO_WORKER_CHANNEL_FD must be an integer, got 'seven'"),
        ("CORTADO_WORKER_PARENT_PID", "12.5", "CORTADO_WORKER_PARENT_PID must be an integer, got '12.5'"),
        ("CORTADO_GRACE_SECONDS", "soon", "CORTADO_GRACE_SECONDS must be a number, got 'soon'"),
        ("CORTADO_GRACE_SECONDS", "-1", "CORTADO_GRACE_SECONDS must be at least 0, got -1.0"),
    ],
)
def test_a_malformed_variable_is_refused_by_name(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as refused:
        parse_environment({name: value})
    assert str(refused.value) == message


def test_the_process_starts_with_isolated_imports_from_its_package() -> None:
    assert handler_process_argv("/envs/abc/bin/python") == [
        "/envs/abc/bin/python",
        "-P",
        "-m",
        "services.executor.handlerprocess",
    ]
    assert contract.IMPORT_CHECK == "import services.executor.handlerprocess"


def test_most_jobs_is_slots_times_batch_size_each_at_least_one() -> None:
    assert contract.most_jobs(4, 8) == 32
    assert contract.most_jobs(0, 0) == 1
    assert contract.most_jobs(3, 0) == 3


def test_exit_codes_are_distinct_and_fixed() -> None:
    assert (EXIT_STOPPED, EXIT_INIT_FAILED, EXIT_TIMED_OUT) == (0, 3, 75)


@pytest.mark.parametrize(
    ("code", "restarting", "stuck", "failure", "expected"),
    [
        (
            EXIT_TIMED_OUT,
            False,
            False,
            "",
            ProcessEnd("timed_out", "a plain handler timed out and its process was restarted", 0.0),
        ),
        # The process said it was restarting, even if it then died some other way.
        (-9, True, False, "", ProcessEnd("timed_out", "a plain handler timed out and its process was restarted", 0.0)),
        (
            -9,
            False,
            True,
            "",
            ProcessEnd(
                "timed_out",
                "a cancelled request's handler did not stop in time and its process was restarted",
                0.0,
            ),
        ),
        (EXIT_INIT_FAILED, False, False, "Traceback ...", ProcessEnd("failed", "Traceback ...", 0.0)),
        (EXIT_STOPPED, False, False, "", ProcessEnd("exited", "the handler process stopped (exit code 0)", 42.0)),
        (1, False, False, "", ProcessEnd("exited", "the handler process stopped (exit code 1)", 42.0)),
        (
            -signal.SIGKILL,
            False,
            False,
            "",
            ProcessEnd("exited", "the handler process stopped (killed by SIGKILL)", 42.0),
        ),
    ],
)
def test_the_end_of_a_process_is_read_from_its_exit_code_and_what_it_said(
    code: int, restarting: bool, stuck: bool, failure: str, expected: ProcessEnd
) -> None:
    assert parse_exit(code, restarting=restarting, stuck=stuck, failure=failure, served_seconds=42.0) == expected


def test_an_exit_code_in_words() -> None:
    assert contract.format_exit_code(0) == "exit code 0"
    assert contract.format_exit_code(-signal.SIGTERM) == "killed by SIGTERM"
