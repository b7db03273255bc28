"""Loading a handler file (cortado.runtime.loading): the module it becomes, what propagates, and the load-time
check, which words its messages as the deploy-time check does."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import pytest

from cortado.runtime.calling import HandlerInstance
from cortado.runtime.errors import HandlerDefinitionError
from cortado.runtime.loading import load_handler_class
from tests.unit.handlerfiles import (
    REFERENCE_HANDLER,
    isolated_imports,  # noqa: F401  (autouse: loaded handlers leave sys.path and sys.modules as they were)
    load,
    runtime_error,
    static_error,
    write,
)

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
