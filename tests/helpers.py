"""Helpers shared by the tests: polling without sleeps, writing projects, and temporary folders handlers may use."""

from __future__ import annotations

import os
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest
import yaml

T = TypeVar("T")


def eventually(
    check: Callable[[], T | Literal[False] | None], timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll check() until it returns something truthy (returned), or fail after timeout seconds.

    check may answer None or False for "not yet", so `lambda: (v := read()).ready and v` waits for a ready v.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except AssertionError as exc:
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"not true after {timeout}s: {what or check}") from last_error


def unique_name(prefix: str = "t") -> str:
    """An API name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def write_project(
    root: Path,
    name: str,
    handler_source: str,
    api: dict[str, Any] | None = None,
    files: dict[str, str | bytes] | None = None,
    config_name: str = "cortado.yaml",
) -> Path:
    """A project folder with handler.py, a one-API configuration and extra files.

    api holds extra top-level keys of the API; its "handler" entry is merged into the handler section.
    """
    project = root / name
    project.mkdir(parents=True, exist_ok=True)
    (project / "handler.py").write_text(textwrap.dedent(handler_source))
    entry: dict[str, Any] = {"name": name, "kind": "AsyncAPI", "handler": {"type": "python", "path": "handler.py"}}
    for key, value in (api or {}).items():
        if key == "handler":
            entry["handler"].update(value)
        else:
            entry[key] = value
    (project / config_name).write_text(yaml.safe_dump([entry], sort_keys=False))
    for relative, content in (files or {}).items():
        path = project / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return project


def open_to_handlers(path: Path) -> None:
    """Let handlers running as another user use path: world-writable, and every folder above it passable."""
    path.chmod(0o777)
    for parent in path.parents:
        try:
            info = parent.stat()
            if info.st_uid == os.geteuid() and not info.st_mode & 0o001:
                parent.chmod(info.st_mode | 0o711)
        except OSError:
            break


def open_temp_folders_to_handlers() -> None:
    """From now on, every folder pytest's tmp_path_factory makes is open to handlers (see open_to_handlers), and
    files and folders are created with every permission bit the caller asks for (umask 0).

    Handlers run as their API's own unprivileged user when the suite runs as root, and tests watch them through
    files in temporary folders: those folders (and the files tests create in them) must be theirs to use too.
    """
    mktemp = pytest.TempPathFactory.mktemp

    def mktemp_open_to_handlers(self: pytest.TempPathFactory, basename: str, numbered: bool = True) -> Path:
        path = mktemp(self, basename, numbered)
        open_to_handlers(path)
        return path

    pytest.TempPathFactory.mktemp = mktemp_open_to_handlers  # type: ignore[method-assign]
    os.umask(0)
