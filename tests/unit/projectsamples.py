"""Sample configurations and project trees shared by the tests of cortado.project."""

from __future__ import annotations

from pathlib import Path

import pytest

from cortado.project.config import parse_config
from cortado.project.errors import ConfigError

MINIMAL = """\
- name: echo
  kind: AsyncAPI
  handler:
    type: python
    path: handler.py
"""


def config_error(text: str, filename: str = "cortado.yaml") -> str:
    """The message of the ConfigError that parsing `text` raises."""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, filename)
    return str(caught.value)


def with_api(extra: str, handler_extra: str = "") -> str:
    """The minimal config with lines added to the API (`extra`) and to its handler (`handler_extra`)."""
    return MINIMAL + "".join(f"    {line}\n" for line in handler_extra.splitlines()) + extra


def write(path: Path, content: str | bytes = "x") -> None:
    """Write `content` to `path`, creating its folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)


def make_tree(root: Path) -> None:
    """A project of files the bundle keeps and leaves out, with a `.cortexignore` that re-includes some."""
    for name in [
        "cortex.yaml",
        "handler.py",
        "requirements.txt",
        ".env",
        ".hidden",
        ".git/config",
        ".git/objects/ab",
        "__pycache__/x.pyc",
        "a.pyc",
        "b.pyo",
        "c.pyd",
        "pkg/__init__.py",
        "pkg/__pycache__/mod.cpython-311.pyc",
        "pkg/.secret",
        "pkg/cortex.yaml",
        "debug.log",
        "keep.log",
        "logs/keep.log",
        "data/big.bin",
        "data/keep.txt",
        "pkg/data/nested.bin",
        "build/out.o",
        "src/build/kept.py",
        "datafile",
    ]:
        write(root / name)
    write(
        root / ".cortexignore",
        "# leave out logs but keep keep.log\n*.log\n!keep.log\ndata/\n!data/keep.txt\n/build\n",
    )
