"""The failures the `cortado` command explains to its user in one line."""

from __future__ import annotations

from typing import NoReturn


class CliError(Exception):
    """A user-facing failure: printed as `error: <message>`, exit code 1."""


def fail(message: str) -> NoReturn:
    """Stop the command: `main` prints `error: <message>` on stderr and exits 1."""
    raise CliError(message)
