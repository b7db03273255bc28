"""The handler contract (SPEC §2): checking and loading handlers, decoding payloads, encoding results."""

from __future__ import annotations

import ast
import asyncio
import codecs
import contextlib
import copy
import difflib
import email.message
import email.utils
import importlib
import importlib.util
import inspect
import json
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from cortado.jsonscan import MAX_NUMBER_DIGITS, JsonLimitError, JsonScanner, JsonSyntaxError

__all__ = [
    "ALLOWED_BATCH_PARAMS",
    "ALLOWED_HANDLE_PARAMS",
    "ALLOWED_INIT_PARAMS",
    "DEFAULT_JSON_DEPTH",
    "DEFAULT_JSON_VALUES",
    "MAX_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_NUMBER_DIGITS",
    "TENSORFLOW_INIT_PARAMS",
    "HandlerDefinitionError",
    "HandlerInstance",
    "InvalidResultError",
    "JsonLimits",
    "PayloadError",
    "check_handler_source",
    "check_payload",
    "decimal_to_int",
    "decode_payload",
    "describe_exception",
    "dumps_json",
    "encode_result",
    "init_params_for",
    "int_to_decimal",
    "load_handler_class",
    "loads_json",
    "split_batch_result",
    "validate_payload",
]

ALLOWED_INIT_PARAMS = ("config", "metrics_client")
TENSORFLOW_INIT_PARAMS = ("tensorflow_client", "config", "metrics_client")
"""What `__init__` may take for `handler.type: tensorflow` (tensorflow_client is required there)."""
ALLOWED_HANDLE_PARAMS = ("payload", "request_id")
ALLOWED_BATCH_PARAMS = ("payloads", "request_ids")

_CLASS_NAME = "Handler"
_METHOD_PARAMS = {
    "__init__": ALLOWED_INIT_PARAMS,
    "handle_async": ALLOWED_HANDLE_PARAMS,
    "handle_batch": ALLOWED_BATCH_PARAMS,
}
_MISSING_METHOD = "must define handle_async(self, payload, request_id) or handle_batch(self, payloads, request_ids)"

_P = inspect.Parameter
_Params = list[tuple[str, Any]]  # (name, inspect.Parameter kind), in declaration order


class HandlerDefinitionError(Exception):
    """The handler file cannot be used as a handler; str(e) is a complete user-facing message."""


class PayloadError(ValueError):
    """A request body does not decode under its Content-Type; str(e) is a complete user-facing message."""


class InvalidResultError(ValueError):
    """A handler returned something that is not a JSON-serialisable dict; str(e) is a complete user-facing message."""


# --- signature rules, shared by the static (ast) and the runtime (inspect) checks -------------------------------------


def _without_self(params: _Params) -> _Params | None:
    """Drop the implicit first parameter; None when the method has nowhere to receive it."""
    if params and params[0][1] in (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD):
        return params[1:]
    if params and params[0][1] == _P.VAR_POSITIONAL:
        return params
    return None


def _signature_problem(filename: str, method: str, params: _Params, allowed: Sequence[str]) -> str | None:
    """The message for the first parameter that breaks the pass-by-name rule, or None when all are fine."""
    where = f"{filename}: {_CLASS_NAME}.{method}()"
    names = ", ".join(allowed)
    for name, kind in params:
        if kind in (_P.VAR_POSITIONAL, _P.VAR_KEYWORD):
            continue
        if name not in allowed:
            return f"{where} takes parameter '{name}', but only {names} may be given"
        if kind == _P.POSITIONAL_ONLY:
            return f"{where} takes '{name}' as a positional-only parameter, but {names} are passed by name"
    return None


def init_params_for(handler_type: str) -> tuple[str, ...]:
    """The names `__init__` may take for a handler type (`python`, or `tensorflow`)."""
    return TENSORFLOW_INIT_PARAMS if handler_type == "tensorflow" else ALLOWED_INIT_PARAMS


def _missing_client(filename: str, params: _Params, init_allowed: Sequence[str]) -> str | None:
    """For a tensorflow handler: the message when `__init__` cannot receive tensorflow_client; else None."""
    if "tensorflow_client" not in init_allowed:
        return None
    if any(kind == _P.VAR_KEYWORD or name == "tensorflow_client" for name, kind in params):
        return None
    return (
        f"{filename}: {_CLASS_NAME}.__init__() must take tensorflow_client: a handler of type tensorflow is given "
        "the client that runs its models (def __init__(self, tensorflow_client, config))"
    )


def _method_problem(
    filename: str,
    method: str,
    params: _Params,
    implicit_first: bool,
    init_allowed: Sequence[str] = ALLOWED_INIT_PARAMS,
) -> str | None:
    if implicit_first:
        rest = _without_self(params)
        if rest is None:
            return f"{filename}: {_CLASS_NAME}.{method}() must take self as its first parameter"
        params = rest
    if method == "__init__":
        return _signature_problem(filename, method, params, init_allowed) or _missing_client(
            filename, params, init_allowed
        )
    return _signature_problem(filename, method, params, _METHOD_PARAMS[method])


