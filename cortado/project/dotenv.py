"""The project's `.env` file, read the way bash would source it, and the variables a project may not set."""

from __future__ import annotations

import re

from cortado.project.errors import ProjectError

DOTENV_FILE = ".env"
ENV_PREFIX = "CORTADO_"

_ENV_LINE_RE = re.compile(r"(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)")

RESERVED_ENV_NAMES = ("PROMETHEUS_MULTIPROC_DIR",)
"""Variables outside the CORTADO_ prefix that the executor sets for the handler process and a project may not."""


def reserved_env_problem(name: str) -> str | None:
    """Why a project may not set the environment variable `name` (handler.env or .env), or None when it may."""
    if name.startswith(ENV_PREFIX):
        return f"is refused: variables starting with {ENV_PREFIX} are Cortado's"
    if name in RESERVED_ENV_NAMES:
        return "is refused: Cortado sets it (the handler's metrics are collected there)"
    return None


def parse_dotenv(text: str, filename: str = DOTENV_FILE) -> dict[str, str]:
    """Parse `VARIABLE=value` lines the way bash would source them, for the simple cases.

    Blank lines and `#` comments are skipped, a leading `export ` is allowed, quotes around (parts of) the
    value are removed, and an unquoted `#` after whitespace starts a comment. Variables are not expanded.
    A later line wins over an earlier one. Raises ProjectError naming the file and line for a malformed line, or
    for a variable Cortado sets itself (`CORTADO_*`, `PROMETHEUS_MULTIPROC_DIR`), as handler.env refuses them.
    """
    variables: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _ENV_LINE_RE.fullmatch(line)
        if match is None:
            raise ProjectError(f"{filename} line {number}: expected VARIABLE=value, got {line!r}")
        refused = reserved_env_problem(match.group(1))
        if refused:
            raise ProjectError(f"{filename} line {number}: {match.group(1)} {refused}")
        try:
            variables[match.group(1)] = _shell_word(match.group(2))
        except ValueError as e:
            raise ProjectError(f"{filename} line {number}: {e} in {line!r}") from e
    return variables


def _shell_word(text: str) -> str:
    """Return the value of one shell word: quotes removed, backslash escapes applied; ValueError otherwise."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise ValueError("unterminated single quote")
            out.append(text[i + 1 : end])
            i = end + 1
        elif char == '"':
            i += 1
            while True:
                if i >= len(text):
                    raise ValueError("unterminated double quote")
                char = text[i]
                if char == '"':
                    i += 1
                    break
                # Inside double quotes bash only treats these characters after a backslash as escaped.
                if char == "\\" and i + 1 < len(text) and text[i + 1] in '\\"$`':
                    out.append(text[i + 1])
                    i += 2
                else:
                    out.append(char)
                    i += 1
        elif char == "\\":
            if i + 1 >= len(text):
                raise ValueError("a trailing backslash (line continuation) is not supported")
            out.append(text[i + 1])
            i += 2
        elif char in " \t":
            rest = text[i:].lstrip(" \t")
            if rest and not rest.startswith("#"):
                raise ValueError("unquoted space in the value; put the value in quotes")
            break
        else:
            out.append(char)
            i += 1
    return "".join(out)
