"""The executor ↔ handler-process contract: what each side may rely on from the other, in one place.

The executor (`services.executor.replica`) starts the handler process (`services.executor.handlerprocess`)
with an environment, talks to it in frames (`services.executor.channel`, messages `cortado.v1.handler`)
and reads its exit code. This module names everything both sides must agree on: how the process is
started, the variables of its environment (`format_*_environment` on the executor's side,
`parse_environment` on the process's), the largest frame, the exit codes and what the executor makes of
them (`parse_exit`), and the error types of the outcomes the executor treats specially.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

from cortado._env import PREFIX, Env

# --- starting the process ---------------------------------------------------------------------------------------------

HANDLER_PROCESS_MODULE = "services.executor.handlerprocess"
"""The module the handler process runs (`python -P -m ...`)."""

IMPORT_CHECK = f"import {HANDLER_PROCESS_MODULE}"
"""Python that succeeds where a handler process can start: an interpreter, user or env that cannot run it fails."""


def handler_process_argv(python: str) -> list[str]:
    """The command that starts a handler process with this interpreter.

    `-P`: the project folder (its working directory) must not shadow Cortado's own modules; the process
    adds it to `sys.path` itself, after them.
    """
    return [python, "-P", "-m", HANDLER_PROCESS_MODULE]


# --- its environment --------------------------------------------------------------------------------------------------

SPEC_FILE = "WORKER_SPEC_FILE"
"""`CORTADO_WORKER_SPEC_FILE`: the serialized `ApiSpec` the process serves."""

CHANNEL_FD = "WORKER_CHANNEL_FD"
"""`CORTADO_WORKER_CHANNEL_FD`: the process's end of the socket pair (`services.executor.channel`)."""

PARENT_PID = "WORKER_PARENT_PID"
"""`CORTADO_WORKER_PARENT_PID`: the executor's pid; the process stops when its parent is another."""

REPLICA = "WORKER_REPLICA"
"""`CORTADO_WORKER_REPLICA`: the replica's number, a label of the process's log lines."""

GRACE_SECONDS = "GRACE_SECONDS"
"""`CORTADO_GRACE_SECONDS`: how long running calls may go on once the process is told to stop."""

DEFAULT_GRACE_SECONDS = 30.0
"""The grace period when the environment names none (the executor always does)."""


def variable(name: str) -> str:
    """The environment variable that carries setting name (`CORTADO_<name>`)."""
    return PREFIX + name


def is_cortado_variable(name: str) -> bool:
    """Whether an environment variable is Cortado's (the handler process removes them before loading the handler)."""
    return name.startswith(PREFIX)


def format_replica_environment(replica: int, grace_seconds: float) -> dict[str, str]:
    """The variables that hold for a replica's whole life (its dependency steps see them too)."""
    return {variable(REPLICA): str(replica), variable(GRACE_SECONDS): str(grace_seconds)}


def format_start_environment(spec_file: Path, channel_fd: int, parent_pid: int) -> dict[str, str]:
    """The variables of one start of the handler process."""
    return {
        variable(SPEC_FILE): str(spec_file),
        variable(CHANNEL_FD): str(channel_fd),
        variable(PARENT_PID): str(parent_pid),
    }


@dataclass(frozen=True)
class ProcessSettings:
    """What the handler process is told by its executor, read back from its environment."""

    spec_file: Path
    channel_fd: int
    grace_seconds: float
    replica: str
    """The replica's number as the label of log lines ("0" when unset)."""
    parent_pid: int | None
    """The executor's pid, None when unset."""


def parse_environment(environ: Mapping[str, str]) -> ProcessSettings:
    """The settings `format_replica_environment` and `format_start_environment` wrote into environ.

    An unset variable takes its default (no spec file, channel fd -1, a 30 s grace, replica "0", no
    parent); a malformed number raises `cortado._env.SettingsError` naming the variable.
    """
    env = Env(environ)
    parent_pid = env.integer(PARENT_PID, 0)
    return ProcessSettings(
        spec_file=Path(env.text(SPEC_FILE, "")),
        channel_fd=env.integer(CHANNEL_FD, -1),
        grace_seconds=env.number(GRACE_SECONDS, DEFAULT_GRACE_SECONDS, minimum=0),
        replica=env.text(REPLICA, "0"),
        parent_pid=parent_pid or None,
    )


# --- frames -----------------------------------------------------------------------------------------------------------

MAX_FRAME_BYTES = 256 * 1024 * 1024
"""Largest frame either side accepts: a batch of jobs whose bodies are each at most 32 MiB, or their results."""


def most_jobs(max_concurrency: int, max_batch_size: int) -> int:
    """The most jobs a handler process holds at once: each call's slot times the batch size (each at least 1)."""
    return max(1, max_concurrency) * max(1, max_batch_size)


# --- outcomes ---------------------------------------------------------------------------------------------------------

CANCELLED_ERROR = "RequestCancelled"
"""Error type of the outcome of a job whose request was cancelled (the executor drops it)."""

CANCELLED_MESSAGE = "the request was cancelled"
"""Error message of that outcome."""

TIMED_OUT_ERROR = "TimedOut"
"""Error type of the outcome of a call that ran past the API's timeout."""

INVALID_RESULT_ERROR = "InvalidResult"
"""Error type of the outcome of a call whose result cannot be sent (not JSON, a bad file, ...)."""

# --- exit codes -------------------------------------------------------------------------------------------------------

EXIT_STOPPED = 0
"""The process stopped as told (SIGTERM, or the executor closed the channel) after its grace period."""

EXIT_INIT_FAILED = 3
"""The handler could not be loaded or its `__init__` raised; the traceback went to the executor first."""

EXIT_TIMED_OUT = 75
"""A plain handler ran past the API's timeout in a thread that cannot be stopped: restart the process at once."""


class ProcessEnd(NamedTuple):
    """Why a handler process ended, as its replica reports it."""

    kind: Literal["failed", "timed_out", "exited"]
    """failed: the handler did not load (retried with a backoff); timed_out: restart at once; exited: it died."""
    detail: str
    """The traceback for failed, else the replica's status message."""
    served_seconds: float
    """How long it served (exited only; 0 otherwise)."""


def parse_exit(code: int, *, restarting: bool, stuck: bool, failure: str, served_seconds: float) -> ProcessEnd:
    """What a handler process's end means.

    code is its exit status (negative: the signal that killed it); restarting whether it said so in a frame
    (a plain handler timed out); stuck whether the executor stopped it because a cancelled request's
    handler did not stop in time; failure the traceback it sent when the handler did not load ("" if none);
    served_seconds how long it was ready.
    """
    if code == EXIT_TIMED_OUT or restarting:
        return ProcessEnd("timed_out", "a plain handler timed out and its process was restarted", 0.0)
    if stuck:
        return ProcessEnd(
            "timed_out", "a cancelled request's handler did not stop in time and its process was restarted", 0.0
        )
    if failure:
        return ProcessEnd("failed", failure, 0.0)
    return ProcessEnd("exited", f"the handler process stopped ({format_exit_code(code)})", served_seconds)


def format_exit_code(code: int) -> str:
    """An exit status in words: `exit code 1`, or `killed by SIGKILL` for a negative one."""
    return f"exit code {code}" if code >= 0 else f"killed by {signal.Signals(-code).name}"