def _missing_class_message(filename: str, class_names: Sequence[str]) -> str:
    by_lower = {n.lower(): n for n in class_names}
    near = difflib.get_close_matches(_CLASS_NAME.lower(), list(by_lower), n=1, cutoff=0.8)
    message = f"{filename}: no class named {_CLASS_NAME} found; the handler class must be named {_CLASS_NAME}"
    if near:
        message += f" (found class '{by_lower[near[0]]}': rename it to {_CLASS_NAME})"
    return message


def _missing_method_message(filename: str, defined: Sequence[str]) -> str:
    message = f"{filename}: class {_CLASS_NAME} {_MISSING_METHOD}"
    public = [n for n in dict.fromkeys(defined) if not n.startswith("_")]
    if public:
        message += f" (it defines {', '.join(public)})"
    return message


# --- the static check -------------------------------------------------------------------------------------------------


def _scope_statements(body: Sequence[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements that run in this scope, including those nested in if/try/with/for/match blocks."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        for _, value in ast.iter_fields(stmt):
            if not isinstance(value, list):
                continue
            for item in value:
                if isinstance(item, ast.stmt):
                    yield from _scope_statements([item])
                elif isinstance(item, ast.ExceptHandler | ast.match_case):
                    yield from _scope_statements(item.body)


def _may_bind_handler(tree: ast.Module) -> bool:
    """Whether anything in the module could bind the name Handler (generous: any scope counts)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and node.id == _CLASS_NAME:
            return True
        if isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                # A star import may bring Handler in; only the runtime check can tell.
                bound = alias.asname or alias.name.partition(".")[0]
                if bound in (_CLASS_NAME, "*"):
                    return True
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == _CLASS_NAME:
            return True
        if isinstance(node, ast.Global) and _CLASS_NAME in node.names:
            return True
        if isinstance(node, ast.ExceptHandler | ast.MatchAs | ast.MatchStar) and node.name == _CLASS_NAME:
            return True
    return False


def _ast_params(args: ast.arguments) -> _Params:
    params: _Params = [(a.arg, _P.POSITIONAL_ONLY) for a in args.posonlyargs]
    params += [(a.arg, _P.POSITIONAL_OR_KEYWORD) for a in args.args]
    if args.vararg:
        params.append((args.vararg.arg, _P.VAR_POSITIONAL))
    params += [(a.arg, _P.KEYWORD_ONLY) for a in args.kwonlyargs]
    if args.kwarg:
        params.append((args.kwarg.arg, _P.VAR_KEYWORD))
    return params


def _decorator_names(node: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    return {d.id for d in node.decorator_list if isinstance(d, ast.Name)}


def _check_class_node(filename: str, cls: ast.ClassDef, init_allowed: Sequence[str] = ALLOWED_INIT_PARAMS) -> None:
    defs: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    bound: list[str] = []
    for stmt in _scope_statements(cls.body):
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            defs[stmt.name] = stmt  # the last definition wins, as when the class body runs
            bound.append(stmt.name)
        elif isinstance(stmt, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for target in targets:
                bound += [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]
                defs = {k: v for k, v in defs.items() if k not in bound}
        elif isinstance(stmt, ast.Import | ast.ImportFrom):
            bound += [a.asname or a.name.partition(".")[0] for a in stmt.names]
    for method, node in defs.items():
        if method not in _METHOD_PARAMS:
            continue
        if method == "__init__" and isinstance(node, ast.AsyncFunctionDef):
            raise HandlerDefinitionError(f"{filename}: {_CLASS_NAME}.__init__() must be a plain def, not async def")
        decorators = _decorator_names(node)
        problem = _method_problem(
            filename, method, _ast_params(node.args), "staticmethod" not in decorators, init_allowed
        )
        if problem:
            raise HandlerDefinitionError(problem)
    # Bases, a metaclass or class decorators can supply the methods; the runtime check has the final word there.
    plain_bases = all(isinstance(b, ast.Name) and b.id == "object" for b in cls.bases)
    supplied_elsewhere = not plain_bases or cls.keywords or cls.decorator_list
    if not supplied_elsewhere and "__init__" not in defs and "__init__" not in bound:
        problem = _missing_client(filename, [], init_allowed)
        if problem:
            raise HandlerDefinitionError(problem)
    if not supplied_elsewhere and not {"handle_async", "handle_batch"} & set(bound):
        raise HandlerDefinitionError(_missing_method_message(filename, bound))


def _syntax_error_message(filename: str, error: SyntaxError) -> str:
    where = f"{filename}, line {error.lineno}" if error.lineno else filename
    message = f"{where}: invalid Python: {error.msg}"
    if error.text and error.text.strip():
        message += f"\n    {error.text.strip()}"
    return message


def check_handler_source(source: str, filename: str, handler_type: str = "python") -> None:
    """Check a handler file's source without running it, as at deploy time.

    Raises HandlerDefinitionError (naming ``filename``) when the source does not parse, when no top-level class
    ``Handler`` exists and nothing else could bind that name, when the class plainly lacks both ``handle_async`` and
    ``handle_batch``, or when ``__init__``/``handle_async``/``handle_batch`` take a parameter other than the allowed
    names (or take one positional-only). ``*args``/``**kwargs`` are accepted. For ``handler_type`` tensorflow,
    ``__init__`` may also take, and must take, ``tensorflow_client``. Anything only the runtime can know (inherited
    methods, imported or generated classes) passes here and is checked by ``load_handler_class``.
    """
    try:
        with warnings.catch_warnings():
            # A warning (say, for "\d" in a plain string) must not stop a deploy that Python itself would run, even
            # where warnings are turned into errors.
            warnings.simplefilter("ignore")
            tree = ast.parse(source, filename=filename)
    except SyntaxError as error:
        raise HandlerDefinitionError(_syntax_error_message(filename, error)) from None
    except ValueError as error:  # e.g. null bytes in the source
        raise HandlerDefinitionError(f"{filename}: invalid Python: {error}") from None
    top_level = list(_scope_statements(tree.body))
    classes = [s for s in top_level if isinstance(s, ast.ClassDef) and s.name == _CLASS_NAME]
    if not classes:
        if _may_bind_handler(tree):
            return
        names = [s.name for s in top_level if isinstance(s, ast.ClassDef)]
        raise HandlerDefinitionError(_missing_class_message(filename, names))
    for cls in classes:
        _check_class_node(filename, cls, init_params_for(handler_type))


# --- loading and the runtime check ------------------------------------------------------------------------------------


def _display_path(path: Path) -> str:
    """The path as the user wrote it in the configuration: relative to the project root, the working directory."""
    if not path.is_absolute():
        return str(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _is_module_of(module: ModuleType | None, path: Path) -> bool:
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


def _runtime_params(cls: type, method: str) -> tuple[_Params, bool] | None:
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


def _inspect_params(fn: Callable[..., Any]) -> _Params:
    return [(p.name, p.kind) for p in inspect.signature(fn).parameters.values()]


def _check_class(filename: str, cls: object, init_allowed: Sequence[str] = ALLOWED_INIT_PARAMS) -> type:
    if not isinstance(cls, type):
        raise HandlerDefinitionError(f"{filename}: {_CLASS_NAME} must be a class, but it is {_type_name(cls)}")
    init = inspect.getattr_static(cls, "__init__", None)
    if inspect.iscoroutinefunction(init):
        raise HandlerDefinitionError(f"{filename}: {_CLASS_NAME}.__init__() must be a plain def, not async def")
    try:
        init_params: _Params | None = _inspect_params(cls)  # the constructor as called, self already left out
    except (TypeError, ValueError):
        init_params = None
    if init_params is not None:
        problem = _signature_problem(filename, "__init__", init_params, init_allowed) or _missing_client(
            filename, init_params, init_allowed
        )
        if problem:
            raise HandlerDefinitionError(problem)
    present = [m for m in ("handle_async", "handle_batch") if hasattr(cls, m)]
    if not present:
        defined = [n for n in vars(cls) if callable(getattr(cls, n, None))]
        raise HandlerDefinitionError(_missing_method_message(filename, defined))
    for method in present:
        if not callable(getattr(cls, method)):
            kind = _type_name(getattr(cls, method))
            raise HandlerDefinitionError(f"{filename}: {_CLASS_NAME}.{method} must be a method, but it is {kind}")
        found = _runtime_params(cls, method)
        if found is not None:
            problem = _method_problem(filename, method, *found)
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
            raise HandlerDefinitionError(_syntax_error_message(filename, error)) from None
        raise
    except BaseException:
        sys.modules.pop(name, None)
        raise
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)  # as the import statement does, so pkg.handler resolves
    if not hasattr(module, _CLASS_NAME):
        classes = [n for n, v in vars(module).items() if isinstance(v, type) and v.__module__ == module.__name__]
        raise HandlerDefinitionError(_missing_class_message(filename, classes))
    return _check_class(filename, getattr(module, _CLASS_NAME), init_params_for(handler_type))


# --- calling a handler ------------------------------------------------------------------------------------------------


def _names_to_pass(
    fn: Callable[..., Any], allowed: Sequence[str], *, unknown: Sequence[str] | None = None
) -> tuple[str, ...]:
    """The allowed names ``fn`` accepts by keyword: those it names, or all of them when it takes ``**kwargs``.

    ``unknown`` (default: all of ``allowed``) is the answer when the signature cannot be read (a C-level callable).
    """
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return tuple(allowed if unknown is None else unknown)
    if any(p.kind == _P.VAR_KEYWORD for p in params):
        return tuple(allowed)
    named = {p.name for p in params if p.kind in (_P.POSITIONAL_OR_KEYWORD, _P.KEYWORD_ONLY)}
    return tuple(n for n in allowed if n in named)


def _is_coroutine_callable(fn: Callable[..., Any]) -> bool:
    # Decorators such as torch.inference_mode() wrap an async def in a plain function that returns its coroutine.
    if inspect.iscoroutinefunction(fn):
        return True
    try:
        return inspect.iscoroutinefunction(inspect.unwrap(fn))
    except ValueError:  # a __wrapped__ cycle
        return False


def _refuse_awaitable(result: Any, method: str) -> Any:
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()  # never awaited on purpose; closing it avoids a second, confusing warning
        raise InvalidResultError(f"{method} returned an awaitable from a plain def; declare it with async def")
    return result


class HandlerInstance:
    """A constructed handler, with its methods called the way SPEC §2 promises: arguments by name, only those named."""

    def __init__(self, handler: Any) -> None:
        """Wrap an already constructed handler object; most callers want ``create``."""
        self.handler = handler
        self._handle: Callable[..., Any] | None = getattr(handler, "handle_async", None)
        self._batch: Callable[..., Any] | None = getattr(handler, "handle_batch", None)
        # An unreadable method signature still gets both arguments: passing by name is the contract.
        self._handle_names = _names_to_pass(self._handle, ALLOWED_HANDLE_PARAMS) if self._handle else ()
        self._batch_names = _names_to_pass(self._batch, ALLOWED_BATCH_PARAMS) if self._batch else ()
        self.has_handle_async: bool = self._handle is not None
        self.has_batch: bool = self._batch is not None
        self.batch_is_async: bool = self._batch is not None and _is_coroutine_callable(self._batch)
        #: Whether single requests go through ``call_async``: handle_async is async, or only an async batch exists.
        self.is_async: bool = _is_coroutine_callable(self._handle) if self._handle else self.batch_is_async

    @classmethod
    def create(
        cls, handler_class: type, config: dict[str, Any] | None, metrics_client: Any, tensorflow_client: Any = None
    ) -> HandlerInstance:
        """Construct ``handler_class``, passing by name only those of config/metrics_client (and tensorflow_client,
        when given: a tensorflow handler) its ``__init__`` names.

        ``config`` is deep-copied (``{}`` when None), so the handler may change it freely. Exceptions raised by the
        constructor propagate unchanged.
        """
        values = {"config": copy.deepcopy(config) if config is not None else {}, "metrics_client": metrics_client}
        allowed: tuple[str, ...] = ALLOWED_INIT_PARAMS
        if tensorflow_client is not None:
            values["tensorflow_client"] = tensorflow_client
            allowed = TENSORFLOW_INIT_PARAMS
        # A constructor without a readable signature comes from a C base class (dict, say) that wants no arguments.
        names = _names_to_pass(handler_class, allowed, unknown=())
        return cls(handler_class(**{n: values[n] for n in names}))

    def _handle_kwargs(self, payload: Any, request_id: str) -> dict[str, Any]:
        values = {"payload": payload, "request_id": request_id}
        return {n: values[n] for n in self._handle_names}

    def _batch_kwargs(self, payloads: list[Any], request_ids: list[str]) -> dict[str, Any]:
        values = {"payloads": payloads, "request_ids": request_ids}
        return {n: values[n] for n in self._batch_names}

    def call_sync(self, payload: Any, request_id: str) -> Any:
        """Run a plain ``handle_async`` (the caller puts this in a thread) and return what it returned.

        With only ``handle_batch`` defined, runs it on a batch of one and returns that one result. Exceptions from the
        handler propagate; InvalidResultError if the method hands back an awaitable or a malformed batch result.
        """
        if self._handle is None:
            return split_batch_result(self.call_batch([payload], [request_id]), 1)[0]
        return _refuse_awaitable(self._handle(**self._handle_kwargs(payload, request_id)), "handle_async")

    async def call_async(self, payload: Any, request_id: str) -> Any:
        """Await an ``async def handle_async`` and return its result; same contract as ``call_sync``."""
        if self._handle is None:
            return split_batch_result(await self.call_batch_async([payload], [request_id]), 1)[0]
        result = self._handle(**self._handle_kwargs(payload, request_id))
        if inspect.isawaitable(result):
            result = await result
        return result

    def call_batch(self, payloads: list[Any], request_ids: list[str]) -> Any:
        """Run a plain ``handle_batch`` and return what it returned (check it with ``split_batch_result``).

        Raises TypeError when the handler has no ``handle_batch``; exceptions from the handler propagate.
        """
        if self._batch is None:
            raise TypeError(f"{_CLASS_NAME} defines no handle_batch")
        return _refuse_awaitable(self._batch(**self._batch_kwargs(payloads, request_ids)), "handle_batch")

    async def call_batch_async(self, payloads: list[Any], request_ids: list[str]) -> Any:
        """Await an ``async def handle_batch`` and return its result; same contract as ``call_batch``."""
        if self._batch is None:
            raise TypeError(f"{_CLASS_NAME} defines no handle_batch")
        result = self._batch(**self._batch_kwargs(payloads, request_ids))
        if inspect.isawaitable(result):
            result = await result
        return result


# --- payloads ---------------------------------------------------------------------------------------------------------


def _parse_content_type(content_type: str | None) -> tuple[str, str | None]:
    """(media type in lower case, charset parameter or None), with quoting and RFC 2231 handled by the email package."""
    if not content_type or not content_type.strip():
        return "", None
    message = email.message.Message()
    message["content-type"] = content_type
    params = message.get_params() or [(content_type, "")]
    media_type = params[0][0].strip().lower()
    raw = message.get_param("charset")
    charset = email.utils.collapse_rfc2231_value(raw).strip() if raw is not None else None
    return media_type, charset or None


MAX_BODY_BYTES = 32 * 1024 * 1024
"""Largest request body Cortado takes: Envoy answers a larger HTTP body 413, ingest refuses a larger gRPC one."""

MAX_JSON_DEPTH = 512
"""The deepest nesting any setting may allow in a JSON body; ``decode_payload`` decodes bodies this deep."""

DEFAULT_JSON_DEPTH = 128
DEFAULT_JSON_VALUES = 1_000_000


@dataclass(frozen=True)
class JsonLimits:
    """What an accepted ``application/json`` body may hold (ingest's settings; see docs/operations.md#limits)."""

    max_depth: int = DEFAULT_JSON_DEPTH
    """Arrays and objects open at once: ``[[1]]`` is 2 deep (at most MAX_JSON_DEPTH)."""
    max_values: int = DEFAULT_JSON_VALUES
    """Values in the whole body: each array, object, string, number, true, false and null counts one."""


_UNLIMITED = JsonLimits(max_depth=MAX_JSON_DEPTH, max_values=sys.maxsize)
_CHECK_CHUNK_BYTES = 16 * 1024
"""Body bytes checked between two chances for the event loop to run other work (check_payload)."""


def _codec(charset: str) -> codecs.CodecInfo:
    try:
        info = codecs.lookup(charset)
    except LookupError:
        raise PayloadError(f"unknown charset '{charset}'") from None
    if not getattr(info, "_is_text_encoding", True):  # base64, zlib and friends are bytes-to-bytes codecs
        raise PayloadError(f"unknown charset '{charset}'")
    return info


def _decode_error(what: str, charset: str, error: UnicodeDecodeError, position: int) -> PayloadError:
    byte = error.object[error.start : error.start + 1].hex()
    return PayloadError(
        f"{what} is not valid {charset}: cannot decode byte 0x{byte} at position {position} ({error.reason})"
    )


def _decode_text(body: bytes, charset: str, what: str) -> str:
    info = _codec(charset)
    try:
        return body.decode(info.name)
    except UnicodeDecodeError as error:
        raise _decode_error(what, charset, error, error.start) from None
    except UnicodeError as error:
        raise PayloadError(f"{what} is not valid {charset}: {error}") from None


_PIECEWISE_CODECS = frozenset(
    ["utf-8", "ascii", "iso8859-1", "cp1252", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"]
)
"""Codecs whose incremental decoder decodes and fails exactly as a whole decode does (no state across characters):
a body in one of them is checked a piece at a time. So is one in UTF-16 or UTF-32 (their byte order mark read
first); other charsets are decoded whole."""

_BYTE_ORDER_MARKS = {
    "utf-16": ((codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")),
    "utf-32": ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be")),
}


def _piecewise_codec(name: str, body: bytes) -> tuple[str, int] | None:
    """(codec, bytes to skip) that decodes body a piece at a time as codec ``name`` decodes it whole, if any."""
    if name in _PIECEWISE_CODECS:
        return name, 0
    for mark, codec in _BYTE_ORDER_MARKS.get(name, ()):
        if body.startswith(mark):
            return codec, len(mark)
    if name in _BYTE_ORDER_MARKS:  # no mark: the machine's byte order, as the whole decode assumes
        return f"{name}-{'le' if sys.byteorder == 'little' else 'be'}", 0
    return None


def _decode_pieces(body: bytes, charset: str, what: str) -> Iterator[str]:
    """The body decoded piece by piece (_CHECK_CHUNK_BYTES each), never whole where its codec allows;
    PayloadError as _decode_text, with the same message."""
    piecewise = _piecewise_codec(_codec(charset).name, body)
    if piecewise is None:
        text = _decode_text(body, charset, what)
        for start in range(0, len(text), _CHECK_CHUNK_BYTES):
            yield text[start : start + _CHECK_CHUNK_BYTES]
        return
    codec, skip = piecewise
    decoder = codecs.getincrementaldecoder(codec)("strict")
    view = memoryview(body)
    for start in range(skip, len(body), _CHECK_CHUNK_BYTES):
        pending, last = decoder.getstate()[0], start + _CHECK_CHUNK_BYTES >= len(body)
        try:
            yield decoder.decode(view[start : start + _CHECK_CHUNK_BYTES], final=last)
        except UnicodeDecodeError as error:
            # The decoder saw the bytes it kept from the last piece, then this piece.
            raise _decode_error(what, charset, error, start - len(pending) + error.start) from None


def _check_steps(content_type: str | None, body: bytes, limits: JsonLimits) -> Iterator[None]:
    """Check a body as ``decode_payload`` would decode it, a piece at a time (a step per piece), without building
    the payload: PayloadError when it would not decode or goes past ``limits``."""
    media_type, charset = _parse_content_type(content_type)
    if media_type == "text/plain":
        for _ in _decode_pieces(body, charset or "utf-8", "body"):
            yield
        return
    if media_type != "application/json":
        return
    if not body:
        raise PayloadError("body is empty, but Content-Type is application/json")
    scanner = JsonScanner(limits.max_depth, limits.max_values)
    pieces = _decode_pieces(body, charset or "utf-8", "JSON body")
    first = True
    try:
        for text in pieces:
            if first and text:
                text = text.removeprefix("\ufeff")
                first = False
            scanner.feed(text)
            yield
        scanner.close()
    except (JsonSyntaxError, JsonLimitError) as error:
        # decode_payload decodes the whole body before it parses: bytes that do not decode, even after the
        # problem found here, are what it reports.
        for _ in pieces:
            yield
        prefix = "body is not valid JSON" if isinstance(error, JsonSyntaxError) else "body refused"
        raise PayloadError(f"{prefix}: {error}") from None


def validate_payload(content_type: str | None, body: bytes, limits: JsonLimits = _UNLIMITED) -> None:
    """Raise PayloadError exactly when ``decode_payload`` would for this request, or when a JSON body goes past
    ``limits`` (none but MAX_JSON_DEPTH by default); return None otherwise. Builds no payload: its memory does
    not grow with the body's contents."""
    for _ in _check_steps(content_type, body, limits):
        pass


async def check_payload(content_type: str | None, body: bytes, limits: JsonLimits) -> None:
    """``validate_payload`` on an event loop: a large body is checked a piece at a time, other tasks running in
    between, so one request cannot hold the loop for long."""
    steps = _check_steps(content_type, body, limits)
    for _ in steps:
        await asyncio.sleep(0)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


@contextlib.contextmanager
def _recursion_room(depth: int) -> Iterator[None]:
    """Room for json.loads to nest ``depth`` levels below the current frame (Python 3.11 counts its C recursion
    against the recursion limit)."""
    frame, used = sys._getframe(), 0
    while frame is not None:
        frame, used = frame.f_back, used + 1  # type: ignore[assignment]
    needed = used + depth + 100
    previous = sys.getrecursionlimit()
    if needed <= previous:
        yield
        return
    sys.setrecursionlimit(needed)
    try:
        yield
    finally:
        sys.setrecursionlimit(previous)


def _loads_payload(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        pass
    # The message comes from the same check ingest made; a body that passes it is JSON that json.loads could
    # not build under this process's own limits (its recursion limit, its integer digit limit): build it anyway.
    scanner = JsonScanner(_UNLIMITED.max_depth, _UNLIMITED.max_values)
    try:
        scanner.feed(text)
        scanner.close()
    except JsonSyntaxError as error:
        raise PayloadError(f"body is not valid JSON: {error}") from None
    except JsonLimitError as error:
        raise PayloadError(f"body refused: {error}") from None
    with _recursion_room(scanner.deepest):
        return json.loads(text, parse_constant=_reject_constant, parse_int=decimal_to_int)


def decode_payload(content_type: str | None, body: bytes) -> Any:
    """The ``payload`` a handler receives for a request body, by its Content-Type (SPEC §2).

    ``application/json`` (any parameters) gives the parsed JSON value, decoded from the ``charset`` parameter (UTF-8
    when absent, a leading BOM tolerated), with integers of up to MAX_NUMBER_DIGITS digits kept exactly (whatever
    digit limit this process sets) and NaN/Infinity refused. ``text/plain`` gives a ``str`` decoded with its
    ``charset`` (UTF-8 when absent). Anything else, including no Content-Type, gives ``body`` unchanged. Media types
    compare case-insensitively. Raises PayloadError, with a message fit for the client, for an empty or invalid JSON
    body, an unknown charset, or bytes that do not decode in the charset: the same message ``validate_payload``
    gives, and for exactly the bodies it refuses (JSON nested up to MAX_JSON_DEPTH levels deep is decoded).
    """
    media_type, charset = _parse_content_type(content_type)
    if media_type == "text/plain":
        return _decode_text(body, charset or "utf-8", "body")
    if media_type != "application/json":
        return body
    if not body:
        raise PayloadError("body is empty, but Content-Type is application/json")
    text = _decode_text(body, charset or "utf-8", "JSON body")
    return _loads_payload(text.removeprefix("\ufeff"))


# --- results ----------------------------------------------------------------------------------------------------------


def _type_name(value: object) -> str:
    kind = type(value)
    if kind is type(None):
        return "None"
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def _find_unencodable(value: Any, path: str, seen: set[int]) -> tuple[str, str, Any] | None:
    """(path, problem, value) for the first thing json.dumps would refuse, met in the order it would meet them."""
    if isinstance(value, str) or value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None  # of any size: dumps_json writes those past the digit limit too
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, "nan", value)
    if not isinstance(value, dict | list | tuple):
        return path, "type", value
    if id(value) in seen:
        return path, "circular", value
    seen.add(id(value))
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}[{int_to_decimal(key) if _is_long_int(key) else repr(key)}]"
            if not isinstance(key, str | int | float | bool) and key is not None:
                return where, "key", key
            if isinstance(key, float) and not math.isfinite(key):
                return where, "nan", key
            found = _find_unencodable(item, where, seen)
            if found:
                return found
    else:
        for position, item in enumerate(value):
            found = _find_unencodable(item, f"{path}[{position}]", seen)
            if found:
                return found
    seen.discard(id(value))
    return None


def _unencodable_message(method: str, value: Any, root: str, error: Exception) -> str:
    try:
        found = _find_unencodable(value, root, set())
    except RecursionError:
        found = None
    if found is None:
        return f"{method} returned a result that cannot be encoded as JSON: {error}"
    path, problem, culprit = found
    if problem == "nan":
        return f"{method} returned {culprit!r} at {path}, but NaN and Infinity are not valid JSON"
    if problem == "circular":
        return f"{method} returned a result that contains itself at {path}; JSON cannot encode a circular reference"
    kind = _type_name(culprit)
    hint = " (convert NumPy values with .item() or .tolist())" if kind.startswith("numpy.") else ""
    if problem == "key":
        return f"{method} returned a key of type {kind} at {path}, but JSON object keys must be strings{hint}"
    return f"{method} returned a value of type {kind} at {path}, which is not JSON-serialisable{hint}"


_SAFE_INT_BITS = 2000
"""Integers this small (at most 603 digits) convert to and from text under any digit limit Python allows (640+)."""

_BITS_TO_DIGITS = math.log10(2)


def int_to_decimal(value: int) -> str:
    """The decimal text of an integer of any size, whatever ``sys.set_int_max_str_digits`` says.

    Python refuses ``str()`` of integers past 4300 digits (a guard against quadratic conversion of untrusted text);
    a handler's own result is not untrusted input, so it is converted here half by half, each part under the limit.
    """
    if value < 0:
        return "-" + int_to_decimal(-value)
    if value.bit_length() <= _SAFE_INT_BITS:
        return int.__repr__(value)
    low_digits = int(value.bit_length() * _BITS_TO_DIGITS) // 2
    high, low = divmod(value, 10**low_digits)
    return int_to_decimal(high) + int_to_decimal(low).rjust(low_digits, "0")


def decimal_to_int(text: str) -> int:
    """The integer that decimal ``text`` (an optional ``-`` and digits) spells, of any length; ValueError otherwise."""
    digits = text.removeprefix("-")
    if not digits.isascii() or not digits.isdigit():
        raise ValueError(f"not an integer: {text[:40]!r}")
    if len(digits) <= _SAFE_INT_BITS * _BITS_TO_DIGITS:
        value = int(digits)
    else:
        low_digits = len(digits) // 2
        value = decimal_to_int(digits[:-low_digits]) * 10**low_digits + decimal_to_int(digits[-low_digits:])
    return -value if text.startswith("-") else value


def _is_long_int(value: Any) -> bool:
    """Whether ``value`` is an integer (not a bool) past Python's int-to-text digit limit."""
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    try:
        int.__repr__(value)
    except ValueError:
        return True
    return False


class _CircularError(Exception):
    """A container holds itself (JSON cannot encode it)."""


def _swap_long_ints(value: Any, marker: str, digits: dict[str, str], active: set[int]) -> Any:
    """A copy of ``value`` with each integer past the digit limit replaced by a unique marker string.

    ``digits`` collects marker -> the integer's decimal text. Dict keys that are such integers become that text,
    as ``json`` writes integer keys. Anything else is kept as it is, for ``json`` to accept or refuse.
    """
    if _is_long_int(value):
        key = f"{marker}{len(digits)}\0"
        digits[key] = int_to_decimal(value)
        return key
    if not isinstance(value, dict | list | tuple):
        return value
    if id(value) in active:
        raise _CircularError
    active.add(id(value))
    if isinstance(value, dict):
        copied: Any = {
            (int_to_decimal(k) if _is_long_int(k) else k): _swap_long_ints(v, marker, digits, active)
            for k, v in value.items()
        }
    else:
        copied = [_swap_long_ints(item, marker, digits, active) for item in value]
    active.discard(id(value))
    return copied


def dumps_json(
    value: Any,
    *,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = (",", ":"),
) -> str:
    """``json.dumps`` (compact by default, NaN refused) that also writes integers of any size, past Python's limit.

    Raises what ``json.dumps`` raises for anything else it cannot encode (ValueError for a circular reference).
    """
    options: dict[str, Any] = {
        "allow_nan": False,
        "ensure_ascii": ensure_ascii,
        "indent": indent,
        "separators": separators,
    }
    try:
        return json.dumps(value, **options)
    except ValueError:
        if not _find_long_int(value, set()):
            raise
    # Each long integer travels as a marker string no other string can render as (its NUL bytes are written as
    # \u0000 escapes, and a random part makes it unique), then the marker's JSON text becomes the digits.
    marker = f"\0{os.urandom(8).hex()}:"
    digits: dict[str, str] = {}
    try:
        swapped = _swap_long_ints(value, marker, digits, set())
    except _CircularError:
        raise ValueError("Circular reference detected") from None
    text = json.dumps(swapped, **options)
    rendered = {json.dumps(key, ensure_ascii=ensure_ascii): number for key, number in digits.items()}
    return re.sub('"\\\\u0000[0-9a-f]{16}:[0-9]+\\\\u0000"', lambda match: rendered.get(match[0], match[0]), text)


def _find_long_int(value: Any, seen: set[int]) -> bool:
    """Whether an integer past the digit limit sits anywhere in ``value`` (as a value or a dict key)."""
    if _is_long_int(value):
        return True
    if not isinstance(value, dict | list | tuple) or id(value) in seen:
        return False
    seen.add(id(value))
    if isinstance(value, dict):
        return any(_is_long_int(k) or _find_long_int(v, seen) for k, v in value.items())
    return any(_find_long_int(item, seen) for item in value)


def loads_json(text: str | bytes) -> Any:
    """``json.loads`` that reads integers of any size (the counterpart of ``dumps_json``), for trusted JSON such
    as a stored result; NaN and Infinity are refused."""
    return json.loads(text, parse_int=decimal_to_int, parse_constant=_reject_constant)


def encode_result(value: Any, *, method: str = "handle_async", index: int | None = None) -> bytes:
    """The exact JSON bytes (UTF-8) of a handler's result, key order and integers of any size kept.

    The result must be a ``dict`` whose contents JSON can encode. Raises InvalidResultError naming the type that came
    back when it is not a dict, saying that NaN and Infinity are not valid JSON when one is inside, and naming the
    offending type and where it sits when something is not serialisable. ``method`` and ``index`` (a position in a
    ``handle_batch`` result) only shape the messages.
    """
    root = "result" if index is None else f"result[{index}]"
    if not isinstance(value, dict):
        if index is None:
            raise InvalidResultError(
                f"{method} must return a dict (or bytes, a pathlib.Path or a cortado.Result), "
                f"but returned {_type_name(value)}"
            )
        raise InvalidResultError(
            f"{method} must return a list of dicts (or bytes, paths or cortado.Result), "
            f"but item {index} is {_type_name(value)}"
        )
    try:
        text = dumps_json(value)
    except RecursionError:
        raise InvalidResultError(f"{method} returned a result nested too deeply to encode as JSON") from None
    except (TypeError, ValueError) as error:
        raise InvalidResultError(_unencodable_message(method, value, root, error)) from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates (e.g. echoed from a JSON payload's "\ud800") have no UTF-8 form; \u escapes keep them exactly.
        return dumps_json(value, ensure_ascii=True).encode("ascii")


def split_batch_result(value: Any, count: int) -> list[Any]:
    """The per-request results of a ``handle_batch`` call: a list or tuple with exactly ``count`` items.

    Raises InvalidResultError otherwise, naming what came back. Each item still needs ``encode_result``.
    """
    if not isinstance(value, list | tuple):
        raise InvalidResultError(
            f"handle_batch must return a list with one result per payload, but returned {_type_name(value)}"
        )
    if len(value) != count:
        raise InvalidResultError(
            f"handle_batch must return a list with one result per payload ({count}), but returned {len(value)}"
        )
    return list(value)


def describe_exception(exc: BaseException) -> tuple[str, str]:
    """(type, message) of an exception as kept for the client: the class's ``__qualname__`` and ``str(exc)``.

    The message falls back to ``repr(exc)`` when ``str`` is empty, and never raises, even for a broken ``__str__``.
    """
    kind = type(exc).__qualname__
    try:
        message = str(exc) or repr(exc)
    except Exception:
        message = f"<{kind} whose message could not be read>"
    return kind, message
