"""Calling a handler (cortado.runtime.calling): HandlerInstance constructs it and calls its methods with only the
arguments they name, plain and async alike."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cortado.runtime.calling import HandlerInstance
from cortado.runtime.errors import InvalidResultError
from tests.unit.handlerfiles import (
    instance_of,
    isolated_imports,  # noqa: F401  (autouse: loaded handlers leave sys.path and sys.modules as they were)
)

# --- HandlerInstance: constructing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("init", "expected"),
    [
        pytest.param("", {}, id="no-init"),
        pytest.param("def __init__(self):\n        self.got = {}", {}, id="self-only"),
        pytest.param(
            "def __init__(self, config):\n        self.got = {'config': config}", {"config": {"k": 1}}, id="c"
        ),
        pytest.param(
            "def __init__(self, metrics_client, config):\n        self.got = {'config': config, 'm': metrics_client}",
            {"config": {"k": 1}, "m": "metrics"},
            id="reversed",
        ),
        pytest.param(
            "def __init__(self, metrics_client):\n        self.got = {'m': metrics_client}", {"m": "metrics"}, id="m"
        ),
        pytest.param("def __init__(self, **kwargs):\n        self.got = kwargs", None, id="kwargs"),
        pytest.param(
            "def __init__(self, *, config):\n        self.got = {'config': config}", {"config": {"k": 1}}, id="kw"
        ),
    ],
)
def test_the_constructor_gets_only_the_arguments_it_names(init: str, expected: Any, tmp_path: Path) -> None:
    source = f"class Handler:\n    got = {{}}\n    {init or 'pass'}\n    def handle_async(self):\n        return {{}}\n"
    handler = instance_of(source, tmp_path, {"k": 1}, "metrics")
    if expected is None:
        expected = {"config": {"k": 1}, "metrics_client": "metrics"}
    assert handler.handler.got == expected


def test_the_constructor_gets_a_deep_copy_of_the_config(tmp_path: Path) -> None:
    source = """
        class Handler:
            def __init__(self, config):
                config["nested"]["x"] = "changed"
                config["new"] = True

            def handle_async(self):
                return {}
    """
    config = {"nested": {"x": "original"}}
    instance_of(source, tmp_path, config)
    assert config == {"nested": {"x": "original"}}


def test_a_missing_config_arrives_as_an_empty_dict(tmp_path: Path) -> None:
    source = """
        class Handler:
            def __init__(self, config):
                self.config = config

            def handle_async(self): ...
    """
    assert instance_of(source, tmp_path, None).handler.config == {}


def test_an_exception_in_init_propagates_unchanged(tmp_path: Path) -> None:
    source = "class Handler:\n    def __init__(self, config):\n        raise FileNotFoundError('model.pt')\n"
    with pytest.raises(FileNotFoundError, match=r"model\.pt"):
        instance_of(source + "    def handle_async(self): ...\n", tmp_path)


# --- HandlerInstance: calling ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "body", "expected"),
    [
        pytest.param("self", "{'called': True}", {"called": True}, id="none"),
        pytest.param("self, payload", "{'p': payload}", {"p": "in"}, id="payload"),
        pytest.param("self, request_id", "{'r': request_id}", {"r": "rid"}, id="request-id"),
        pytest.param(
            "self, payload, request_id", "{'p': payload, 'r': request_id}", {"p": "in", "r": "rid"}, id="both"
        ),
        pytest.param(
            "self, request_id, payload", "{'p': payload, 'r': request_id}", {"p": "in", "r": "rid"}, id="swap"
        ),
        pytest.param("self, *, request_id", "{'r': request_id}", {"r": "rid"}, id="keyword-only"),
        pytest.param("self, **kwargs", "dict(kwargs)", {"payload": "in", "request_id": "rid"}, id="kwargs"),
        pytest.param("self, *args", "{'args': list(args)}", {"args": []}, id="args"),
    ],
)
def test_a_plain_handle_async_gets_only_the_arguments_it_names(
    params: str, body: str, expected: dict[str, Any], tmp_path: Path
) -> None:
    handler = instance_of(f"class Handler:\n    def handle_async({params}):\n        return {body}\n", tmp_path)
    assert handler.is_async is False
    assert handler.call_sync("in", "rid") == expected


@pytest.mark.parametrize(
    ("params", "body", "expected"),
    [
        pytest.param("self", "{'called': True}", {"called": True}, id="none"),
        pytest.param("self, payload", "{'p': payload}", {"p": "in"}, id="payload"),
        pytest.param("self, request_id", "{'r': request_id}", {"r": "rid"}, id="request-id"),
        pytest.param(
            "self, payload, request_id", "{'p': payload, 'r': request_id}", {"p": "in", "r": "rid"}, id="both"
        ),
    ],
)
async def test_an_async_handle_async_is_awaited_with_the_arguments_it_names(
    params: str, body: str, expected: dict[str, Any], tmp_path: Path
) -> None:
    source = f"import asyncio\nclass Handler:\n    async def handle_async({params}):\n"
    source += f"        await asyncio.sleep(0)\n        return {body}\n"
    handler = instance_of(source, tmp_path)
    assert handler.is_async is True
    assert await handler.call_async("in", "rid") == expected


async def test_an_async_handle_async_behind_a_plain_decorator_is_still_awaited() -> None:
    def no_grad(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        return wrapper

    class Handler:
        @no_grad
        async def handle_async(self, payload: Any) -> dict[str, Any]:
            return {"p": payload}

    handler = HandlerInstance.create(Handler, None, None)
    assert handler.is_async is True
    assert await handler.call_async(5, "rid") == {"p": 5}


def test_a_plain_handle_async_that_returns_a_coroutine_fails_cleanly() -> None:
    async def work() -> dict[str, Any]:
        return {}

    class Handler:
        def handle_async(self) -> Any:
            return work()

    with pytest.raises(InvalidResultError, match="returned an awaitable from a plain def; declare it with async def"):
        HandlerInstance.create(Handler, None, None).call_sync(None, "rid")


def test_a_staticmethod_handle_async_gets_its_arguments() -> None:
    class Handler:
        @staticmethod
        def handle_async(payload: Any) -> dict[str, Any]:
            return {"p": payload}

    assert HandlerInstance.create(Handler, None, None).call_sync("x", "rid") == {"p": "x"}


def test_an_exception_in_handle_async_propagates_unchanged(tmp_path: Path) -> None:
    handler = instance_of(
        "class Handler:\n    def handle_async(self, payload):\n        return payload['k']\n", tmp_path
    )
    with pytest.raises(KeyError, match="'k'"):
        handler.call_sync({}, "rid")


async def test_an_exception_in_an_async_handle_async_propagates_unchanged(tmp_path: Path) -> None:
    handler = instance_of(
        "class Handler:\n    async def handle_async(self):\n        raise ValueError('nope')\n", tmp_path
    )
    with pytest.raises(ValueError, match="nope"):
        await handler.call_async(None, "rid")


def test_handle_batch_gets_the_lists_it_names(tmp_path: Path) -> None:
    source = """
        class Handler:
            def handle_async(self, payload):
                return {"single": payload}

            def handle_batch(self, payloads, request_ids):
                return [{"p": p, "r": r} for p, r in zip(payloads, request_ids)]
    """
    handler = instance_of(source, tmp_path)
    assert handler.has_batch is True
    assert handler.batch_is_async is False
    assert handler.call_batch([1, 2], ["a", "b"]) == [{"p": 1, "r": "a"}, {"p": 2, "r": "b"}]
    assert handler.call_sync(3, "c") == {"single": 3}


async def test_an_async_handle_batch_is_awaited_with_only_the_lists_it_names(tmp_path: Path) -> None:
    source = (
        "class Handler:\n    async def handle_batch(self, payloads):\n        return [{'p': p} for p in payloads]\n"
    )
    handler = instance_of(source, tmp_path)
    assert handler.batch_is_async is True
    assert await handler.call_batch_async([1, 2], ["a", "b"]) == [{"p": 1}, {"p": 2}]


def test_a_batch_only_handler_serves_single_requests_as_a_batch_of_one(tmp_path: Path) -> None:
    source = (
        "class Handler:\n    def handle_batch(self, request_ids):\n        return [{'r': r} for r in request_ids]\n"
    )
    handler = instance_of(source, tmp_path)
    assert handler.has_handle_async is False
    assert handler.is_async is False
    assert handler.call_sync("payload", "rid") == {"r": "rid"}


async def test_an_async_batch_only_handler_serves_single_requests_asynchronously(tmp_path: Path) -> None:
    source = (
        "class Handler:\n    async def handle_batch(self, payloads):\n        return [{'p': p} for p in payloads]\n"
    )
    handler = instance_of(source, tmp_path)
    assert handler.is_async is True
    assert await handler.call_async("x", "rid") == {"p": "x"}


def test_a_handler_without_handle_batch_refuses_batch_calls(tmp_path: Path) -> None:
    handler = instance_of("class Handler:\n    def handle_async(self): ...\n", tmp_path)
    assert handler.has_batch is False
    with pytest.raises(TypeError, match="Handler defines no handle_batch"):
        handler.call_batch([1], ["a"])


def test_a_tensorflow_handler_is_constructed_with_its_client_by_name() -> None:
    class Handler:
        def __init__(self, config: dict[str, Any], tensorflow_client: object) -> None:
            self.client, self.config = tensorflow_client, config

        def handle_async(self, payload: Any) -> Any:
            return payload

    client = object()
    made = HandlerInstance.create(Handler, {"a": 1}, None, client).handler
    assert (made.client, made.config) == (client, {"a": 1})
