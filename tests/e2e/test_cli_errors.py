"""The `cortado` command's errors: unknown APIs, an unreachable scheduler, usage errors."""

from __future__ import annotations

import pytest

from cortado.cli import main
from tests.e2e.cli_support import Cli

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
