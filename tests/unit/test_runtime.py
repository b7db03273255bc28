"""Unit tests for the handler contract: static and runtime checks, calling handlers, payloads and results."""

from __future__ import annotations

import datetime
import functools
import json
import pickle
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cortado.runtime import (
    ALLOWED_BATCH_PARAMS,
    ALLOWED_HANDLE_PARAMS,
    ALLOWED_INIT_PARAMS,
    HandlerDefinitionError,
    HandlerInstance,
    InvalidResultError,
    PayloadError,
    check_handler_source,
    decimal_to_int,
    decode_payload,
    describe_exception,
    dumps_json,
    encode_result,
    int_to_decimal,
    load_handler_class,
    loads_json,
    split_batch_result,
    validate_payload,
)


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


# --- the allowed names ------------------------------------------------------------------------------------------------


def test_the_allowed_parameter_names_are_those_of_the_reference_interface() -> None:
    assert ALLOWED_INIT_PARAMS == ("config", "metrics_client")
    assert ALLOWED_HANDLE_PARAMS == ("payload", "request_id")
    assert ALLOWED_BATCH_PARAMS == ("payloads", "request_ids")


def test_payload_and_result_errors_are_value_errors() -> None:
    assert issubclass(PayloadError, ValueError)
    assert issubclass(InvalidResultError, ValueError)


# --- check_handler_source: what passes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(REFERENCE_HANDLER, id="reference"),
        pytest.param("class Handler:\n    def handle_async(self, payload): ...\n", id="no-init"),
        pytest.param("class Handler:\n    async def handle_async(self, payload, request_id): ...\n", id="async"),
        pytest.param("class Handler:\n    def handle_async(self): ...\n", id="no-params"),
        pytest.param("class Handler:\n    def handle_async(self, request_id): ...\n", id="only-request-id"),
        pytest.param("class Handler:\n    def handle_async(self, request_id, payload): ...\n", id="any-order"),
        pytest.param("class Handler:\n    def handle_async(self, *, payload): ...\n", id="keyword-only"),
        pytest.param("class Handler:\n    def handle_async(self, /, payload): ...\n", id="positional-only-self"),
        pytest.param("class Handler:\n    def handle_async(self, *args, **kwargs): ...\n", id="star-args"),
        pytest.param("class Handler:\n    def handle_async(*args): ...\n", id="self-in-star-args"),
        pytest.param(
            "class Handler:\n    def __init__(self, metrics_client, config): ...\n    def handle_async(self): ...\n",
            id="init-any-order",
        ),
        pytest.param(
            "class Handler:\n    def __init__(self): ...\n    def handle_async(self): ...\n", id="init-self-only"
        ),
        pytest.param(
            "class Handler:\n    def __init__(self, **kwargs): ...\n    def handle_async(self): ...\n", id="init-kwargs"
        ),
        pytest.param(
            "class Handler:\n    @staticmethod\n    def handle_async(payload): ...\n", id="staticmethod-without-self"
        ),
        pytest.param(
            "class Handler:\n    @classmethod\n    def handle_async(cls, payload): ...\n", id="classmethod-with-cls"
        ),
        pytest.param("class Handler:\n    def handle_batch(self, payloads, request_ids): ...\n", id="batch-only"),
        pytest.param("class Handler(Base):\n    pass\n", id="inherits-its-methods"),
        pytest.param("@decorate\nclass Handler:\n    pass\n", id="decorated-class"),
        pytest.param("def impl(self, payload): ...\nclass Handler:\n    handle_async = impl\n", id="assigned-method"),
        pytest.param(
            "class Handler:\n    def handle_async(self, foo): ...\n    def handle_async(self, payload): ...\n",
            id="last-definition-wins",
        ),
        pytest.param("import re\nPATTERN = '\\d+'\nclass Handler:\n    def handle_async(self): ...\n", id="warning"),
    ],
)
def test_a_valid_handler_passes_the_static_check(source: str) -> None:
    check_handler_source(textwrap.dedent(source), "handler.py")


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("from handlers.impl import Handler\n", id="from-import"),
        pytest.param("from handlers.impl import Model as Handler\n", id="import-as"),
        pytest.param("from handlers.impl import *\n", id="star-import"),
        pytest.param("Handler = make_handler()\n", id="assignment"),
        pytest.param("Handler: type = make_handler()\n", id="annotated-assignment"),
        pytest.param("try:\n    from fast import Handler\nexcept ImportError:\n    Handler = None\n", id="in-try"),
    ],
)
def test_a_handler_bound_without_a_class_statement_is_left_to_the_runtime_check(source: str) -> None:
    check_handler_source(source, "handler.py")


