"""The project's files: which of them a bundle holds (`.cortexignore` and the built-in rules), and the check
that every API's handler is among them."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pathspec

from cortado.project.config import ParsedConfig
from cortado.project.dotenv import DOTENV_FILE
from cortado.project.errors import ProjectError

IGNORE_FILE = ".cortexignore"

_SKIPPED_SUFFIXES = (".pyc", ".pyo", ".pyd")


def collect_files(project_dir: Path, config_name: str) -> list[tuple[str, int]]:
    """Return (relative posix path, size in bytes) of every file that belongs in the bundle, sorted by path.

    Left out: `*.pyc`, `*.pyo`, `*.pyd`, `__pycache__/`, files and folders whose name starts with `.` (except
    the top-level `.env`), the configuration file `config_name`, and whatever the top-level `.cortexignore`
    excludes (gitignore semantics: a file in an excluded folder cannot be re-included). Symbolic links are
    followed when they point inside the project and skipped otherwise.
    """
    root = project_dir.resolve()
    spec = _ignore_spec(root)
    return sorted(_walk(root, root, "", config_name, spec, frozenset({root})))


def _ignore_spec(root: Path) -> pathspec.GitIgnoreSpec | None:
    """The top-level `.cortexignore`'s rules (gitignore semantics), None without one; ProjectError if unreadable."""
    path = root / IGNORE_FILE
    if not path.is_file():
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ProjectError(f"cannot read {IGNORE_FILE}: {e}") from e
    return pathspec.GitIgnoreSpec.from_lines(lines)


def _walk(
    root: Path,
    directory: Path,
    prefix: str,
    config_name: str,
    spec: pathspec.GitIgnoreSpec | None,
    ancestors: frozenset[Path],
) -> Iterator[tuple[str, int]]:
    """Yield (path under `prefix`, size) of the bundled files below `directory`, in name order, folder by folder.

    `ancestors` holds the resolved folders above, so that a link back up the tree is not followed.
    """
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError as e:
        raise ProjectError(f"cannot read {directory}: {e}") from e
    for entry in entries:
        relative = f"{prefix}{entry.name}"
        if entry.name.startswith(".") and relative != DOTENV_FILE:
            continue
        path = Path(entry.path)
        if entry.is_symlink():
            try:
                target = path.resolve(strict=True)
            except (OSError, RuntimeError):
                continue  # broken or looping link
            if not target.is_relative_to(root):
                continue
        else:
            target = path
        try:
            info = target.stat()
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode):
            if entry.name == "__pycache__" or (spec is not None and spec.match_file(f"{relative}/")):
                continue
            real = target.resolve()
            if real in ancestors:
                continue  # a link back up the tree would recurse forever
            yield from _walk(root, target, f"{relative}/", config_name, spec, ancestors | {real})
        elif stat.S_ISREG(info.st_mode):
            if entry.name.endswith(_SKIPPED_SUFFIXES) or relative == config_name:
                continue
            if spec is not None and spec.match_file(relative):
                continue
            yield relative, info.st_size


def check_project_files(config: ParsedConfig, files: list[tuple[str, int]], config_name: str) -> None:
    """Check that every API's handler file and python_path folder are among the bundled `files`.

    `files` is what collect_files returned. Raises ProjectError naming the file, the API and the missing path.
    """
    names = {name for name, _ in files}
    folders = {str(parent) for name in names for parent in PurePosixPath(name).parents}
    for spec in config.apis:
        where = f"{config_name}: api '{spec.name}'"
        if spec.handler_path not in names:
            raise ProjectError(
                f"{where}: handler.path {spec.handler_path!r} is not in the project "
                f"(hidden files, __pycache__ and what {IGNORE_FILE} excludes are left out)"
            )
        if spec.python_path and spec.python_path not in folders:
            raise ProjectError(f"{where}: handler.python_path {spec.python_path!r} is not a folder of the project")
