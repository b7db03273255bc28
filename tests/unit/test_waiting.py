"""Reading the wait a client asked for, and the one cap every wait shares."""

from __future__ import annotations

import math

import pytest

from cortado._env import Env
from cortado._waiting import (
    DEFAULT_MAX_WAIT_SECONDS,
    WaitError,
    capped,
    check_seconds,
    max_wait_seconds,
    parse_seconds,
    prefer_wait,
)


def test_the_cap_comes_from_one_setting_shared_by_every_service() -> None:
    assert max_wait_seconds(Env({})) == DEFAULT_MAX_WAIT_SECONDS == 60
    assert max_wait_seconds(Env({"CORTADO_MAX_WAIT_SECONDS": "5"})) == 5


@pytest.mark.parametrize(
    ("wait", "expected"), [(0, 0), (-3, 0), (2.5, 2.5), (60, 60), (3600, 60), (math.inf, 60), (math.nan, 0)]
)
def test_capped(wait: float, expected: float) -> None:
    assert capped(wait, 60) == expected


@pytest.mark.parametrize(
    ("text", "expected"), [("0", 0), ("10", 10), (" 2.5 ", 2.5), (".5", 0.5), ("7.", 7), ("999", 60)]
)
def test_parse_seconds_reads_a_number_of_seconds_and_caps_it(text: str, expected: float) -> None:
    assert parse_seconds(text, "?wait=", 60) == expected


@pytest.mark.parametrize("text", ["", "soon", "-1", "nan", "inf", "1e3", "0x10", "1,5", "5s"])
def test_parse_seconds_refuses_anything_else_saying_where_and_what(text: str) -> None:
    with pytest.raises(WaitError) as refused:
        parse_seconds(text, "?wait=", 60)
    assert str(refused.value) == f"?wait= must be a number of seconds (0 or more; waits are capped at 60), got {text!r}"


@pytest.mark.parametrize("wait", [-1, math.nan, math.inf, -math.inf])
def test_check_seconds_refuses_a_negative_or_not_finite_grpc_wait(wait: float) -> None:
    with pytest.raises(WaitError, match="wait must be a finite number of seconds, 0 or more"):
        check_seconds(wait, "wait")
    check_seconds(0, "wait")
    check_seconds(1e9, "wait")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("wait=10", "10"),
        ("respond-async, wait=10", "10"),
        ("Wait = 7", "7"),
        ('wait="3"', "3"),
        ("wait=5; foo=bar", "5"),
        ("wait=", ""),
        ("wait", ""),
        ("respond-async", None),
        ("handling=lenient; wait=3", None),
        ("", None),
    ],
)
def test_prefer_wait_finds_the_wait_preference(header: str, expected: str | None) -> None:
    assert prefer_wait(header) == expected