# --- check_handler_source: what fails, and the messages ----------------------------------------------------------


def test_a_syntax_error_names_the_file_and_the_line() -> None:
    message = static_error("class Handler:\n    def handle_async(self, payload:\n        pass\n")
    assert message.startswith("handler.py, line 2: invalid Python: ")
    assert "def handle_async(self, payload:" in message


def test_null_bytes_in_the_source_are_a_definition_error() -> None:
    assert static_error("class Handler:\x00\n").startswith("handler.py")


def test_a_module_without_a_handler_class_is_rejected() -> None:
    message = static_error("import os\n\ndef handle_async(payload):\n    return {}\n")
    assert message == "handler.py: no class named Handler found; the handler class must be named Handler"


def test_the_handle_typo_from_the_reference_page_gets_a_hint() -> None:
    message = static_error("class Handle:\n    def handle_async(self, payload): ...\n")
    assert message == (
        "handler.py: no class named Handler found; the handler class must be named Handler"
        " (found class 'Handle': rename it to Handler)"
    )


@pytest.mark.parametrize("name", ["handler", "HANDLER", "Handlr", "Handlers", "MyHandler"])
def test_other_near_misses_of_the_class_name_get_a_hint(name: str) -> None:
    message = static_error(f"class {name}:\n    def handle_async(self): ...\n")
    assert message.endswith(f"(found class '{name}': rename it to Handler)")


@pytest.mark.parametrize("name", ["Model", "BaseHandler", "Predictor"])
def test_an_unrelated_class_gets_no_hint(name: str) -> None:
    message = static_error(f"class {name}:\n    def handle_async(self): ...\n")
    assert "found class" not in message


def test_a_handler_class_nested_in_a_function_does_not_count_as_top_level() -> None:
    message = static_error("def make():\n    class Handler:\n        pass\n    return Handler\n")
    assert message.startswith("handler.py: no class named Handler found")


def test_an_unknown_handle_async_parameter_is_named_in_the_error() -> None:
    message = static_error("class Handler:\n    def handle_async(self, payload, foo): ...\n")
    assert (
        message == "handler.py: Handler.handle_async() takes parameter 'foo', but only payload, request_id may be given"
    )


def test_an_unknown_init_parameter_is_named_in_the_error() -> None:
    message = static_error("class Handler:\n    def __init__(self, config, model):\n        pass\n")
    assert (
        message
        == "handler.py: Handler.__init__() takes parameter 'model', but only config, metrics_client may be given"
    )


def test_an_unknown_handle_batch_parameter_is_named_in_the_error() -> None:
    message = static_error("class Handler:\n    def handle_batch(self, payload): ...\n")
    assert message == (
        "handler.py: Handler.handle_batch() takes parameter 'payload', but only payloads, request_ids may be given"
    )


@pytest.mark.parametrize(
    "params",
    ["self, payload, debug=False", "self, payload, *, debug", "self, *args, debug, **kwargs", "self, data"],
)
def test_any_other_parameter_name_is_rejected_even_with_a_default(params: str) -> None:
    message = static_error(f"class Handler:\n    def handle_async({params}): ...\n")
    assert "Handler.handle_async() takes parameter '" in message


def test_an_allowed_name_that_is_positional_only_is_rejected_because_arguments_go_by_name() -> None:
    message = static_error("class Handler:\n    def handle_async(self, payload, /): ...\n")
    assert message == (
        "handler.py: Handler.handle_async() takes 'payload' as a positional-only parameter,"
        " but payload, request_id are passed by name"
    )


def test_a_method_without_self_is_rejected() -> None:
    message = static_error("class Handler:\n    def handle_async(*, payload): ...\n")
    assert message == "handler.py: Handler.handle_async() must take self as its first parameter"


def test_a_staticmethod_that_names_self_is_rejected() -> None:
    message = static_error("class Handler:\n    @staticmethod\n    def handle_async(self, payload): ...\n")
    assert "takes parameter 'self'" in message


def test_an_async_init_is_rejected() -> None:
    message = static_error(
        "class Handler:\n    async def __init__(self):\n        pass\n    def handle_async(self): ...\n"
    )
    assert message == "handler.py: Handler.__init__() must be a plain def, not async def"


def test_a_handler_without_handle_async_or_handle_batch_is_rejected_with_what_it_defines() -> None:
    message = static_error("class Handler:\n    def __init__(self, config): ...\n    def predict(self, payload): ...\n")
    assert message == (
        "handler.py: class Handler must define handle_async(self, payload, request_id)"
        " or handle_batch(self, payloads, request_ids) (it defines predict)"
    )


