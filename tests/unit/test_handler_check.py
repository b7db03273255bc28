"""The deploy-time check of a handler file (cortado.runtime.handlercheck): the allowed names, what passes, what
fails and its messages, and the rules for handler.type tensorflow."""

from __future__ import annotations

import textwrap

import pytest

from cortado.runtime.errors import HandlerDefinitionError
from cortado.runtime.handlercheck import check_handler_source
from cortado.runtime.rules import ALLOWED_BATCH_PARAMS, ALLOWED_HANDLE_PARAMS, ALLOWED_INIT_PARAMS
from tests.unit.handlerfiles import REFERENCE_HANDLER, static_error

# --- the allowed names ------------------------------------------------------------------------------------------------


def test_the_allowed_parameter_names_are_those_of_the_reference_interface() -> None:
    assert ALLOWED_INIT_PARAMS == ("config", "metrics_client")
    assert ALLOWED_HANDLE_PARAMS == ("payload", "request_id")
    assert ALLOWED_BATCH_PARAMS == ("payloads", "request_ids")


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
