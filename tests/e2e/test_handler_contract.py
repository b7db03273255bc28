"""The handler contract (README, "Writing a handler" and "Inside a handler"), line by line, through the real HTTP
front door (Envoy).

One module: most of its tests share one module-scoped set of APIs, deployed together so that they start in parallel.
"""

from __future__ import annotations

import contextlib
import json
import re
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from cortado.client import SchedulerClient
from cortado.v1 import control_pb2
from tests.e2e.contracthandlers import (
    ASYNC_ECHO,
    BAD_HANDLERS,
    BIG,
    CONFIG,
    DIES_ON_REQUEST,
    INIT_CONFIG,
    INIT_RAISES,
    INIT_REVERSED,
    INIT_SELF_READS_PROJECT_FILE,
    NO_INIT,
    VALUES,
)
from tests.helpers import eventually, unique_name, write_project
from tests.meshcalls import Deploy, result, submit, wait_ready


@pytest.fixture(scope="module")
def apis(scheduler: SchedulerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The shared APIs, deployed together (their processes start in parallel); role -> API name."""
    root = tmp_path_factory.mktemp("contract")
    projects: dict[str, tuple[str, dict[str, Any] | None, dict[str, str | bytes] | None]] = {
        "no_init": (NO_INIT, None, None),
        "init_self": (INIT_SELF_READS_PROJECT_FILE, None, {"data/values.json": json.dumps(VALUES)}),
        "init_config": (INIT_CONFIG, {"handler": {"config": CONFIG}}, None),
        "init_reversed": (INIT_REVERSED, None, None),
        "echo": (ASYNC_ECHO, None, None),
    }
    names: dict[str, str] = {}
    try:
        for role, (source, api, files) in projects.items():
            name = unique_name("contract")
            scheduler.deploy(write_project(root, name, source, api, files))
            names[role] = name
        for name in names.values():
            wait_ready(scheduler, name)
        yield names
    finally:
        for name in names.values():
            with contextlib.suppress(grpc.RpcError):
                scheduler.delete(name, force=True)


def raw_result(http: httpx.Client, api: str, request_id: str) -> str:
    """The final answer's body text for a request, exactly as it came over the wire."""
    result(http, api, request_id)  # waits until it is final
    reply = http.get(f"/{api}/{request_id}")
    assert reply.status_code == 200, reply.text
    return reply.text


def run(http: httpx.Client, api: str, **request: Any) -> dict[str, Any]:
    """Submit one request and return its final state."""
    return result(http, api, submit(http, api, **request))


def completed(body: dict[str, Any]) -> dict[str, Any]:
    assert body["status"] == "completed", body
    assert "error" not in body, body
    result_value: dict[str, Any] = body["result"]
    return result_value


def failed(body: dict[str, Any]) -> dict[str, str]:
    assert body["status"] == "failed", body
    assert "result" not in body, body
    error: dict[str, str] = body["error"]
    return error


# --- constructor arguments -------------------------------------------------------------------------------------------


def test_a_handler_without_init_is_constructed_and_serves(http: httpx.Client, apis: dict[str, str]) -> None:
    assert completed(run(http, apis["no_init"], json={}))["called_with"] == "nothing"


def test_init_taking_only_self_is_called_with_no_arguments(http: httpx.Client, apis: dict[str, str]) -> None:
    assert completed(run(http, apis["init_self"], json=1))["payload"] == 1


def test_config_is_the_handler_config_from_the_yaml_with_nested_values_and_big_ints_intact(
    http: httpx.Client, apis: dict[str, str]
) -> None:
    api = apis["init_config"]
    text = raw_result(http, api, submit(http, api, json={}))
    config = json.loads(text)["result"]["config"]
    assert config == CONFIG
    assert config["big"] == BIG and isinstance(config["big"], int)
    assert str(BIG) in text
    body = json.loads(text)["result"]
    assert body["config_type"] == "dict"
    assert body["changed"]["added"] is True


def test_init_arguments_are_passed_by_name_in_any_order_and_config_defaults_to_empty(
    http: httpx.Client, apis: dict[str, str]
) -> None:
    body = completed(run(http, apis["init_reversed"], json={"x": 1}))
    assert body["config"] == {}
    assert body["metrics_client_type"] == "MetricsClient"


# --- handle_async arguments ------------------------------------------------------------------------------------------


def test_handle_async_may_take_no_arguments_at_all(http: httpx.Client, apis: dict[str, str]) -> None:
    assert completed(run(http, apis["no_init"], json={"ignored": True}))["called_with"] == "nothing"


def test_handle_async_may_take_only_the_payload(http: httpx.Client, apis: dict[str, str]) -> None:
    assert completed(run(http, apis["init_self"], json={"k": [1, 2]}))["payload"] == {"k": [1, 2]}


def test_handle_async_may_take_only_the_request_id_which_is_the_id_the_client_got(
    http: httpx.Client, apis: dict[str, str]
) -> None:
    api = apis["init_config"]
    request_id = submit(http, api, json={})
    body = result(http, api, request_id)
    assert body["id"] == request_id
    assert completed(body)["request_id"] == request_id


def test_handle_async_arguments_are_passed_by_name_in_any_order(http: httpx.Client, apis: dict[str, str]) -> None:
    api = apis["init_reversed"]
    request_id = submit(http, api, json={"sepal_length": 5.1})
    body = completed(result(http, api, request_id))
    assert body["request_id"] == request_id
    assert body["payload"] == {"sepal_length": 5.1}


def test_handle_async_may_be_an_async_def(http: httpx.Client, apis: dict[str, str]) -> None:
    api = apis["echo"]
    request_id = submit(http, api, json="hello")
    body = completed(result(http, api, request_id))
    assert body["type"] == "str" and body["value"] == "hello"
    assert body["request_id"] == request_id


# --- deploy-time checks ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(BAD_HANDLERS))
def test_a_handler_that_breaks_the_interface_is_refused_at_deploy_time_saying_why(
    case: str, scheduler: SchedulerClient, tmp_path: Path
) -> None:
    source, named = BAD_HANDLERS[case]
    name = unique_name("bad")
    project = write_project(tmp_path, name, textwrap.dedent(source))
    with pytest.raises(grpc.RpcError) as refused:
        scheduler.deploy(project)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value
    details = refused.value.details() or ""
    assert re.search(rf"\b{named}\b", details), details
    assert "handler.py" in details, details
    # Refused before changing anything: the API does not exist.
    with pytest.raises(grpc.RpcError) as missing:
        scheduler.describe(name)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


# --- payloads by Content-Type ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind"),
    [({"a": [1, 2], "b": None}, "dict"), ([1, "two", 3.5], "list"), (42, "int"), (2.5, "float"), (BIG, "int")],
    ids=["object", "array", "int", "float", "big_int"],
)
def test_an_application_json_payload_arrives_as_the_parsed_value(
    value: Any, kind: str, http: httpx.Client, apis: dict[str, str]
) -> None:
    api = apis["echo"]
    body = json.loads(raw_result(http, api, submit(http, api, json=value)))
    assert body["result"]["type"] == kind
    assert body["result"]["value"] == value


