"""Tests of cortado.project.yamlload: the YAML loader, its size limit and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

from cortado.project.config import parse_config
from cortado.project.yamlload import MAX_CONFIG_EXPANDED_BYTES
from tests.unit.projectsamples import MINIMAL, config_error, with_api


def laughs(levels: int) -> str:
    """A configuration whose handler.config nests `levels` levels of ten aliases each (a "billion laughs")."""
    lines = [MINIMAL.rstrip("\n"), "    config:", "      l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"      l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def test_yaml_aliases_that_expand_past_the_limit_are_refused_before_expanding() -> None:
    # Ten million "lol"s: about 60 MB of JSON once expanded.
    assert config_error(laughs(6)) == (
        "cortado.yaml: YAML aliases (*name) expand the configuration to more than 4.0 MiB, the limit (an alias "
        "counts the whole value it repeats, each time it is used); write the values out, or keep large data in a "
        "file of the project"
    )
    # A billion: refused as fast, since nothing is expanded to measure it.
    assert "expand the configuration to more than 4.0 MiB" in config_error(laughs(8))


def test_yaml_aliases_within_the_limit_are_expanded_as_cortex_did() -> None:
    text = """\
- name: first
  kind: AsyncAPI
  handler: &handler
    type: python
    path: handler.py
    config: &shared {labels: [a, b], threshold: 0.5}
  compute: &compute {cpu: 1, mem: 1Gi}
- name: second
  kind: AsyncAPI
  handler:
    <<: *handler
    config: {<<: *shared, threshold: 0.9}
  compute: *compute
"""
    first, second = parse_config(text, "cortex.yaml").apis
    assert json.loads(first.handler_config_json) == {"labels": ["a", "b"], "threshold": 0.5}
    assert json.loads(second.handler_config_json) == {"labels": ["a", "b"], "threshold": 0.9}
    assert second.handler_path == "handler.py"
    assert second.compute.cpu_millis == 1000 and second.compute.mem_bytes == 2**30
    assert len(laughs(2)) < MAX_CONFIG_EXPANDED_BYTES  # a thousand laughs are fine
    assert json.loads(parse_config(laughs(2), "cortado.yaml").apis[0].handler_config_json)["l2"][9][9][9] == "lol"


def test_the_configuration_limit_is_documented() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    assert MAX_CONFIG_EXPANDED_BYTES == 4 * 2**20
    assert "| constant `MAX_CONFIG_EXPANDED_BYTES` (`cortado/project/yamlload.py`) | 4 MiB |" in docs


def test_a_plain_configuration_past_the_limit_is_refused() -> None:
    big = "x" * MAX_CONFIG_EXPANDED_BYTES
    assert config_error(with_api("", f"config: {{blob: {big}}}")) == (
        "cortado.yaml: the configuration is larger than 4.0 MiB, the limit; keep large data in a file of the project"
    )


def test_an_alias_inside_the_value_it_names_is_refused() -> None:
    assert config_error(with_api("", "config: &me {again: *me}")) == (
        "cortado.yaml: line 6: an alias refers to a value that contains it; a configuration cannot contain itself"
    )


def test_an_integer_past_pythons_digit_limit_is_refused_naming_its_line() -> None:
    message = config_error(with_api("", f"config: {{n: {'1' * 5000}}}"))
    assert message.startswith(
        "cortado.yaml: not valid YAML: an integer of more than 4300 digits cannot be read; quote it to keep it as text"
    )
    assert "line 6" in message


def test_yaml_nested_too_deeply_is_refused() -> None:
    assert config_error("[" * 5000) == "cortado.yaml: not valid YAML: it is nested too deeply"
