"""Units of a configuration and of messages: durations, Kubernetes memory quantities and byte counts."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

from cortado.project.errors import ConfigError

KIB = 1024
MIB = 1024 * 1024
NANOS_PER_SECOND = 1_000_000_000

_DURATION_UNITS = {
    "ns": Decimal("1e-9"),
    "us": Decimal("1e-6"),
    "µs": Decimal("1e-6"),
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
    "d": Decimal(86400),
}
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d)")
_NUMBER_RE = re.compile(r"\d+(?:\.\d*)?|\.\d+")


def parse_duration(value: str | int | float, where: str) -> float:
    """Return a duration in seconds: "50ms", "10s", "5m", "1h", "7d", "1h30m", or a bare number of seconds.

    Units are ns, us, ms, s, m, h and d, as in Go plus days. Raises ConfigError, prefixed with `where`, for
    anything else, negative values included.
    """
    problem = f"{where} must be a duration like 50ms, 10s, 5m, 1h or 7d (got {value!r})"
    if isinstance(value, bool):
        raise ConfigError(problem)
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ConfigError(problem)
        return float(value)
    text = value.strip()
    if _NUMBER_RE.fullmatch(text):
        return float(text)
    total = Decimal(0)
    position = 0
    for match in _DURATION_PART_RE.finditer(text):
        if match.start() != position:
            break
        total += Decimal(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if not text or position != len(text):
        raise ConfigError(problem)
    return float(total)


_QUANTITY_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E)?")
_QUANTITY_SUFFIXES = {
    "": 1,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}


def parse_quantity_bytes(value: Any, where: str) -> int:
    """Return a Kubernetes memory quantity ("512Mi", "1G", "1.5Gi", 1073741824) in bytes, rounded up.

    Raises ConfigError, prefixed with `where`, when it is not one.
    """
    problem = f"{where} must be a size in bytes, optionally with a suffix Ki, Mi, Gi, Ti, K, M, G or T (got {value!r})"
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(problem)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(problem)
    match = _QUANTITY_RE.fullmatch(str(value).strip())
    if match is None:
        raise ConfigError(problem)
    return math.ceil(Decimal(match.group(1)) * _QUANTITY_SUFFIXES[match.group(2) or ""])


def human_size(size: int) -> str:
    """Return a byte count in binary units with one decimal: "512 B", "3.4 KiB", "38.0 MiB"."""
    if size < KIB:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"