def test_a_json_media_type_compares_case_insensitively_and_may_carry_parameters(
    http: httpx.Client, apis: dict[str, str]
) -> None:
    content = json.dumps({"city": "Zürich", "n": BIG}).encode()
    headers = {"Content-Type": "Application/JSON; charset=utf-8"}
    api = apis["echo"]
    body = json.loads(raw_result(http, api, submit(http, api, content=content, headers=headers)))
    assert body["result"]["type"] == "dict"
    assert body["result"]["value"] == {"city": "Zürich", "n": BIG}


@pytest.mark.parametrize(
    ("content", "content_type", "text"),
    [
        ("héllo wörld ☕".encode(), "text/plain", "héllo wörld ☕"),
        (b"caf\xe9", "text/plain; charset=latin-1", "café"),
        (b"plain", "TEXT/PLAIN", "plain"),
        ("naïve".encode(), "Text/Plain; Charset=UTF-8", "naïve"),
    ],
    ids=["utf8_by_default", "declared_charset", "upper_case", "mixed_case_with_charset"],
)
def test_a_text_plain_payload_arrives_as_a_str_decoded_with_its_charset(
    content: bytes, content_type: str, text: str, http: httpx.Client, apis: dict[str, str]
) -> None:
    body = completed(run(http, apis["echo"], content=content, headers={"Content-Type": content_type}))
    assert body["type"] == "str"
    assert body["value"] == text


@pytest.mark.parametrize(
    "content_type",
    ["application/octet-stream", None, "image/png", "application/x-www-form-urlencoded"],
    ids=["octet_stream", "no_content_type", "image_png", "form"],
)
def test_any_other_payload_arrives_as_the_raw_bytes(
    content_type: str | None, http: httpx.Client, apis: dict[str, str]
) -> None:
    data = b"\x89PNG\r\n\x1a\n\x00\xff{not json}"
    headers = {"Content-Type": content_type} if content_type else {}
    body = completed(run(http, apis["echo"], content=data, headers=headers))
    assert body == {**body, "type": "bytes", "len": len(data), "hex": data.hex()}