def test_a_handler_class_inside_an_if_block_is_still_checked() -> None:
    message = static_error(
        "import os\nif os.environ.get('GPU'):\n    class Handler:\n        def handle_async(self, x): ...\n"
        "else:\n    class Handler:\n        def handle_async(self, payload): ...\n"
    )
    assert "takes parameter 'x'" in message


def test_the_file_name_given_is_the_one_in_the_message() -> None:
    with pytest.raises(HandlerDefinitionError, match=r"^src/api/handler\.py: no class named Handler"):
        check_handler_source("x = 1\n", "src/api/handler.py")


# --- load_handler_class ------------------------------------------------------------------------------------------


def test_loading_returns_the_handler_class_of_a_fresh_module_named_after_the_file(tmp_path: Path) -> None:
    handler_class = load(tmp_path, REFERENCE_HANDLER)
    assert handler_class.__name__ == "Handler"
    assert handler_class.__module__ == "handler"
    assert sys.modules["handler"].Handler is handler_class
    assert sys.path[0] == str(tmp_path)


def test_loading_again_runs_the_file_again(tmp_path: Path) -> None:
    first = load(tmp_path, REFERENCE_HANDLER)
    second = load(tmp_path, REFERENCE_HANDLER)
    assert first is not second
    assert sys.modules["handler"].Handler is second


def test_the_handler_can_import_its_sibling_modules_from_the_python_path(tmp_path: Path) -> None:
    write(tmp_path, "VALUE = 42\n", "sibling_helpers.py")
    handler_class = load(
        tmp_path,
        """
        import sibling_helpers

        class Handler:
            def handle_async(self):
                return {"value": sibling_helpers.VALUE}
        """,
    )
    assert HandlerInstance.create(handler_class, None, None).call_sync(None, "id") == {"value": 42}


def test_a_handler_in_a_package_folder_can_use_relative_imports(tmp_path: Path) -> None:
    write(tmp_path, "", "pkg_for_test/__init__.py")
    write(tmp_path, "VALUE = 7\n", "pkg_for_test/helpers.py")
    handler_file = write(
        tmp_path,
        """
        from . import helpers

        class Handler:
            def handle_async(self):
                return {"value": helpers.VALUE}
        """,
        "pkg_for_test/handler.py",
    )
    handler_class = load_handler_class(handler_file, tmp_path)
    assert handler_class.__module__ == "pkg_for_test.handler"
    assert sys.modules["pkg_for_test"].handler is sys.modules["pkg_for_test.handler"]
    assert HandlerInstance.create(handler_class, None, None).call_sync(None, "id") == {"value": 7}


def test_a_handler_in_a_folder_without_init_is_named_as_a_namespace_package_module(tmp_path: Path) -> None:
    handler_file = write(tmp_path, "class Handler:\n    def handle_async(self): ...\n", "ns_for_test/handler.py")
    assert load_handler_class(handler_file, tmp_path).__module__ == "ns_for_test.handler"


@pytest.mark.parametrize("folder", ["my-api", "json"])
def test_a_handler_in_a_folder_that_is_not_importable_as_a_package_is_named_after_the_file(
    folder: str, tmp_path: Path
) -> None:
    handler_file = write(tmp_path, "class Handler:\n    def handle_async(self): ...\n", f"{folder}/handler.py")
    assert load_handler_class(handler_file, tmp_path).__module__ == "handler"
    assert sys.modules["json"] is json


def test_a_syntax_error_in_a_module_the_handler_imports_propagates_unchanged(tmp_path: Path) -> None:
    write(tmp_path, "def broken(:\n", "broken_sibling.py")
    with pytest.raises(SyntaxError):
        load(tmp_path, "import broken_sibling\n")


def test_objects_of_classes_from_the_handler_module_can_be_pickled(tmp_path: Path) -> None:
    load(
        tmp_path,
        """
        class Point:
            def __init__(self, x):
                self.x = x

        class Handler:
            def handle_async(self, payload):
                return {}
        """,
    )
    point = sys.modules["handler"].Point(3)
    assert pickle.loads(pickle.dumps(point)).x == 3


def test_a_handler_file_named_like_an_imported_module_does_not_replace_it(tmp_path: Path) -> None:
    handler_class = load(tmp_path, "class Handler:\n    def handle_async(self): ...\n", "json.py")
    assert sys.modules["json"] is json
    assert handler_class.__module__ != "json"


