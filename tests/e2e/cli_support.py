"""What the CLI's end-to-end tests share: the handlers they deploy, a CLI run, the `cli` fixture (in-process through
`cortado.cli.main`, pointed at the session's mesh) and the module-scoped `apis` fixture."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest

from cortado.cli import main
from cortado.client import SchedulerClient
from cortado.mesh import LocalMesh
from tests.helpers import unique_name, write_project

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
