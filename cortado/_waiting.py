"""Waiting for a request's outcome: the cap every wait shares, and reading a wait the client asked for.

`GET /<api>/<id>?wait=` (results), `POST /<api>?wait=` with `Prefer: wait=` and Submit's `wait` (ingest) all
wait at most `CORTADO_MAX_WAIT_SECONDS` (60 s by default): a longer wait answers when the cap is reached.
"""

from __future__ import annotations

import math
import re

from cortado._env import Env

DEFAULT_MAX_WAIT_SECONDS = 60.0
"""The cap of every wait unless `CORTADO_MAX_WAIT_SECONDS` says otherwise."""

DEFAULT_MAX_WATCH_SECONDS = 240.0
"""How long one Results/Watch call streams at most unless `CORTADO_MAX_WATCH_SECONDS` says otherwise: below
Envoy's stream idle timeout (300 s), so the stream ends with Watch's own status rather than Envoy's reset."""

HTTP_STATUS_HEADER = "x-cortado-http-status"
"""Response metadata Envoy turns into the HTTP status (the transcoder alone would answer 200)."""


def max_wait_seconds(env: Env) -> float:
    """The cap of every wait, from `CORTADO_MAX_WAIT_SECONDS`."""
    return env.number("MAX_WAIT_SECONDS", DEFAULT_MAX_WAIT_SECONDS, minimum=0)


def max_watch_seconds(env: Env) -> float:
    """Watch's time limit, from `CORTADO_MAX_WATCH_SECONDS` (more than 0)."""
    return env.number("MAX_WATCH_SECONDS", DEFAULT_MAX_WATCH_SECONDS, minimum=0.001)


def capped(wait: float, maximum: float) -> float:
    """How long a wait of `wait` seconds lasts: at most `maximum`; nothing for 0, a negative number or NaN."""
    if not math.isfinite(wait):
        return maximum if wait > 0 else 0.0
    return min(max(wait, 0.0), maximum)


class WaitError(ValueError):
    """A wait the client asked for that is not a number of seconds; the message says what was wrong."""


_SECONDS = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")


def parse_seconds(text: str, where: str, maximum: float) -> float:
    """A wait written as text (`?wait=`, `Prefer: wait=`), capped; WaitError naming `where` when malformed."""
    value = text.strip()
    if not _SECONDS.fullmatch(value):
        raise WaitError(
            f"{where} must be a number of seconds (0 or more; waits are capped at {maximum:g}), got {text!r}"
        )
    return capped(float(value), maximum)


def check_seconds(wait: float, where: str) -> None:
    """WaitError unless wait is a finite number of seconds, 0 or more (a gRPC `wait` field)."""
    if not math.isfinite(wait) or wait < 0:
        raise WaitError(f"{where} must be a finite number of seconds, 0 or more, got {wait!r}")


def prefer_wait(header: str) -> str | None:
    """The value of the `wait` preference in a `Prefer` header (RFC 7240), or None when it has none.

    Preferences are separated by commas, their parameters by semicolons; names compare case-insensitively
    and a value may be quoted: `Prefer: respond-async, wait=10` gives "10".
    """
    for preference in header.split(","):
        name, equals, value = preference.split(";", 1)[0].partition("=")
        if name.strip().lower() == "wait":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value if equals else ""
    return None