def test_an_exception_in_the_module_top_level_code_propagates_unchanged(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="MODEL_PATH"):
        load(tmp_path, "import os\nos.environ['MODEL_PATH']\nclass Handler:\n    pass\n")
    assert "handler" not in sys.modules


def test_an_import_error_in_the_module_propagates_unchanged(tmp_path: Path) -> None:
    with pytest.raises(ModuleNotFoundError, match="no_such_module_here"):
        load(tmp_path, "import no_such_module_here\n")


def test_a_syntax_error_at_load_time_names_the_file_and_the_line(tmp_path: Path) -> None:
    message = runtime_error(tmp_path, "x = 1\nclass Handler(:\n    pass\n")
    assert message.startswith("handler.py, line 2: invalid Python: ")


def test_a_missing_handler_file_is_a_definition_error(tmp_path: Path) -> None:
    with pytest.raises(HandlerDefinitionError, match="handler file not found"):
        load_handler_class(tmp_path / "handler.py", tmp_path)


def test_messages_name_the_file_by_its_path_when_no_display_name_is_given(tmp_path: Path) -> None:
    path = write(tmp_path, "x = 1\n")
    with pytest.raises(HandlerDefinitionError) as caught:
        load_handler_class(path, tmp_path)
    assert str(caught.value).startswith(f"{path}: no class named Handler found")


def test_the_handle_typo_gets_the_same_hint_at_load_time(tmp_path: Path) -> None:
    message = runtime_error(tmp_path, "class Handle:\n    def handle_async(self, payload): ...\n")
    assert message.endswith("(found class 'Handle': rename it to Handler)")


def test_a_handler_that_is_not_a_class_is_rejected(tmp_path: Path) -> None:
    assert runtime_error(tmp_path, "Handler = 3\n") == "handler.py: Handler must be a class, but it is int"


def test_a_handle_async_that_is_not_callable_is_rejected(tmp_path: Path) -> None:
    message = runtime_error(tmp_path, "class Handler:\n    handle_async = None\n")
    assert message == "handler.py: Handler.handle_async must be a method, but it is None"


def test_a_dynamically_built_handler_with_a_bad_signature_is_caught_at_load_time(tmp_path: Path) -> None:
    message = runtime_error(tmp_path, "Handler = type('Handler', (), {'handle_async': lambda self, foo: {}})\n")
    assert (
        message == "handler.py: Handler.handle_async() takes parameter 'foo', but only payload, request_id may be given"
    )


def test_an_inherited_bad_signature_is_caught_at_load_time(tmp_path: Path) -> None:
    write(tmp_path, "class Base:\n    def handle_async(self, payload, context): ...\n", "base_for_test.py")
    message = runtime_error(tmp_path, "from base_for_test import Base\nclass Handler(Base):\n    pass\n")
    assert "takes parameter 'context'" in message


def test_an_inherited_good_handle_async_is_accepted(tmp_path: Path) -> None:
    write(tmp_path, "class Base:\n    def handle_async(self, payload):\n        return {'p': payload}\n", "base_ok.py")
    handler_class = load(tmp_path, "from base_ok import Base\nclass Handler(Base):\n    pass\n")
    assert HandlerInstance.create(handler_class, None, None).call_sync(1, "id") == {"p": 1}


def test_an_imported_handler_class_is_checked_at_load_time(tmp_path: Path) -> None:
    write(tmp_path, "class Handler:\n    def __init__(self, cfg): ...\n    def handle_async(self): ...\n", "impl_x.py")
    message = runtime_error(tmp_path, "from impl_x import Handler\n")
    assert (
        message == "handler.py: Handler.__init__() takes parameter 'cfg', but only config, metrics_client may be given"
    )


def test_a_class_without_a_python_init_is_accepted_at_load_time(tmp_path: Path) -> None:
    handler_class = load(
        tmp_path, "class Handler(dict):\n    def handle_async(self):\n        return {'n': len(self)}\n"
    )
    assert HandlerInstance.create(handler_class, {"a": 1}, None).call_sync(None, "id") == {"n": 0}


