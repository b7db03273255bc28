"""Calling a loaded handler as the README promises ("Writing a handler"): constructed and called with arguments by
name, only those its methods name, plain and ``async def`` methods alike, and a batch-only handler serving single
requests."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from cortado.runtime.encoding import split_batch_result
from cortado.runtime.errors import InvalidResultError
from cortado.runtime.rules import (
    ALLOWED_BATCH_PARAMS,
    ALLOWED_HANDLE_PARAMS,
    ALLOWED_INIT_PARAMS,
    CLASS_NAME,
    TENSORFLOW_INIT_PARAMS,
)

_P = inspect.Parameter


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
    """Whether calling ``fn`` gives a coroutine to await: an ``async def``, or one behind a plain decorator."""
    # Decorators such as torch.inference_mode() wrap an async def in a plain function that returns its coroutine.
    if inspect.iscoroutinefunction(fn):
        return True
    try:
        return inspect.iscoroutinefunction(inspect.unwrap(fn))
    except ValueError:  # a __wrapped__ cycle
        return False


def _refuse_awaitable(result: Any, method: str) -> Any:
    """``result`` unchanged, or InvalidResultError when a plain ``method`` handed back an awaitable."""
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()  # never awaited on purpose; closing it avoids a second, confusing warning
        raise InvalidResultError(f"{method} returned an awaitable from a plain def; declare it with async def")
    return result


class HandlerInstance:
    """A constructed handler, its methods called the way the README promises: arguments by name, only those named."""

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
        """The keyword arguments ``handle_async`` names, of payload and request_id."""
        values = {"payload": payload, "request_id": request_id}
        return {n: values[n] for n in self._handle_names}

    def _batch_kwargs(self, payloads: list[Any], request_ids: list[str]) -> dict[str, Any]:
        """The keyword arguments ``handle_batch`` names, of payloads and request_ids."""
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
            raise TypeError(f"{CLASS_NAME} defines no handle_batch")
        return _refuse_awaitable(self._batch(**self._batch_kwargs(payloads, request_ids)), "handle_batch")

    async def call_batch_async(self, payloads: list[Any], request_ids: list[str]) -> Any:
        """Await an ``async def handle_batch`` and return its result; same contract as ``call_batch``."""
        if self._batch is None:
            raise TypeError(f"{CLASS_NAME} defines no handle_batch")
        result = self._batch(**self._batch_kwargs(payloads, request_ids))
        if inspect.isawaitable(result):
            result = await result
        return result