# --- results ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("action", "type_name"), [("list", "list"), ("str", "str"), ("none", "None")])
def test_a_result_that_is_not_a_dict_fails_the_request_naming_the_type_that_came_back(
    action: str, type_name: str, http: httpx.Client, apis: dict[str, str]
) -> None:
    error = failed(run(http, apis["echo"], json={"action": action}))
    assert error["type"], error
    assert re.search(rf"\b{type_name}\b", error["message"]), error
    assert "dict" in error["message"], error


@pytest.mark.parametrize(("action", "named"), [("nan", "NaN"), ("infinity", "Infinity")])
def test_nan_or_infinity_in_the_result_fails_the_request_with_a_clear_error(
    action: str, named: str, http: httpx.Client, apis: dict[str, str]
) -> None:
    error = failed(run(http, apis["echo"], json={"action": action}))
    assert error["type"], error
    assert named in error["message"], error
    assert "JSON" in error["message"], error


def test_the_result_keeps_the_handlers_key_order(http: httpx.Client, apis: dict[str, str]) -> None:
    api = apis["echo"]
    text = raw_result(http, api, submit(http, api, json={"action": "ordered"}))
    assert re.search(r'"result"\s*:\s*\{\s*"z"\s*:\s*1\s*,\s*"a"\s*:\s*2\s*,\s*"m"\s*:\s*3\s*\}', text), text
    assert list(json.loads(text)["result"]) == ["z", "a", "m"]


def test_the_result_keeps_integers_above_2_to_the_53_exactly(http: httpx.Client, apis: dict[str, str]) -> None:
    api = apis["echo"]
    text = raw_result(http, api, submit(http, api, json={"action": "big"}))
    assert json.loads(text)["result"] == {"big": BIG, "negative": -(2**64) - 1, "edge": 2**53 + 1}
    for number in (str(BIG), str(-(2**64) - 1), str(2**53 + 1)):
        assert number in text, text


# --- failures --------------------------------------------------------------------------------------------------------


def test_an_exception_in_handle_async_fails_only_that_request_and_the_api_keeps_serving(
    http: httpx.Client, apis: dict[str, str]
) -> None:
    api = apis["echo"]
    error = failed(run(http, api, json={"action": "raise", "message": "bad input: 42"}))
    assert error == {"type": "ModelError", "message": "bad input: 42"}
    assert completed(run(http, api, json={"still": "serving"}))["value"] == {"still": "serving"}


def test_an_exception_in_init_fails_the_api_with_its_traceback_and_is_not_retried_in_a_tight_loop(
    deploy: Deploy, scheduler: SchedulerClient, tmp_path: Path
) -> None:
    attempts_file = tmp_path / "attempts.log"
    name = deploy(INIT_RAISES, api={"handler": {"config": {"attempts_file": str(attempts_file)}}}, wait=False)

    def failed_state() -> control_pb2.ApiStatus | None:
        status = scheduler.describe(name)
        return status if status.state == control_pb2.API_STATE_FAILED else None

    status = eventually(failed_state, timeout=60, what=f"API {name} failed")
    assert "Traceback" in status.message, status.message
    assert "RuntimeError: the model weights are missing" in status.message, status.message
    assert status.ready_replicas == 0

    def attempts() -> int:
        return len(attempts_file.read_text().splitlines()) if attempts_file.exists() else 0

    assert attempts() == 1
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # watching for a retry: nothing may happen in this window
        assert attempts() == 1, "__init__ was retried at once"
        time.sleep(0.2)
    assert scheduler.describe(name).state == control_pb2.API_STATE_FAILED


def test_the_working_directory_is_the_project_root(http: httpx.Client, apis: dict[str, str]) -> None:
    body = completed(run(http, apis["init_self"], json={}))
    assert body["values"] == VALUES
    assert body["cwd_holds_handler"] is True


def test_a_handler_process_that_dies_takes_neither_the_executor_nor_other_apis_down(
    http: httpx.Client, apis: dict[str, str], deploy: Deploy, tmp_path: Path
) -> None:
    last_words = tmp_path / "last_words.log"
    api = deploy(DIES_ON_REQUEST, api={"handler": {"config": {"last_words": str(last_words)}}})
    first_pid = completed(run(http, api, json={}))["pid"]
    other = apis["no_init"]
    other_pid = completed(run(http, other, json={}))["pid"]
    assert other_pid != first_pid  # each API runs in its own process

    submit(http, api, json={"die": True})
    # Not waiting on the doomed request itself (it is redelivered only after the ack wait): only on its handler dying.
    eventually(lambda: last_words.exists() and last_words.read_text().split(), timeout=30, what="the handler died")
    assert last_words.read_text().split() == [str(first_pid)]

    assert completed(run(http, other, json={}))["pid"] == other_pid
    assert completed(run(http, apis["echo"], json=7))["value"] == 7
    restarted = completed(run(http, api, json={}))["pid"]
    assert restarted != first_pid