BAD_SOURCES = [
    pytest.param("class Handler:\n    def handle_async(self, payload, foo): ...\n", id="unknown-param"),
    pytest.param("class Handler:\n    def handle_async(self, *, data): ...\n", id="keyword-only"),
    pytest.param("class Handler:\n    def handle_async(self, payload, /): ...\n", id="positional-only"),
    pytest.param("class Handler:\n    def handle_async(*, payload): ...\n", id="no-self"),
    pytest.param("class Handler:\n    @staticmethod\n    def handle_async(self): ...\n", id="static-self"),
    pytest.param("class Handler:\n    @classmethod\n    def handle_async(cls, x): ...\n", id="classmethod"),
    pytest.param(
        "class Handler:\n    def __init__(self, config, cfg): ...\n    def handle_async(self): ...\n", id="init"
    ),
    pytest.param(
        "class Handler:\n    async def __init__(self): ...\n    def handle_async(self): ...\n", id="async-init"
    ),
    pytest.param("class Handler:\n    def handle_batch(self, payloads, ids): ...\n", id="batch"),
    pytest.param("class Handler:\n    def predict(self): ...\n", id="no-method"),
    pytest.param("class Handle:\n    def handle_async(self): ...\n", id="typo"),
]


@pytest.mark.parametrize("source", BAD_SOURCES)
def test_the_static_and_the_runtime_check_give_the_same_message(source: str, tmp_path: Path) -> None:
    assert runtime_error(tmp_path, source) == static_error(source)


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


# --- decode_payload: JSON ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        'application/json; charset="UTF-8"',
        "Application/JSON; Charset=UTF-8",
        "APPLICATION/JSON",
        "application/json ; charset = utf-8",
        "application/json;",
    ],
)
def test_json_payload_is_parsed_whatever_the_case_and_parameters(content_type: str) -> None:
    assert decode_payload(content_type, b'{"key": "value"}') == {"key": "value"}


@pytest.mark.parametrize(("body", "expected"), [(b"[1, 2]", [1, 2]), (b'"s"', "s"), (b"3.5", 3.5), (b"null", None)])
def test_json_payload_may_be_any_json_value(body: bytes, expected: Any) -> None:
    assert decode_payload("application/json", body) == expected


def test_json_payload_keeps_big_integers_exactly() -> None:
    value = decode_payload("application/json", b'{"n": 18446744073709551617}')
    assert value == {"n": 2**64 + 1}
    assert isinstance(value["n"], int)


def test_json_payload_keeps_key_order() -> None:
    assert list(decode_payload("application/json", b'{"z": 1, "a": 2, "m": 3}')) == ["z", "a", "m"]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_json_payload_with_nan_or_infinity_is_rejected(constant: str) -> None:
    with pytest.raises(PayloadError) as caught:
        decode_payload("application/json", f'{{"x": {constant}}}'.encode())
    assert str(caught.value) == f"body is not valid JSON: {constant} is not allowed in JSON"


def test_invalid_json_payload_is_rejected_with_its_position() -> None:
    with pytest.raises(PayloadError) as caught:
        decode_payload("application/json", b"not json")
    assert str(caught.value) == "body is not valid JSON: Expecting value at line 1 column 1 (char 0)"


def test_truncated_json_payload_is_rejected_with_its_position() -> None:
    with pytest.raises(PayloadError) as caught:
        decode_payload("application/json", b'{"a": 1,\n "b": ')
    assert str(caught.value) == "body is not valid JSON: Expecting value at line 2 column 7 (char 15)"


def test_empty_json_payload_is_rejected() -> None:
    with pytest.raises(PayloadError) as caught:
        decode_payload("application/json", b"")
    assert str(caught.value) == "body is empty, but Content-Type is application/json"


def test_json_payload_with_a_utf8_bom_is_accepted() -> None:
    assert decode_payload("application/json", b'\xef\xbb\xbf{"a": "\xc3\xa9"}') == {"a": "é"}


def test_json_payload_is_decoded_with_its_charset() -> None:
    body = '{"a": "é"}'.encode("utf-16")
    assert decode_payload("application/json; charset=utf-16", body) == {"a": "é"}
    assert decode_payload("application/json; charset=latin-1", b'{"a": "\xe9"}') == {"a": "é"}


def test_json_payload_that_is_not_utf8_is_rejected_with_the_byte_position() -> None:
    with pytest.raises(PayloadError) as caught:
        decode_payload("application/json", b'{"a": "\xe9"}')
    assert str(caught.value) == (
        "JSON body is not valid utf-8: cannot decode byte 0xe9 at position 7 (invalid continuation byte)"
    )


def test_json_payload_with_an_unknown_charset_is_rejected() -> None:
    with pytest.raises(PayloadError, match=r"^unknown charset 'klingon'$"):
        decode_payload("application/json; charset=klingon", b"{}")


def test_json_payload_nested_too_deeply_is_rejected() -> None:
    with pytest.raises(PayloadError) as caught:
        decode_payload("application/json", b"[" * 100_000 + b"]" * 100_000)
    assert str(caught.value) == "body refused: the JSON is nested more than 512 levels deep; the limit is 512 levels"


