"""Reading the fields of one API entry: FieldReader, which refuses unknown keys and wrong types with messages
that name the file, the API and the key path."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any, NoReturn

from cortado.project.errors import ConfigError
from cortado.project.messages import describe, type_name
from cortado.project.units import NANOS_PER_SECOND, parse_duration

UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1

# Keys of older Cortex releases, so the unknown-key error can say what became of them.
_RENAMED = {"predictor": "handler (Cortex v0.34 renamed `predictor` to `handler`)"}


class FieldReader:
    """Reads the fields of one API entry; every error carries the file, the API and the key path.

    `label` names the API in messages: "api at index N" until its name is known, then "api '<name>'".
    Notices about accepted-but-ignored keys are appended to the `notices` list it was given.
    """

    def __init__(self, filename: str, index: int, notices: list[str]) -> None:
        self.filename = filename
        self.index = index
        self.label = f"api at index {index}"
        self.notices = notices

    def fail(self, path: str, message: str) -> NoReturn:
        """Raise ConfigError "<file>: <api>: <path> <message>"."""
        raise ConfigError(f"{self.filename}: {self.label}: {path} {message}")

    def notice(self, message: str) -> None:
        """Record a notice "<file>: <api>: <message>"."""
        self.notices.append(f"{self.filename}: {self.label}: {message}")

    def ignored(self, path: str) -> None:
        """Record that the key `path` is accepted but only mattered to Cortex's cluster."""
        self.notice(f"`{path}` only mattered to Cortex's cluster; it is ignored")

    # -- structure

    def section(self, api: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        """Return `api[key]` as a mapping ({} when absent or null) after refusing unknown keys."""
        value = api.get(key)
        if value is None:
            return {}
        return self.mapping(value, key, allowed)

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        """Return `value` if it is a mapping whose keys are all strings among `allowed`; fail naming the key otherwise.

        An unknown key's message suggests the renamed or closest known key, or lists the known ones.
        """
        if not isinstance(value, dict):
            self.fail(path, f"must be a mapping (got {type_name(value)})")
        prefix = f"{path}." if path else ""
        for key in value:
            if not isinstance(key, str):
                self.fail(f"{prefix}{key!r}", "is not a valid key: keys must be strings")
            if key not in allowed:
                hint = _RENAMED.get(key)
                if hint is None:
                    close = difflib.get_close_matches(key, allowed, n=1)
                    hint = f"{prefix}{close[0]}" if close else None
                suffix = f" (did you mean {hint}?)" if hint else f"; known keys: {', '.join(allowed)}"
                self.fail(f"{prefix}{key}", f"is not a known key{suffix}")
        return value

    # -- scalar readers; a null value means the default, like an absent key

    def string(self, section: Mapping[str, Any], path: str, default: str | None) -> str | None:
        """Return the string at `path` (its last part is the key in `section`), or `default` when absent or null."""
        value = section.get(path.rsplit(".", 1)[-1])
        if value is None:
            return default
        if not isinstance(value, str):
            self.fail(path, f"must be a string (got {describe(value)})")
        return value

    def integer(
        self, section: Mapping[str, Any], path: str, default: int, minimum: int, maximum: int = UINT32_MAX
    ) -> int:
        """Return the integer at `path` within [minimum, maximum], or `default` when absent or null."""
        value = section.get(path.rsplit(".", 1)[-1])
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"must be an integer (got {describe(value)})")
        if value < minimum:
            self.fail(path, f"must be at least {minimum} (got {value})")
        if value > maximum:
            self.fail(path, f"must be at most {maximum} (got {value})")
        return value

    def number(self, section: Mapping[str, Any], path: str, default: float) -> float:
        """Return the finite number (integer or float) at `path` as a float, or `default` when absent or null."""
        value = section.get(path.rsplit(".", 1)[-1])
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.fail(path, f"must be a number (got {describe(value)})")
        return float(value)

    def duration(self, section: Mapping[str, Any], path: str, default: str | None) -> int | None:
        """Return the duration at `path` in nanoseconds (see parse_duration); None when absent and without default."""
        value = section.get(path.rsplit(".", 1)[-1])
        if value is None:
            if default is None:
                return None
            value = default
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.fail(path, f"must be a duration like 50ms, 10s, 5m, 1h or 7d (got {describe(value)})")
        return round(parse_duration(value, f"{self.filename}: {self.label}: {path}") * NANOS_PER_SECOND)

    def relative_path(self, value: str, path: str) -> str:
        """Normalise a project-relative path ("" for the root itself), refusing absolute paths and `..`."""
        pure = PurePosixPath(value.strip())
        if not value.strip() or pure.is_absolute() or ".." in pure.parts or "\\" in value:
            self.fail(path, f"must be a path relative to the project root (got {value!r})")
        normal = str(pure)
        return "" if normal == "." else normal
