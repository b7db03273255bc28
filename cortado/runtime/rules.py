"""The rules a handler class follows (README, "Writing a handler"), shared by the deploy-time check (``handlercheck``,
on the source's syntax tree) and the load-time check (``loading``, on the imported class): its name, the parameters
its methods may take, and the messages for breaking them, worded the same by both checks."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Sequence
from typing import Any

ALLOWED_INIT_PARAMS = ("config", "metrics_client")
TENSORFLOW_INIT_PARAMS = ("tensorflow_client", "config", "metrics_client")
"""What `__init__` may take for `handler.type: tensorflow` (tensorflow_client is required there)."""
ALLOWED_HANDLE_PARAMS = ("payload", "request_id")
ALLOWED_BATCH_PARAMS = ("payloads", "request_ids")

CLASS_NAME = "Handler"
"""The name the handler class must have in its file."""
METHOD_PARAMS = {
    "__init__": ALLOWED_INIT_PARAMS,
    "handle_async": ALLOWED_HANDLE_PARAMS,
    "handle_batch": ALLOWED_BATCH_PARAMS,
}
"""The methods whose parameters are checked, and the names each may take (``__init__``: for a python handler)."""
_MISSING_METHOD = "must define handle_async(self, payload, request_id) or handle_batch(self, payloads, request_ids)"

_P = inspect.Parameter
Params = list[tuple[str, Any]]
"""A method's parameters as (name, ``inspect.Parameter`` kind), in declaration order."""


def _without_self(params: Params) -> Params | None:
    """Drop the implicit first parameter; None when the method has nowhere to receive it."""
    if params and params[0][1] in (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD):
        return params[1:]
    if params and params[0][1] == _P.VAR_POSITIONAL:
        return params
    return None


def signature_problem(filename: str, method: str, params: Params, allowed: Sequence[str]) -> str | None:
    """The message for the first parameter that breaks the pass-by-name rule, or None when all are fine."""
    where = f"{filename}: {CLASS_NAME}.{method}()"
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


def missing_client(filename: str, params: Params, init_allowed: Sequence[str]) -> str | None:
    """For a tensorflow handler: the message when `__init__` cannot receive tensorflow_client; else None."""
    if "tensorflow_client" not in init_allowed:
        return None
    if any(kind == _P.VAR_KEYWORD or name == "tensorflow_client" for name, kind in params):
        return None
    return (
        f"{filename}: {CLASS_NAME}.__init__() must take tensorflow_client: a handler of type tensorflow is given "
        "the client that runs its models (def __init__(self, tensorflow_client, config))"
    )


def method_problem(
    filename: str,
    method: str,
    params: Params,
    implicit_first: bool,
    init_allowed: Sequence[str] = ALLOWED_INIT_PARAMS,
) -> str | None:
    """The message for the first rule ``method``'s parameters break, or None when they keep them all.

    ``implicit_first`` says the first parameter receives the instance (a plain method) and must exist;
    ``init_allowed`` is what ``__init__`` may take (see ``init_params_for``).
    """
    if implicit_first:
        rest = _without_self(params)
        if rest is None:
            return f"{filename}: {CLASS_NAME}.{method}() must take self as its first parameter"
        params = rest
    if method == "__init__":
        return signature_problem(filename, method, params, init_allowed) or missing_client(
            filename, params, init_allowed
        )
    return signature_problem(filename, method, params, METHOD_PARAMS[method])


def missing_class_message(filename: str, class_names: Sequence[str]) -> str:
    """The message for a file without a ``Handler`` class, with a hint when one of ``class_names`` is a near miss."""
    by_lower = {n.lower(): n for n in class_names}
    near = difflib.get_close_matches(CLASS_NAME.lower(), list(by_lower), n=1, cutoff=0.8)
    message = f"{filename}: no class named {CLASS_NAME} found; the handler class must be named {CLASS_NAME}"
    if near:
        message += f" (found class '{by_lower[near[0]]}': rename it to {CLASS_NAME})"
    return message


def missing_method_message(filename: str, defined: Sequence[str]) -> str:
    """The message for a class with neither ``handle_async`` nor ``handle_batch``, naming the public ones it
    ``defined``."""
    message = f"{filename}: class {CLASS_NAME} {_MISSING_METHOD}"
    public = [n for n in dict.fromkeys(defined) if not n.startswith("_")]
    if public:
        message += f" (it defines {', '.join(public)})"
    return message


def syntax_error_message(filename: str, error: SyntaxError) -> str:
    """The message for a handler file that does not parse: the file, the line when known, and the offending text."""
    where = f"{filename}, line {error.lineno}" if error.lineno else filename
    message = f"{where}: invalid Python: {error.msg}"
    if error.text and error.text.strip():
        message += f"\n    {error.text.strip()}"
    return message
