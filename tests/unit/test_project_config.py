"""Tests of cortado.project.config: finding the configuration file and parsing it as a whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf.duration_pb2 import Duration

from cortado.project.config import ParsedConfig, find_config, parse_config
from cortado.project.errors import ProjectError
from tests.unit.projectsamples import MINIMAL, config_error, with_api, write

CORTEX_V035 = """\
# cortex.yaml written for Cortex v0.35
- name: iris-classifier
  kind: AsyncAPI
  handler:
    type: python
    path: handler.py
    dependencies:
      pip: requirements.txt
      shell: dependencies.sh
    config:
      model: s3://cortex-examples/sklearn/iris-classifier/model.pkl
      big: 123456789012345678901234567890
      labels: [setosa, versicolor, virginica]
      "ünïcode": "ok"
      released: 2021-06-01
    python_path: src
    image: quay.io/cortexlabs/python-handler-cpu:0.35.0
    env:
      MODEL_VARIANT: small
      WORKERS: 4
      DEBUG: false
    log_level: debug
    shm_size: 64Mi
  compute:
    cpu: 1
    gpu: 0
    mem: 2Gi
    node_groups: [cpu-pool]
  autoscaling:
    min_replicas: 2
    max_replicas: 10
    init_replicas: 3
    max_replica_concurrency: 256
    target_replica_concurrency: 4
    window: 30s
    downscale_stabilization_period: 10m
    upscale_stabilization_period: 2m
    max_downscale_factor: 0.5
    max_upscale_factor: 2
    downscale_tolerance: 0.1
    upscale_tolerance: 0.2
  update_strategy:
    max_surge: 25%
    max_unavailable: 0
  networking:
    endpoint: /iris
