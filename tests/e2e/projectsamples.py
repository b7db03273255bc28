"""The projects of the end-to-end project tests: their handlers, files, `.env` and dependency files, and the
deployments made of them (through the scheduler or the CLI) with what tests read back."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from cortado.cli import main as cortado_cli
from cortado.client import SchedulerClient
from cortado.mesh import LocalMesh
from cortado.v1 import control_pb2
from tests.helpers import eventually, unique_name, write_project
from tests.meshcalls import result, submit

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cortex-sentiment"


MIB = 1024 * 1024


DEPENDENCIES_TIMEOUT = 180.0  # a fresh virtualenv and a pip install from the index, on a small machine


# --- the projects ----------------------------------------------------------------------------------------------------

LIST_FILES = """
import os

class Handler:
    def handle_async(self, payload):
        files = sorted(
            os.path.relpath(os.path.join(folder, name), ".").replace(os.sep, "/")
            for folder, _, names in os.walk(".")
            for name in names
        )
        return {
            "files": files,
            "reads_by_relative_path": open("data/values.json").read(),
            "env": {name: os.environ.get(name) for name in payload["env"]},
        }
"""


# What the files project holds: every file the handler must see, and every file it must not.
VISIBLE = {
    "handler.py": None,  # written by write_project
    "data/values.json": '{"threshold": 0.5}',
    "data/nested/deep.txt": "deep",
    "data/cortex.yaml": "only the top-level configuration file is left out",
    "data/top-only.txt": "`/top-only.txt` is anchored to the root",
    "keep.log": "re-included by `!keep.log`",
    "data/keep.log": "re-included by `!keep.log`",
    "notes.md": "plain file",
    ".env": None,  # written below
}


HIDDEN = {
    # always left out
    "cortex.yaml": None,  # the configuration file itself (written by write_project)
    "module.pyc": b"\0",
    "data/module.pyo": b"\0",
    "native.pyd": b"\0",
    "__pycache__/handler.cpython-311.pyc": b"\0",
    "data/__pycache__/anything.txt": "a __pycache__ folder goes whole",
    ".hidden": "dot-file",
    ".git/config": "dot-folder",
    ".venv/bin/python": "dot-folder",
    "data/.secret": "nested dot-file",
    "data/.cache/blob": "nested dot-folder",
    "data/.env": "only the root .env is kept",
    ".cortexignore": None,  # a dot-file itself (written below)
    # left out by .cortexignore
    "debug.log": "*.log",
    "data/trace.log": "*.log",
    "build/out.bin": "build/",
    "build/keep.txt": "a file in an excluded folder cannot be re-included (git's rule)",
    "data/build/x.txt": "build/ matches at any depth",
    "top-only.txt": "/top-only.txt",
    "data/cache.tmp": "data/**/*.tmp",
    "data/nested/cache.tmp": "data/**/*.tmp",
    "models/huge.bin": None,  # a sparse 40 MiB file: the project only fits the limit because it is ignored
}


CORTEXIGNORE = """\
# gitignore syntax
*.log
!keep.log
build/
!build/keep.txt
/top-only.txt
data/**/*.tmp
models/
"""


DOTENV = """\
# exported into the handler's environment

GREETING="hello world"
PLAIN=plain-value
export EXPORTED=yes
SINGLE='no $expansion here'
MIXED="a"'b'c
COMMENTED=value # a trailing comment
EMPTY=
"""


DOTENV_VALUES = {
    "GREETING": "hello world",
    "PLAIN": "plain-value",
    "EXPORTED": "yes",
    "SINGLE": "no $expansion here",
    "MIXED": "abc",
    "COMMENTED": "value",
    "EMPTY": "",
}


HANDLER_ENV = {"FROM_CONFIG": "config-value", "A_NUMBER": 42, "A_FLAG": True}


HANDLER_ENV_VALUES = {"FROM_CONFIG": "config-value", "A_NUMBER": "42", "A_FLAG": "true"}


SIX_VERSION = """
import os
import sys

import six
import yaml

class Handler:
    def __init__(self):
        self.shell = open("from-shell.txt").read() if os.path.exists("from-shell.txt") else None

    def handle_async(self):
        return {
            "six": six.__version__,
            "six_file": six.__file__,
            "python": sys.executable,
            "executor_package": yaml.__file__,
            "shell": self.shell,
        }
"""


# dependencies.sh writes the requirements file that requirements.txt includes: pip can only succeed after it ran.
DEPENDENCIES_SH = """\
set -euo pipefail
echo "six==1.15.0" > generated-requirements.txt
echo "dependencies.sh ran in $(basename "$PWD") with bash ${BASH_VERSINFO[0]}" > from-shell.txt
"""


REQUIRES_GENERATED = "# written by dependencies.sh, which runs first\n-r generated-requirements.txt\n"


BAD_DOTENV = "# settings\nGOOD=1\nthis is not an assignment\n"


PLAIN = """
class Handler:
    def handle_async(self, payload):
        return payload
"""


@dataclass
class Deployment:
    """One API of the module's projects: its name, and how its deployment went."""

    name: str
    project: Path
    reply: control_pb2.DeployResponse | None = None
    error: Exception | None = None
    cli: tuple[int, str, str] | None = None
    notices: list[str] = field(default_factory=list)


def run_cli(*argv: str) -> tuple[int, str, str]:
    """Run `cortado ARGV` in-process; (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cortado_cli(list(argv))
    return code, out.getvalue(), err.getvalue()


def cli_flags(mesh: LocalMesh) -> list[str]:
    return ["--scheduler", mesh.scheduler_address, "--endpoint", mesh.grpc_address]


def files_project(root: Path) -> Path:
    name = unique_name("files")
    contents = {k: v for k, v in {**VISIBLE, **HIDDEN}.items() if v is not None}
    contents[".env"] = DOTENV
    contents[".cortexignore"] = CORTEXIGNORE
    project = write_project(
        root, name, LIST_FILES, {"handler": {"env": HANDLER_ENV}}, contents, config_name="cortex.yaml"
    )
    huge = project / "models" / "huge.bin"
    huge.parent.mkdir()
    with huge.open("wb") as sparse:
        sparse.truncate(40 * MIB)
    return project


def deployed(deployment: Deployment) -> str:
    """The API's name, once its deployment was accepted."""
    assert deployment.error is None, f"deploying {deployment.project} failed: {deployment.error}"
    return deployment.name


def completed(body: dict[str, Any]) -> Any:
    assert body["status"] == "completed", body
    return body["result"]


def call(http: httpx.Client, api: str, payload: Any) -> Any:
    return completed(result(http, api, submit(http, api, json=payload)))


def wait_failed(scheduler: SchedulerClient, name: str, timeout: float = DEPENDENCIES_TIMEOUT) -> str:
    """Wait until the API is failed; its status message."""

    def failed() -> str | None:
        status = scheduler.describe(name)
        return status.message if status.state == control_pb2.API_STATE_FAILED else None

    return eventually(failed, timeout, interval=0.2, what=f"API {name} failed")
