"""Handler files for the runtime's tests: written to a folder, checked, loaded and constructed as an executor
does, with what loading leaves in sys.path and sys.modules undone after each test."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cortado.runtime.calling import HandlerInstance
from cortado.runtime.errors import HandlerDefinitionError
from cortado.runtime.handlercheck import check_handler_source
from cortado.runtime.loading import load_handler_class


@pytest.fixture(autouse=True)
def isolated_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo what loading handlers does to sys.path and sys.modules, so tests cannot see each other's handlers."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


def write(folder: Path, source: str, name: str = "handler.py") -> Path:
    """Write dedented source to folder/name (creating folders) and return its path."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


def load(folder: Path, source: str, name: str = "handler.py") -> type:
    """Write a handler file and load it the way an executor does, naming it handler.py in messages."""
    return load_handler_class(write(folder, source, name), folder, display_name=name)


def static_error(source: str) -> str:
    """The message check_handler_source gives for this source (it must give one)."""
    with pytest.raises(HandlerDefinitionError) as caught:
        check_handler_source(textwrap.dedent(source), "handler.py")
    return str(caught.value)


def runtime_error(folder: Path, source: str) -> str:
    """The message load_handler_class gives for this source (it must give one)."""
    with pytest.raises(HandlerDefinitionError) as caught:
        load(folder, source)
    return str(caught.value)


def instance_of(
    source: str, folder: Path, config: dict[str, Any] | None = None, metrics: Any = None
) -> HandlerInstance:
    """Load and construct a handler from source."""
    return HandlerInstance.create(load(folder, source), config, metrics)


REFERENCE_HANDLER = """
    class Handler:
        def __init__(self, config, metrics_client):
            self.config = config
            self.metrics_client = metrics_client

        def handle_async(self, payload, request_id):
            return {"payload": payload, "request_id": request_id}
"""
"""The handler of the reference interface: both constructor arguments, both handle_async arguments, echoed back."""