def test_json_payload_with_an_integer_past_the_digit_limit_is_rejected() -> None:
    with pytest.raises(PayloadError) as caught:
        decode_payload("application/json", b"1" * 5000)
    assert str(caught.value) == "body refused: a JSON number (at char 0) has more than 4300 digits; the limit is 4300"


# --- decode_payload: text ----------------------------------------------------------------------------------------


def test_text_payload_is_decoded_as_utf8_by_default() -> None:
    assert decode_payload("text/plain", "héllo wörld".encode()) == "héllo wörld"


def test_text_payload_is_decoded_with_its_charset() -> None:
    assert decode_payload("TEXT/plain;charset=latin-1", b"caf\xe9") == "café"
    assert decode_payload('text/plain; charset="ISO-8859-1"', b"caf\xe9") == "café"
    assert decode_payload("text/plain; format=flowed; charset=utf-16-le", "hi".encode("utf-16-le")) == "hi"


def test_text_payload_charset_may_be_quoted_and_spaced() -> None:
    assert decode_payload('Text/Plain ;  Charset = "UTF-8"', "é".encode()) == "é"


def test_text_payload_with_charset_us_ascii_rejects_a_non_ascii_byte() -> None:
    with pytest.raises(PayloadError) as caught:
        decode_payload("text/plain; charset=us-ascii", b"caf\xe9")
    assert (
        str(caught.value)
        == "body is not valid us-ascii: cannot decode byte 0xe9 at position 3 (ordinal not in range(128))"
    )


def test_text_payload_that_is_not_utf8_is_rejected_with_the_byte_position() -> None:
    with pytest.raises(PayloadError) as caught:
        decode_payload("text/plain", b"ok \xff")
    assert str(caught.value) == "body is not valid utf-8: cannot decode byte 0xff at position 3 (invalid start byte)"


@pytest.mark.parametrize("charset", ["klingon", "base64", "rot13"])
def test_text_payload_with_an_unknown_charset_is_rejected(charset: str) -> None:
    with pytest.raises(PayloadError) as caught:
        decode_payload(f"text/plain; charset={charset}", b"hello")
    assert str(caught.value) == f"unknown charset '{charset}'"


def test_empty_text_payload_is_an_empty_string() -> None:
    assert decode_payload("text/plain", b"") == ""


# --- decode_payload: everything else -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/octet-stream",
        "",
        None,
        "   ",
        "image/png",
        "text/html; charset=utf-8",
        "application/jsonx",
        "application/vnd.api+json",
        "not a media type",
    ],
)
def test_other_or_missing_content_types_give_the_raw_bytes(content_type: str | None) -> None:
    body = b"\x00\xff\xfe{not json"
    assert decode_payload(content_type, body) is body


def test_validate_payload_accepts_what_decode_payload_accepts() -> None:
    validate_payload("application/json", b"{}")
    validate_payload("application/octet-stream", b"\xff")
    validate_payload("text/plain", b"hi")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b"{"),
        ("application/json", b""),
        ("text/plain; charset=ascii", b"\xe9"),
        ("text/plain; charset=x", b""),
    ],
)
def test_validate_payload_rejects_exactly_what_decode_payload_rejects(content_type: str, body: bytes) -> None:
    with pytest.raises(PayloadError) as from_decode:
        decode_payload(content_type, body)
    with pytest.raises(PayloadError) as from_validate:
        validate_payload(content_type, body)
    assert str(from_validate.value) == str(from_decode.value)


# --- encode_result -----------------------------------------------------------------------------------------------


def test_a_dict_result_is_encoded_as_compact_utf8_json() -> None:
    assert encode_result({"a": 1, "b": [1, 2.5, None, True], "s": "café"}) == (
        '{"a":1,"b":[1,2.5,null,true],"s":"café"}'.encode()
    )


def test_a_result_keeps_its_key_order() -> None:
    assert encode_result({"z": 1, "a": 2, "m": {"y": 1, "b": 2}}) == b'{"z":1,"a":2,"m":{"y":1,"b":2}}'


def test_a_result_keeps_big_integers_exactly() -> None:
    assert encode_result({"n": 2**64 + 1}) == b'{"n":18446744073709551617}'


