"""Tests of cortado.project.dotenv: reading `.env` and the variables a project may not set."""

from __future__ import annotations

import pytest

from cortado.project.dotenv import parse_dotenv
from cortado.project.errors import ProjectError


def test_dotenv_reads_quotes_comments_and_export() -> None:
    text = """\
# a comment

PLAIN=value
export EXPORTED=yes
SINGLE='it''s quoted'
DOUBLE="two words # not a comment"
ESCAPED="say \\"hi\\" to \\$HOME"
TRAILING=bare   # a comment
EMPTY=
HASH=abc#def
  INDENTED=ok
PLAIN=again
"""
    assert parse_dotenv(text) == {
        "PLAIN": "again",
        "EXPORTED": "yes",
        "SINGLE": "its quoted",
        "DOUBLE": "two words # not a comment",
        "ESCAPED": 'say "hi" to $HOME',
        "TRAILING": "bare",
        "EMPTY": "",
        "HASH": "abc#def",
        "INDENTED": "ok",
    }


def test_dotenv_handles_windows_line_endings() -> None:
    assert parse_dotenv("A=1\r\nB='2'\r\n") == {"A": "1", "B": "2"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("foo bar", ".env line 3: expected VARIABLE=value, got 'foo bar'"),
        ("1ABC=x", ".env line 3: expected VARIABLE=value, got '1ABC=x'"),
        ("A = b", ".env line 3: expected VARIABLE=value, got 'A = b'"),
        ('A="open', ".env line 3: unterminated double quote in 'A=\"open'"),
        ("A='open", '.env line 3: unterminated single quote in "A=\'open"'),
        ("A=two words", ".env line 3: unquoted space in the value; put the value in quotes in 'A=two words'"),
    ],
)
def test_a_malformed_dotenv_line_is_refused_with_its_line_number(line: str, message: str) -> None:
    with pytest.raises(ProjectError) as caught:
        parse_dotenv(f"# header\nOK=1\n{line}\n")
    assert str(caught.value) == message


def test_a_dotenv_error_names_the_file_it_was_given() -> None:
    with pytest.raises(ProjectError, match=r"^project/.env line 1: "):
        parse_dotenv("nope", "project/.env")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "CORTADO_NATS_URL=nats://elsewhere:4222",
            "CORTADO_NATS_URL is refused: variables starting with CORTADO_ are Cortado's",
        ),
        (
            "export CORTADO_WORKER_REPLICA=7",
            "CORTADO_WORKER_REPLICA is refused: variables starting with CORTADO_ are Cortado's",
        ),
        (
            "PROMETHEUS_MULTIPROC_DIR=/tmp/x",
            "PROMETHEUS_MULTIPROC_DIR is refused: Cortado sets it (the handler's metrics are collected there)",
        ),
    ],
)
def test_dotenv_refuses_the_variables_handler_env_refuses(line: str, message: str) -> None:
    with pytest.raises(ProjectError) as caught:
        parse_dotenv(f"# settings\nMODEL=small\n{line}\n")
    assert str(caught.value) == f".env line 3: {message}"
