"""Typed reading of `CORTADO_*` environment settings that fails fast with a clear message."""

from __future__ import annotations

import os
from collections.abc import Mapping

PREFIX = "CORTADO_"


class SettingsError(Exception):
    """A setting in the environment is malformed; the message names the variable."""


class Env:
    """Reads settings named `CORTADO_<NAME>` from a mapping (the process environment by default)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def text(self, name: str, default: str) -> str:
        """The variable's value, or default when unset or empty."""
        return self._environ.get(PREFIX + name) or default

    def integer(self, name: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
        """The variable as an integer; SettingsError if it is not one or is below minimum or above maximum."""
        raw = self._environ.get(PREFIX + name)
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{PREFIX}{name} must be an integer, got {raw!r}") from None
        if minimum is not None and value < minimum:
            raise SettingsError(f"{PREFIX}{name} must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise SettingsError(f"{PREFIX}{name} must be at most {maximum}, got {value}")
        return value

    def number(self, name: str, default: float, minimum: float | None = None) -> float:
        """The variable as a number; SettingsError if it is not one or is below minimum."""
        raw = self._environ.get(PREFIX + name)
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{PREFIX}{name} must be a number, got {raw!r}") from None
        if minimum is not None and value < minimum:
            raise SettingsError(f"{PREFIX}{name} must be at least {minimum}, got {value}")
        return value

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        """The variable's value, one of allowed; SettingsError naming the allowed values otherwise."""
        value = self.text(name, default)
        if value not in allowed:
            raise SettingsError(f"{PREFIX}{name} must be one of {', '.join(allowed)}, got {value!r}")
        return value
