"""Loading a handler file: importing it as a fresh module and checking its ``Handler`` class as Python built it.

The check here has the final word on what the deploy-time check (``handlercheck``) could not see from the source,
and words its messages the same way (``rules``).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from cortado.runtime.errors import HandlerDefinitionError, type_name
from cortado.runtime.rules import (
    ALLOWED_INIT_PARAMS,
    CLASS_NAME,
    Params,
    init_params_for,
    method_problem,
    missing_class_message,
    missing_client,
    missing_method_message,
    signature_problem,
    syntax_error_message,
)


def _display_path(path: Path) -> str:
    """The path as the user wrote it in the configuration: relative to the project root, the working directory."""
    if not path.is_absolute():
        return str(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _is_module_of(module: ModuleType | None, path: Path) -> bool:
    """Whether ``module`` was loaded from the file at ``path`` (links resolved)."""
    file = getattr(module, "__file__", None)
    return file is not None and os.path.realpath(file) == os.path.realpath(path)


def _module_name(handler_file: Path, python_path: Path) -> str:
    """The name ``import`` would give the file from ``python_path``, so pickling and relative imports work.

    Falls back to a name from the file stem when the file is not importable by a dotted name, and never takes over
    a module that something else already imported under that name (a handler file called json.py, say).
    """
    try:
        relative = handler_file.resolve().relative_to(python_path.resolve())
    except ValueError:
        relative = None
    if relative is not None and len(relative.parts) > 1:
        parts = [*relative.parts[:-1], relative.stem]
        if all(p.isidentifier() for p in parts):
            package_name = ".".join(parts[:-1])
            try:
                package = importlib.import_module(package_name)
            except ModuleNotFoundError as error:
                # The folder is not importable as a package after all; anything else is the package's own failure.
                if error.name is None or not f"{package_name}.".startswith(f"{error.name}."):
                    raise
                package = None
            if os.path.realpath(handler_file.parent) in {os.path.realpath(p) for p in getattr(package, "__path__", [])}:
                return ".".join(parts)
    name = re.sub(r"\W", "_", handler_file.stem) or "handler"
    if name[0].isdigit():
        name = f"_{name}"
    existing = sys.modules.get(name)
    if existing is not None and not _is_module_of(existing, handler_file):
        name = f"cortado_handler_{name}"
    return name


def _runtime_params(cls: type, method: str) -> tuple[Params, bool] | None:
    """The method's parameters and whether the first is the implicit self; None when they cannot be known."""
    raw = inspect.getattr_static(cls, method)
    try:
        if isinstance(raw, staticmethod):
            return _inspect_params(raw.__func__), False
        if isinstance(raw, classmethod):
            return _inspect_params(getattr(cls, method)), False
        attr = getattr(cls, method)
        if inspect.isfunction(attr):
            return _inspect_params(attr), True
        if not hasattr(type(raw), "__get__"):
            return _inspect_params(attr), False  # a callable object is not bound to the instance
    except (TypeError, ValueError):
        pass
    return None


def _inspect_params(fn: Callable[..., Any]) -> Params:
    """``fn``'s parameters as ``inspect.signature`` reads them; TypeError or ValueError when it cannot."""
    return [(p.name, p.kind) for p in inspect.signature(fn).parameters.values()]


def _check_class(filename: str, cls: object, init_allowed: Sequence[str] = ALLOWED_INIT_PARAMS) -> type:
    """``cls`` itself when it is a class that keeps the handler rules; HandlerDefinitionError naming the first it
    breaks otherwise. Methods whose signature cannot be read are let through."""
    if not isinstance(cls, type):
        raise HandlerDefinitionError(f"{filename}: {CLASS_NAME} must be a class, but it is {type_name(cls)}")
    init = inspect.getattr_static(cls, "__init__", None)
    if inspect.iscoroutinefunction(init):
        raise HandlerDefinitionError(f"{filename}: {CLASS_NAME}.__init__() must be a plain def, not async def")
    try:
        init_params: Params | None = _inspect_params(cls)  # the constructor as called, self already left out
    except (TypeError, ValueError):
        init_params = None
    if init_params is not None:
        problem = signature_problem(filename, "__init__", init_params, init_allowed) or missing_client(
            filename, init_params, init_allowed
        )
        if problem:
            raise HandlerDefinitionError(problem)
    present = [m for m in ("handle_async", "handle_batch") if hasattr(cls, m)]
    if not present:
        defined = [n for n in vars(cls) if callable(getattr(cls, n, None))]
        raise HandlerDefinitionError(missing_method_message(filename, defined))
    for method in present:
        if not callable(getattr(cls, method)):
            kind = type_name(getattr(cls, method))
            raise HandlerDefinitionError(f"{filename}: {CLASS_NAME}.{method} must be a method, but it is {kind}")
        found = _runtime_params(cls, method)
        if found is not None:
            problem = method_problem(filename, method, *found)
            if problem:
                raise HandlerDefinitionError(problem)
    return cls


def load_handler_class(
    handler_file: Path, python_path: Path, *, display_name: str | None = None, handler_type: str = "python"
) -> type:
    """Import the handler file as a fresh module and return its checked ``Handler`` class.

    ``python_path`` is put first on ``sys.path`` (and left there: handlers import lazily). The module is registered
    in ``sys.modules`` under the name ``import`` would give it from ``python_path`` (e.g. ``handler``), replacing an
    earlier load of the same file. Raises HandlerDefinitionError for a missing file, a syntax error in the file, a
    missing or non-class ``Handler`` or a signature that breaks the rules of ``check_handler_source``; exceptions
    raised by the module's own top-level code propagate unchanged. Messages name the file as ``display_name``, by
    default its path relative to the working directory (the project root, where ``handler.path`` is relative to).
    """
    filename = display_name or _display_path(handler_file)
    if not handler_file.is_file():
        raise HandlerDefinitionError(f"{filename}: handler file not found")
    entry = str(python_path)
    if not sys.path or sys.path[0] != entry:
        sys.path.insert(0, entry)
    name = _module_name(handler_file, python_path)
    spec = importlib.util.spec_from_file_location(name, handler_file)
    if spec is None or spec.loader is None:
        raise HandlerDefinitionError(f"{filename}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        sys.modules.pop(name, None)
        if error.filename and os.path.realpath(error.filename) == os.path.realpath(handler_file):
            raise HandlerDefinitionError(syntax_error_message(filename, error)) from None
        raise
    except BaseException:
        sys.modules.pop(name, None)
        raise
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)  # as the import statement does, so pkg.handler resolves
    if not hasattr(module, CLASS_NAME):
        classes = [n for n, v in vars(module).items() if isinstance(v, type) and v.__module__ == module.__name__]
        raise HandlerDefinitionError(missing_class_message(filename, classes))
    return _check_class(filename, getattr(module, CLASS_NAME), init_params_for(handler_type))
