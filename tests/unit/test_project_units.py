"""Tests of cortado.project.units: durations."""

from __future__ import annotations

import pytest

from cortado.project.errors import ConfigError
from cortado.project.units import parse_duration


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("50ms", 0.05),
        ("10s", 10.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("7d", 604800.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("250us", 0.00025),
        ("30", 30.0),
        (30, 30.0),
        (0.5, 0.5),
    ],
)
def test_durations_are_read_in_seconds(value: str | int | float, expected: float) -> None:
    assert parse_duration(value, "x") == pytest.approx(expected)


@pytest.mark.parametrize("value", ["", "ten seconds", "10 s", "5y", "-5s", "s", "1h 30m", "1.2.3s"])
def test_malformed_durations_are_refused(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_duration(value, "cortado.yaml: api 'echo': handler.timeout")
    assert str(caught.value) == (
        f"cortado.yaml: api 'echo': handler.timeout must be a duration like 50ms, 10s, 5m, 1h or 7d (got {value!r})"
    )


@pytest.mark.parametrize("value", [-1, float("inf"), True])
def test_negative_or_infinite_or_boolean_durations_are_refused(value: int | float) -> None:
    with pytest.raises(ConfigError):
        parse_duration(value, "x")