"""


def seconds(duration: Duration) -> float:
    """Seconds of a google.protobuf.Duration."""
    return duration.ToNanoseconds() / 1e9


def test_a_cortex_v035_config_parses_unmodified_with_notices() -> None:
    parsed = parse_config(CORTEX_V035.encode(), "cortex.yaml")
    assert isinstance(parsed, ParsedConfig)
    [api] = parsed.apis
    assert api.name == "iris-classifier"
    assert api.handler_path == "handler.py"
    config = json.loads(api.handler_config_json)
    assert list(config) == ["model", "big", "labels", "ünïcode", "released"]
    assert config["big"] == 123456789012345678901234567890
    assert config["released"] == "2021-06-01"
    assert "ünïcode" in api.handler_config_json.decode("utf-8")
    assert api.python_path == "src"
    assert dict(api.env) == {"MODEL_VARIANT": "small", "WORKERS": "4", "DEBUG": "false"}
    assert api.log_level == "debug"
    assert api.dependencies_pip == "requirements.txt"
    assert api.dependencies_shell == "dependencies.sh"
    assert api.compute.cpu_millis == 1000
    assert api.compute.mem_bytes == 2 * 1024**3
    assert api.compute.gpu == 0
    scaling = api.autoscaling
    assert (scaling.min_replicas, scaling.max_replicas, scaling.init_replicas) == (2, 10, 3)
    assert scaling.max_replica_concurrency == 256
    assert scaling.target_in_flight == 4
    assert seconds(scaling.window) == 30
    assert seconds(scaling.downscale_stabilization_period) == 600
    assert seconds(scaling.upscale_stabilization_period) == 120
    assert (scaling.max_downscale_factor, scaling.max_upscale_factor) == (0.5, 2)
    assert (scaling.downscale_tolerance, scaling.upscale_tolerance) == (0.1, 0.2)
    assert api.endpoint == "/iris"
    assert parsed.notices == [
        "cortex.yaml: api 'iris-classifier': `handler.shm_size` is ignored: "
        "handler processes share the machine's /dev/shm",
        "cortex.yaml: api 'iris-classifier': `handler.image` only mattered to Cortex's cluster; it is ignored",
        "cortex.yaml: api 'iris-classifier': `compute.node_groups` only mattered to Cortex's cluster; it is ignored",
        "cortex.yaml: api 'iris-classifier': `update_strategy` only mattered to Cortex's cluster; it is ignored",
    ]


def test_a_minimal_config_gets_every_default() -> None:
    parsed = parse_config(MINIMAL, "cortado.yaml")
    assert parsed.notices == []
    [api] = parsed.apis
    assert api.name == "echo"
    assert api.handler_path == "handler.py"
    assert api.handler_config_json == b"{}"
    assert api.python_path == ""
    assert dict(api.env) == {}
    assert api.log_level == "info"
    assert api.dependencies_pip == "requirements.txt"
    assert api.dependencies_shell == "dependencies.sh"
    assert (api.compute.cpu_millis, api.compute.mem_bytes, api.compute.gpu) == (200, 0, 0)
    scaling = api.autoscaling
    assert (scaling.min_replicas, scaling.max_replicas, scaling.init_replicas) == (1, 100, 1)
    assert scaling.target_in_flight == 1
    assert scaling.max_replica_concurrency == 1024
    assert seconds(scaling.window) == 60
    assert seconds(scaling.downscale_stabilization_period) == 300
    assert seconds(scaling.upscale_stabilization_period) == 60
    assert (scaling.max_downscale_factor, scaling.max_upscale_factor) == (0.75, 1.5)
    assert (scaling.downscale_tolerance, scaling.upscale_tolerance) == (0.05, 0.05)
    assert api.max_concurrency == 1
    assert api.max_batch_size == 1
    assert seconds(api.batch_interval) == 0.05
    assert not api.HasField("timeout")
    assert api.max_retries == 3
    assert api.queue_max_length == 100000
    assert seconds(api.retention) == 7 * 86400
    assert api.endpoint == "/echo"
    assert api.version == 0
    assert api.bundle_object == ""
    assert not api.HasField("deployed_at")


def test_cortados_own_keys_are_read() -> None:
    text = with_api(
        "  queue:\n    max_length: 50\n  results:\n    retention: 1h30m\n",
        "max_concurrency: 4\nmax_batch_size: 8\nbatch_interval: 200ms\ntimeout: 30s\nmax_retries: 0\n",
    )
    [api] = parse_config(text, "cortado.yaml").apis
    assert (api.max_concurrency, api.max_batch_size, api.max_retries) == (4, 8, 0)
    assert seconds(api.batch_interval) == 0.2
    assert seconds(api.timeout) == 30
    assert api.queue_max_length == 50
    assert seconds(api.retention) == 5400


def test_apis_come_back_in_file_order() -> None:
    text = MINIMAL + MINIMAL.replace("echo", "second").replace("handler.py", "other.py")
    assert [api.name for api in parse_config(text, "cortado.yaml").apis] == ["echo", "second"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "name: echo\nkind: AsyncAPI\n",
            "cortado.yaml: must be a YAML list of APIs, got a single mapping",
        ),
        ("", "cortado.yaml: the file is empty"),
        ("- [unclosed\n", "cortado.yaml: not valid YAML"),
        ("- just a string\n", "cortado.yaml: api at index 0: each API must be a mapping"),
    ],
)
def test_a_config_that_is_not_a_list_of_mappings_is_refused(text: str, message: str) -> None:
    assert config_error(text).startswith(message)


def test_duplicate_api_names_are_refused() -> None:
    assert config_error(MINIMAL + MINIMAL) == (
        "cortado.yaml: api 'echo': name 'echo' is already used by the API at index 0"
    )


@pytest.mark.parametrize(
    ("extra", "handler_extra", "message"),
    [
        ("", "max_concurrency: 0", "handler.max_concurrency must be at least 1 (got 0)"),
        ("", "max_batch_size: 0", "handler.max_batch_size must be at least 1 (got 0)"),
        ("", "max_retries: -1", "handler.max_retries must be at least 0 (got -1)"),
        ("", "timeout: 0s", "handler.timeout must be longer than 0s"),
        ("", "batch_interval: fast", "handler.batch_interval must be a duration"),
        ("  queue:\n    max_length: 0\n", "", "queue.max_length must be at least 1 (got 0)"),
        ("  results:\n    retention: 0s\n", "", "results.retention must be longer than 0s"),
    ],
)
def test_bad_values_of_cortados_own_keys_are_refused(extra: str, handler_extra: str, message: str) -> None:
    assert config_error(with_api(extra, handler_extra)).startswith(f"cortado.yaml: api 'echo': {message}")


@pytest.mark.parametrize(
    ("extra", "handler_extra", "key"),
    [
        ("  replicas: 3\n", "", "replicas is not a known key"),
        ("", "server_side_batching: {}", "handler.server_side_batching is not a known key"),
        ("", "dependencies:\n  npm: package.json", "handler.dependencies.npm is not a known key"),
        ("  autoscaling:\n    min_replica: 1\n", "", "autoscaling.min_replica is not a known key"),
        ("  compute:\n    tpu: 1\n", "", "compute.tpu is not a known key"),
        ("  networking:\n    api_gateway: public\n", "", "networking.api_gateway is not a known key"),
    ],
)
def test_unknown_keys_are_refused_naming_the_key_path(extra: str, handler_extra: str, key: str) -> None:
    assert config_error(with_api(extra, handler_extra)).startswith(f"cortado.yaml: api 'echo': {key}")


def test_an_unknown_key_close_to_a_known_one_gets_a_suggestion() -> None:
    message = config_error(with_api("  autoscaling:\n    min_replica: 1\n"))
    assert message.endswith("(did you mean autoscaling.min_replicas?)")


@pytest.mark.parametrize(
    ("extra", "handler_extra", "message"),
    [
        ("", "env: [A, B]", "handler.env must be a mapping of variable names to strings (got a list)"),
        ("", "env:\n  A: {b: c}", "handler.env.A must be a string (got a mapping)"),
        ("", "config: [1, 2]", "handler.config must be a mapping (got a list)"),
        ("  autoscaling: 3\n", "", "autoscaling must be a mapping (got an integer)"),
        ("  compute:\n    node_groups: 5\n", "", "compute.node_groups must be a list of strings"),
    ],
)
def test_wrong_types_are_refused_naming_the_key_and_expected_type(extra: str, handler_extra: str, message: str) -> None:
    assert config_error(with_api(extra, handler_extra)).startswith(f"cortado.yaml: api 'echo': {message}")


def test_find_config_prefers_cortado_yaml_and_accepts_yml(tmp_path: Path) -> None:
    write(tmp_path / "cortex.yml")
    assert find_config(tmp_path) == tmp_path / "cortex.yml"
    write(tmp_path / "cortex.yaml")
    assert find_config(tmp_path) == tmp_path / "cortex.yaml"
    write(tmp_path / "cortado.yaml")
    assert find_config(tmp_path) == tmp_path / "cortado.yaml"


def test_find_config_without_a_config_file_raises_project_error(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match=r"no cortado.yaml or cortex.yaml found in "):
        find_config(tmp_path)