def test_a_result_keeps_integers_past_pythons_digit_limit() -> None:
    # str() refuses integers past 4300 digits; a result may still hold one, and must keep it exactly.
    huge = 10**5000
    encoded = encode_result({"n": huge, "neg": -huge - 1, "list": [1, 3**10000], "keyed": {huge: "k"}, "s": "x"})
    assert encoded.startswith(b'{"n":1' + b"0" * 5000 + b',"neg":-1' + b"0" * 4999 + b'1,"list":[1,')
    assert encoded.endswith(b'],"keyed":{"1' + b"0" * 5000 + b'":"k"},"s":"x"}')
    value = loads_json(encoded)
    assert value["n"] == huge and value["neg"] == -huge - 1 and value["list"] == [1, 3**10000]


def test_a_result_with_a_huge_integer_and_a_lone_surrogate_keeps_both() -> None:
    encoded = encode_result({"s": "\ud800", "n": -(10**4400)})
    assert encoded == b'{"s":"\\ud800","n":-1' + b"0" * 4400 + b"}"


def test_a_string_that_looks_like_the_big_integer_marker_stays_a_string() -> None:
    lookalike = "\x000123456789abcdef:0\x00"
    encoded = encode_result({"n": 10**5000, "s": lookalike})
    assert loads_json(encoded)["s"] == lookalike


def test_a_circular_result_holding_a_huge_integer_still_says_it_is_circular() -> None:
    value: dict[str, Any] = {"n": 10**5000}
    value["self"] = value
    with pytest.raises(InvalidResultError) as caught:
        encode_result(value)
    assert str(caught.value) == (
        "handle_async returned a result that contains itself at result['self']; JSON cannot encode a circular reference"
    )


@pytest.mark.parametrize(
    "number",
    [0, -1, 7, 10**600, -(10**640) + 3, 10**4300, 2**20000 + 1, -(3**30000)],
    ids=["0", "-1", "7", "10^600", "-10^640+3", "10^4300", "2^20000+1", "-3^30000"],
)
def test_integers_convert_to_and_from_decimal_text_at_any_size(number: int) -> None:
    text = int_to_decimal(number)
    assert decimal_to_int(text) == number
    assert json.loads(dumps_json({"n": number}), parse_int=decimal_to_int) == {"n": number}
    if abs(number) < 10**4000:
        assert text == str(number)


def test_big_integers_round_trip_through_decode_and_encode() -> None:
    value = decode_payload("application/json", b'{"n":18446744073709551617,"m":-18446744073709551617}')
    assert encode_result(value) == b'{"n":18446744073709551617,"m":-18446744073709551617}'


def test_a_result_with_a_lone_surrogate_is_kept_as_an_escape() -> None:
    value = decode_payload("application/json", b'{"s": "\\ud800"}')
    encoded = encode_result(value)
    assert encoded == b'{"s":"\\ud800"}'
    assert json.loads(encoded) == value


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ([1], "list"),
        (None, "None"),
        ("text", "str"),
        (3, "int"),
        ((1,), "tuple"),
        (datetime.date(2024, 1, 1), "datetime.date"),
    ],
)
def test_a_result_that_is_not_a_dict_names_the_type_that_came_back(value: Any, name: str) -> None:
    with pytest.raises(InvalidResultError) as caught:
        encode_result(value)
    assert str(caught.value) == (
        f"handle_async must return a dict (or bytes, a pathlib.Path or a cortado.Result), but returned {name}"
    )


@pytest.mark.parametrize(
    ("value", "shown", "path"),
    [
        ({"x": float("nan")}, "nan", "result['x']"),
        ({"x": [1, float("inf")]}, "inf", "result['x'][1]"),
        ({"a": {"b": -float("inf")}}, "-inf", "result['a']['b']"),
    ],
)
def test_a_result_with_nan_or_infinity_says_they_are_not_valid_json(value: Any, shown: str, path: str) -> None:
    with pytest.raises(InvalidResultError) as caught:
        encode_result(value)
    assert str(caught.value) == f"handle_async returned {shown} at {path}, but NaN and Infinity are not valid JSON"


def test_a_result_with_an_unserialisable_value_names_its_type_and_place() -> None:
    with pytest.raises(InvalidResultError) as caught:
        encode_result({"ok": 1, "when": [datetime.datetime(2024, 1, 1)]})
    assert str(caught.value) == (
        "handle_async returned a value of type datetime.datetime at result['when'][0], which is not JSON-serialisable"
    )


def test_a_result_with_a_set_names_the_set_type() -> None:
    with pytest.raises(InvalidResultError, match=r"a value of type set at result\['tags'\]"):
        encode_result({"tags": {"a"}})


def test_a_result_with_a_non_string_key_names_the_key_type() -> None:
    with pytest.raises(InvalidResultError) as caught:
        encode_result({"a": {(1, 2): "x"}})
    assert str(caught.value) == (
        "handle_async returned a key of type tuple at result['a'][(1, 2)], but JSON object keys must be strings"
    )


