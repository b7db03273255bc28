"""Tests of cortado.project.api: an API's name, kind, endpoint, webhook, chaining and update_strategy."""

from __future__ import annotations

import pytest

from cortado.project.config import parse_config
from cortado.project.errors import ConfigError
from cortado.webhooks import UrlPolicy
from tests.unit.projectsamples import MINIMAL, config_error, with_api


def test_a_relative_endpoint_gets_a_leading_slash() -> None:
    [api] = parse_config(with_api("  networking:\n    endpoint: echo-v1/\n"), "cortado.yaml").apis
    assert api.endpoint == "/echo-v1"


def test_an_endpoint_of_several_path_segments_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"networking.endpoint must be a single path segment such as /my-api"):
        parse_config(with_api("  networking:\n    endpoint: /v1/echo\n"), "cortado.yaml")


def test_an_api_has_no_webhook_unless_its_configuration_names_one() -> None:
    [api] = parse_config(MINIMAL, "cortado.yaml").apis
    assert api.webhook_url == ""
    [api] = parse_config(with_api("  webhook:\n    url: null\n"), "cortado.yaml").apis
    assert api.webhook_url == ""


def test_webhook_url_is_kept_normalised() -> None:
    text = with_api("  webhook:\n    url: HTTPS://Hooks.Example.COM:443/cortado?team=ml#top\n")
    [api] = parse_config(text, "cortado.yaml").apis
    assert api.webhook_url == "https://hooks.example.com/cortado?team=ml"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://hooks.example.com/", "must start with http:// or https://"),
        ("hooks.example.com/x", "must start with http:// or https://"),
        ("''", "must start with http:// or https://"),
        ("http://169.254.169.254/latest/meta-data/", "link-local address"),
        ("http://metadata.google.internal/", "cloud metadata service"),
        ("http://ingest:50051/", "a service of the mesh itself"),
        ("http://api-other/", "an API of the mesh itself"),
        ("http://127.0.0.1:8888/iris", "a port of the mesh itself"),
    ],
)
def test_a_webhook_url_the_policy_refuses_fails_the_deploy_naming_the_key(url: str, message: str) -> None:
    error = config_error(with_api(f"  webhook:\n    url: {url}\n"))
    assert error.startswith("cortado.yaml: api 'echo': webhook.url is refused: webhook URL")
    assert message in error


def test_the_operators_policy_decides_where_a_webhook_may_go(monkeypatch: pytest.MonkeyPatch) -> None:
    text = with_api("  webhook:\n    url: http://10.0.0.7:8888/hook\n")
    assert parse_config(text, "cortado.yaml").apis[0].webhook_url == "http://10.0.0.7:8888/hook"
    refusing = UrlPolicy.of(mesh_hosts=["hooks"], mesh_ports=[8888])
    with pytest.raises(ConfigError, match=r"webhook\.url is refused: webhook URL host hooks is a service of the mesh"):
        parse_config(with_api("  webhook:\n    url: http://hooks/\n"), "cortado.yaml", refusing)
    # Without a policy given, the CORTADO_WEBHOOK_* settings make it.
    monkeypatch.setenv("CORTADO_WEBHOOK_ALLOW_HOSTS", "169.254.169.254")
    text = with_api("  webhook:\n    url: http://169.254.169.254/\n")
    assert parse_config(text, "cortado.yaml").apis[0].webhook_url == "http://169.254.169.254/"
    monkeypatch.setenv("CORTADO_WEBHOOK_MESH_PORTS", "nope")
    assert "webhook.url cannot be checked: CORTADO_WEBHOOK_MESH_PORTS" in config_error(text)


def test_webhook_takes_only_url() -> None:
    assert "webhook.uri is not a known key (did you mean webhook.url?)" in config_error(
        with_api("  webhook:\n    uri: https://hooks.example.com/\n")
    )
    assert "webhook.url must be a string (got an integer, 5)" in config_error(with_api("  webhook:\n    url: 5\n"))
    assert "webhook must be a mapping" in config_error(with_api("  webhook: https://hooks.example.com/\n"))


@pytest.mark.parametrize(
    ("name", "shown"),
    [("Iris", "'Iris'"), ("1iris", "'1iris'"), ("iris-", "'iris-'"), ("ir_is", "'ir_is'"), ("a" * 43, "'aaa")],
)
def test_a_name_that_is_not_a_dns_1035_label_is_refused(name: str, shown: str) -> None:
    message = config_error(MINIMAL.replace("name: echo", f"name: {name}"))
    assert message.startswith("cortado.yaml: api at index 0: name must be a DNS-1035 label: lower-case letters")
    assert "starting with a letter" in message
    assert "at most 42 characters" in message
    assert f"(got {shown}" in message


def test_a_name_of_42_characters_is_accepted() -> None:
    name = "a" + "-b" * 20 + "c"
    assert len(name) == 42
    [api] = parse_config(MINIMAL.replace("name: echo", f"name: {name}"), "cortado.yaml").apis
    assert api.name == name


def test_a_missing_name_names_the_list_index() -> None:
    text = MINIMAL + MINIMAL.replace("- name: echo\n  kind", "- kind")
    assert config_error(text) == "cortado.yaml: api at index 1: name is required"


def test_a_missing_kind_is_refused() -> None:
    assert config_error(MINIMAL.replace("  kind: AsyncAPI\n", "")) == (
        "cortado.yaml: api 'echo': kind is required and must be AsyncAPI"
    )


def test_other_cortex_kinds_are_refused_saying_only_asyncapi_is_supported() -> None:
    message = config_error(MINIMAL.replace("AsyncAPI", "RealtimeAPI"), "cortex.yaml")
    assert message == "cortex.yaml: api 'echo': kind is RealtimeAPI, but Cortado only supports AsyncAPI"


def test_update_strategy_is_accepted_with_a_notice() -> None:
    text = with_api("  update_strategy:\n    max_surge: 1\n    max_unavailable: 25%\n")
    assert parse_config(text, "cortado.yaml").notices == [
        "cortado.yaml: api 'echo': `update_strategy` only mattered to Cortex's cluster; it is ignored"
    ]


def test_chaining_allow_lists_the_apis_a_handler_may_call_sorted_once_each() -> None:
    [api] = parse_config(MINIMAL, "cortado.yaml").apis
    assert list(api.chain_allow) == []
    [api] = parse_config(with_api("  chaining:\n    allow: [text, iris, text]\n"), "cortado.yaml").apis
    assert list(api.chain_allow) == ["iris", "text"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[]", "chaining.allow must be a non-empty list of API names (got a list)"),
        ("iris", "chaining.allow must be a non-empty list of API names (got a string, 'iris')"),
        ("[Iris]", "chaining.allow must list API names (lowercase letters, digits and '-'), not a string, 'Iris'"),
        ("[3]", "chaining.allow must list API names (lowercase letters, digits and '-'), not an integer, 3"),
    ],
)
def test_a_bad_chaining_allow_fails_the_deploy_naming_the_key(value: str, message: str) -> None:
    assert config_error(with_api(f"  chaining:\n    allow: {value}\n")) == f"cortado.yaml: api 'echo': {message}"