def test_a_result_that_contains_itself_is_rejected() -> None:
    value: dict[str, Any] = {"a": []}
    value["a"].append(value)
    with pytest.raises(InvalidResultError) as caught:
        encode_result(value)
    assert str(caught.value) == (
        "handle_async returned a result that contains itself at result['a'][0]; JSON cannot encode a circular reference"
    )


def test_a_result_nested_too_deeply_is_rejected() -> None:
    value: dict[str, Any] = {}
    inner = value
    for _ in range(100_000):
        inner["x"] = {}
        inner = inner["x"]
    with pytest.raises(InvalidResultError, match="nested too deeply"):
        encode_result(value)


def test_a_batch_item_result_message_names_the_item() -> None:
    with pytest.raises(InvalidResultError) as caught:
        encode_result([1], method="handle_batch", index=2)
    assert str(caught.value) == (
        "handle_batch must return a list of dicts (or bytes, paths or cortado.Result), but item 2 is list"
    )
    with pytest.raises(InvalidResultError) as caught:
        encode_result({"x": float("nan")}, method="handle_batch", index=0)
    assert str(caught.value) == "handle_batch returned nan at result[0]['x'], but NaN and Infinity are not valid JSON"


def test_a_batch_result_must_be_a_list_with_one_result_per_payload() -> None:
    assert split_batch_result(({"a": 1}, {"b": 2}), 2) == [{"a": 1}, {"b": 2}]
    with pytest.raises(InvalidResultError) as caught:
        split_batch_result({"a": 1}, 1)
    assert str(caught.value) == "handle_batch must return a list with one result per payload, but returned dict"
    with pytest.raises(InvalidResultError) as caught:
        split_batch_result([{}], 3)
    assert str(caught.value) == "handle_batch must return a list with one result per payload (3), but returned 1"


# --- describe_exception ------------------------------------------------------------------------------------------


class Outer:
    class InnerError(Exception):
        pass


def test_an_exception_is_described_by_its_qualified_name_and_message() -> None:
    assert describe_exception(ValueError("bad input")) == ("ValueError", "bad input")
    assert describe_exception(Outer.InnerError("deep")) == ("Outer.InnerError", "deep")


def test_an_exception_without_a_message_is_described_by_its_repr() -> None:
    assert describe_exception(RuntimeError()) == ("RuntimeError", "RuntimeError()")


def test_an_exception_whose_str_fails_is_still_described() -> None:
    class BrokenError(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    kind, message = describe_exception(BrokenError())
    assert kind.endswith("BrokenError")
    assert "could not be read" in message


# --- handler.type tensorflow -----------------------------------------------------------------------------------------


def test_a_tensorflow_handler_must_take_tensorflow_client_and_may_take_config_and_metrics_client() -> None:
    check_handler_source(
        "class Handler:\n    def __init__(self, tensorflow_client, config, metrics_client): pass\n"
        "    def handle_async(self, payload): pass\n",
        "handler.py",
        "tensorflow",
    )
    check_handler_source(
        "class Handler:\n    def __init__(self, **kwargs): pass\n    def handle_async(self, payload): pass\n",
        "handler.py",
        "tensorflow",
    )
    for source in (
        "class Handler:\n    def __init__(self, config): pass\n    def handle_async(self, payload): pass\n",
        "class Handler:\n    def handle_async(self, payload): pass\n",
    ):
        with pytest.raises(HandlerDefinitionError) as caught:
            check_handler_source(source, "handler.py", "tensorflow")
        assert str(caught.value) == (
            "handler.py: Handler.__init__() must take tensorflow_client: a handler of type tensorflow is given the "
            "client that runs its models (def __init__(self, tensorflow_client, config))"
        )


def test_a_python_handler_may_not_take_tensorflow_client() -> None:
    with pytest.raises(HandlerDefinitionError, match="takes parameter 'tensorflow_client', but only config"):
        check_handler_source(
            "class Handler:\n    def __init__(self, tensorflow_client): pass\n    def handle_async(self, p): pass\n",
            "handler.py",
        )


def test_a_tensorflow_handler_is_constructed_with_its_client_by_name() -> None:
    class Handler:
        def __init__(self, config: dict[str, Any], tensorflow_client: object) -> None:
            self.client, self.config = tensorflow_client, config

        def handle_async(self, payload: Any) -> Any:
            return payload

    client = object()
    made = HandlerInstance.create(Handler, {"a": 1}, None, client).handler
    assert (made.client, made.config) == (client, {"a": 1})
