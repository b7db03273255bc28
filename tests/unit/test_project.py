"""Tests of cortado.project: configuration parsing, .env, project files and bundles."""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from pathlib import Path

import pytest
from google.protobuf.duration_pb2 import Duration

from cortado.project import (
    MAX_BUNDLE_MEMBERS,
    MAX_CONFIG_EXPANDED_BYTES,
    MAX_PROJECT_BYTES,
    ConfigError,
    ParsedConfig,
    ProjectError,
    check_project_files,
    collect_files,
    find_config,
    pack_project,
    parse_config,
    parse_dotenv,
    parse_duration,
    unpack_bundle,
)
from cortado.webhooks import UrlPolicy

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

MINIMAL = """\
- name: echo
  kind: AsyncAPI
  handler:
    type: python
    path: handler.py
"""


def seconds(duration: Duration) -> float:
    """Seconds of a google.protobuf.Duration."""
    return duration.ToNanoseconds() / 1e9


def config_error(text: str, filename: str = "cortado.yaml") -> str:
    """The message of the ConfigError that parsing `text` raises."""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, filename)
    return str(caught.value)


def with_api(extra: str, handler_extra: str = "") -> str:
    """The minimal config with lines added to the API (`extra`) and to its handler (`handler_extra`)."""
    return MINIMAL + "".join(f"    {line}\n" for line in handler_extra.splitlines()) + extra


# --------------------------------------------------------------------------------------------------
# Configuration


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


def test_null_handler_config_means_an_empty_mapping() -> None:
    [api] = parse_config(with_api("", "config: null"), "cortado.yaml").apis
    assert api.handler_config_json == b"{}"


def test_the_later_spelling_target_in_flight_is_accepted() -> None:
    text = with_api("  autoscaling:\n    target_in_flight: 2.5\n")
    [api] = parse_config(text, "cortado.yaml").apis
    assert api.autoscaling.target_in_flight == 2.5


def test_init_replicas_defaults_to_min_replicas() -> None:
    [api] = parse_config(with_api("  autoscaling:\n    min_replicas: 4\n"), "cortado.yaml").apis
    assert api.autoscaling.init_replicas == 4


@pytest.mark.parametrize(
    ("cpu", "millis"), [("1", 1000), ('"1"', 1000), ("0.5", 500), ('"500m"', 500), ("2.25", 2250), ('"20m"', 20)]
)
def test_cpu_is_read_as_cores_or_millicores(cpu: str, millis: int) -> None:
    [api] = parse_config(with_api(f"  compute:\n    cpu: {cpu}\n"), "cortado.yaml").apis
    assert api.compute.cpu_millis == millis


@pytest.mark.parametrize(
    ("mem", "size"),
    [
        ("20Mi", 20 * 2**20),
        ("1Gi", 2**30),
        ("1.5Gi", 3 * 2**29),
        ("100M", 10**8),
        ("1G", 10**9),
        ("50000000", 50000000),
    ],
)
def test_mem_accepts_binary_and_decimal_suffixes_and_plain_bytes(mem: str, size: int) -> None:
    [api] = parse_config(with_api(f"  compute:\n    mem: {mem}\n"), "cortado.yaml").apis
    assert api.compute.mem_bytes == size


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


def test_duplicate_api_names_are_refused() -> None:
    assert config_error(MINIMAL + MINIMAL) == (
        "cortado.yaml: api 'echo': name 'echo' is already used by the API at index 0"
    )


def test_a_missing_kind_is_refused() -> None:
    assert config_error(MINIMAL.replace("  kind: AsyncAPI\n", "")) == (
        "cortado.yaml: api 'echo': kind is required and must be AsyncAPI"
    )


def test_other_cortex_kinds_are_refused_saying_only_asyncapi_is_supported() -> None:
    message = config_error(MINIMAL.replace("AsyncAPI", "RealtimeAPI"), "cortex.yaml")
    assert message == "cortex.yaml: api 'echo': kind is RealtimeAPI, but Cortado only supports AsyncAPI"


def tensorflow(models: str, extra: str = "") -> str:
    """MINIMAL as a tensorflow handler with the given `models:` block (indented under handler)."""
    block = "".join(f"    {line}\n" for line in f"models:\n{models}".splitlines())
    return MINIMAL.replace("type: python", "type: tensorflow") + block + extra


def test_a_tensorflow_handler_takes_one_model_named_models_or_a_folder() -> None:
    [api] = parse_config(tensorflow("  path: model/\n  signature_key: predict"), "cortex.yaml").apis
    assert (api.handler_type, [(m.name, m.path) for m in api.models], api.signature_key) == (
        "tensorflow",
        [("", "model")],
        "predict",
    )
    paths = "  paths:\n    - {name: a, path: models/a}\n    - {name: b, path: /srv/models/b, signature_key: s}"
    [api] = parse_config(tensorflow(paths), "cortex.yaml").apis
    assert [(m.name, m.path, m.signature_key) for m in api.models] == [
        ("a", "models/a", ""),
        ("b", "/srv/models/b", "s"),
    ]
    [api] = parse_config(tensorflow("  dir: models"), "cortex.yaml").apis
    assert (api.models_dir, list(api.models)) == ("models", [])
    [api] = parse_config(MINIMAL, "cortex.yaml").apis
    assert api.handler_type == "python"


def test_tensorflow_serving_image_is_accepted_with_a_notice_that_it_has_no_effect() -> None:
    parsed = parse_config(tensorflow("  path: model", "    tensorflow_serving_image: tfs:1\n"), "cortex.yaml")
    assert any("`handler.tensorflow_serving_image` has no effect" in notice for notice in parsed.notices)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (MINIMAL.replace("type: python", "type: tensorflow"), "handler.models is required for handler.type tensorflow"),
        (tensorflow("  signature_key: x"), "handler.models must have exactly one of path, paths or dir"),
        (
            tensorflow("  path: a\n  dir: b"),
            "handler.models must have exactly one of path, paths or dir (got path, dir)",
        ),
        (tensorflow("  path: s3://bucket/model/"), "handler.models.path is 's3://bucket/model/', but Cortado loads"),
        (tensorflow("  path: ../model"), "handler.models.path must be a path relative to the project root"),
        (tensorflow("  paths: []"), "handler.models.paths must be a non-empty list of {name, path} (got a list)"),
        (tensorflow("  paths:\n    - {path: a}"), "handler.models.paths[0].name is required"),
        (tensorflow("  paths:\n    - {name: a}"), "handler.models.paths[0].path is required"),
        (
            tensorflow("  paths:\n    - {name: a, path: x}\n    - {name: a, path: y}"),
            "handler.models.paths[1].name 'a' is used by another model",
        ),
        (
            tensorflow("  paths:\n    - {name: a, path: x, version: 2}"),
            "handler.models.paths[0].version is not a known key",
        ),
        (MINIMAL + "    models:\n      path: m\n", "handler.models is only for handler.type tensorflow"),
        (
            MINIMAL.replace("type: python", "type: onnx"),
            "handler.type must be python or tensorflow (got a string, 'onnx')",
        ),
    ],
)
def test_a_wrong_tensorflow_configuration_names_the_key(text: str, message: str) -> None:
    assert message in config_error(text, "cortex.yaml")


def test_a_handler_path_must_be_a_py_file() -> None:
    message = config_error(MINIMAL.replace("handler.py", "handler.sh"))
    assert message == "cortado.yaml: api 'echo': handler.path must be a .py file (got 'handler.sh')"


def test_a_handler_path_outside_the_project_is_refused() -> None:
    message = config_error(MINIMAL.replace("handler.py", "../handler.py"))
    assert message.startswith("cortado.yaml: api 'echo': handler.path must be a path relative to the project root")


def test_a_missing_handler_is_refused() -> None:
    text = "- name: echo\n  kind: AsyncAPI\n"
    assert config_error(text).startswith("cortado.yaml: api 'echo': handler is required")


def test_conda_dependencies_are_refused() -> None:
    message = config_error(with_api("", "dependencies:\n  conda: conda-packages.txt"), "cortex.yaml")
    assert message == (
        "cortex.yaml: api 'echo': handler.dependencies.conda is not supported: Cortado installs pip requirements only"
    )


def test_env_keys_with_cortados_prefix_are_refused() -> None:
    message = config_error(with_api("", "env:\n  CORTADO_API: x"))
    assert message == (
        "cortado.yaml: api 'echo': handler.env.CORTADO_API is refused: variables starting with CORTADO_ are Cortado's"
    )


def test_env_may_not_move_the_handler_metrics_directory() -> None:
    message = config_error(with_api("", "env:\n  PROMETHEUS_MULTIPROC_DIR: /tmp/x"))
    assert message == (
        "cortado.yaml: api 'echo': handler.env.PROMETHEUS_MULTIPROC_DIR is refused: "
        "Cortado sets it (the handler's metrics are collected there)"
    )


def test_an_unknown_log_level_is_refused() -> None:
    message = config_error(with_api("", "log_level: verbose"))
    assert message == (
        "cortado.yaml: api 'echo': handler.log_level must be one of debug, info, warning, error (got 'verbose')"
    )


@pytest.mark.parametrize("key", ["processes_per_replica", "threads_per_process"])
def test_more_than_one_process_or_thread_per_replica_is_refused(key: str) -> None:
    message = config_error(with_api("", f"{key}: 2"))
    assert message.startswith(f"cortado.yaml: api 'echo': handler.{key} must be 1 for an AsyncAPI (got 2)")


def test_inferentia_is_refused() -> None:
    message = config_error(with_api("  compute:\n    inf: 1\n"))
    assert message == (
        "cortado.yaml: api 'echo': compute.inf asks for Inferentia chips, which Cortado does not support (got 1)"
    )


@pytest.mark.parametrize(
    ("compute", "message"),
    [
        ("cpu: 10m", "compute.cpu must be at least 20m (got '10m')"),
        ("cpu: lots", "compute.cpu must be a number of cores or millicores like 500m (got 'lots')"),
        ("mem: 10Mi", "compute.mem must be at least 20Mi (got '10Mi')"),
        ("mem: 2GB", "compute.mem must be a size in bytes"),
        ("gpu: -1", "compute.gpu must be at least 0 (got -1)"),
        ("gpu: 0.5", "compute.gpu must be an integer (got a number, 0.5)"),
    ],
)
def test_bad_compute_values_are_refused(compute: str, message: str) -> None:
    assert config_error(with_api(f"  compute:\n    {compute}\n")).startswith(f"cortado.yaml: api 'echo': {message}")


@pytest.mark.parametrize(
    ("autoscaling", "message"),
    [
        ("max_upscale_factor: 0.5", "autoscaling.max_upscale_factor must be greater than 1 (got 0.5)"),
        ("max_upscale_factor: 1", "autoscaling.max_upscale_factor must be greater than 1 (got 1)"),
        ("max_downscale_factor: 1", "autoscaling.max_downscale_factor must be at least 0 and less than 1 (got 1)"),
        ("downscale_tolerance: -0.1", "autoscaling.downscale_tolerance must be at least 0 and less than 1 (got -0.1)"),
        ("upscale_tolerance: -1", "autoscaling.upscale_tolerance must be at least 0 (got -1)"),
        ("window: 5s", "autoscaling.window must be at least 10s and a multiple of 10s (got '5s')"),
        ("window: 15s", "autoscaling.window must be at least 10s and a multiple of 10s (got '15s')"),
        ("window: soon", "autoscaling.window must be a duration like 50ms, 10s, 5m, 1h or 7d (got 'soon')"),
        ("max_replica_concurrency: 30001", "autoscaling.max_replica_concurrency must be at most 30000 (got 30001)"),
        ("min_replicas: 5\n    max_replicas: 2", "autoscaling.max_replicas must be at least min_replicas (5) (got 2)"),
        (
            "min_replicas: 2\n    init_replicas: 1",
            "autoscaling.init_replicas must be between min_replicas (2) and max_replicas (100) (got 1)",
        ),
        ("target_replica_concurrency: 0", "autoscaling.target_replica_concurrency must be greater than 0 (got 0)"),
        ("min_replicas: two", "autoscaling.min_replicas must be an integer (got a string, 'two')"),
        ("min_replicas: true", "autoscaling.min_replicas must be an integer (got a boolean, True)"),
        (
            "target_replica_concurrency: 2\n    target_in_flight: 2",
            "autoscaling.target_in_flight and autoscaling.target_replica_concurrency are two spellings",
        ),
    ],
)
def test_bad_autoscaling_values_are_refused(autoscaling: str, message: str) -> None:
    text = with_api(f"  autoscaling:\n    {autoscaling}\n")
    assert config_error(text, "cortex.yaml").startswith(f"cortex.yaml: api 'echo': {message}")


def test_max_replica_concurrency_below_what_a_replica_holds_is_refused() -> None:
    text = with_api("  autoscaling:\n    max_replica_concurrency: 4\n", "max_concurrency: 2\nmax_batch_size: 2")
    assert config_error(text, "cortex.yaml") == (
        "cortex.yaml: api 'echo': autoscaling.max_replica_concurrency must be at least 8 (got 4): a replica of this "
        "API holds up to 8 requests, the 4 its handler works on at once (handler.max_concurrency 2 x "
        "handler.max_batch_size 2) and as many fetched ahead; lower those to hold fewer"
    )
    assert "must be at least 2 (got 1)" in config_error(with_api("  autoscaling:\n    max_replica_concurrency: 1\n"))


def test_max_replica_concurrency_at_or_above_what_a_replica_holds_is_kept() -> None:
    text = with_api("  autoscaling:\n    max_replica_concurrency: 8\n", "max_concurrency: 2\nmax_batch_size: 2")
    assert parse_config(text, "cortado.yaml").apis[0].autoscaling.max_replica_concurrency == 8
    text = with_api("  autoscaling:\n    max_replica_concurrency: 2\n")
    assert parse_config(text, "cortado.yaml").apis[0].autoscaling.max_replica_concurrency == 2


def test_without_max_replica_concurrency_the_default_grows_to_what_a_replica_holds() -> None:
    [api] = parse_config(with_api("", "max_concurrency: 600"), "cortado.yaml").apis
    assert api.autoscaling.max_replica_concurrency == 1200
    [api] = parse_config(with_api("", "max_concurrency: 4"), "cortado.yaml").apis
    assert api.autoscaling.max_replica_concurrency == 1024


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


def test_a_handler_path_that_is_not_a_string_is_refused() -> None:
    message = config_error(MINIMAL.replace("handler.py", "7"))
    assert message == "cortado.yaml: api 'echo': handler.path must be a string (got an integer, 7)"


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
    assert "| constant `MAX_CONFIG_EXPANDED_BYTES` (`cortado/project.py`) | 4 MiB |" in docs


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


def test_update_strategy_is_accepted_with_a_notice() -> None:
    text = with_api("  update_strategy:\n    max_surge: 1\n    max_unavailable: 25%\n")
    assert parse_config(text, "cortado.yaml").notices == [
        "cortado.yaml: api 'echo': `update_strategy` only mattered to Cortex's cluster; it is ignored"
    ]


# --------------------------------------------------------------------------------------------------
# Durations


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("50ms", 0.05),
        ("10s", 10.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("7d", 604800.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("250us", 0.00025),
        ("30", 30.0),
        (30, 30.0),
        (0.5, 0.5),
    ],
)
def test_durations_are_read_in_seconds(value: str | int | float, expected: float) -> None:
    assert parse_duration(value, "x") == pytest.approx(expected)


@pytest.mark.parametrize("value", ["", "ten seconds", "10 s", "5y", "-5s", "s", "1h 30m", "1.2.3s"])
def test_malformed_durations_are_refused(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_duration(value, "cortado.yaml: api 'echo': handler.timeout")
    assert str(caught.value) == (
        f"cortado.yaml: api 'echo': handler.timeout must be a duration like 50ms, 10s, 5m, 1h or 7d (got {value!r})"
    )


@pytest.mark.parametrize("value", [-1, float("inf"), True])
def test_negative_or_infinite_or_boolean_durations_are_refused(value: int | float) -> None:
    with pytest.raises(ConfigError):
        parse_duration(value, "x")


# --------------------------------------------------------------------------------------------------
# .env


def test_dotenv_reads_quotes_comments_and_export() -> None:
    text = """\
# a comment

PLAIN=value
export EXPORTED=yes
SINGLE='it''s quoted'
DOUBLE="two words # not a comment"
ESCAPED="say \\"hi\\" to \\$HOME"
TRAILING=bare   # a comment
EMPTY=
HASH=abc#def
  INDENTED=ok
PLAIN=again
"""
    assert parse_dotenv(text) == {
        "PLAIN": "again",
        "EXPORTED": "yes",
        "SINGLE": "its quoted",
        "DOUBLE": "two words # not a comment",
        "ESCAPED": 'say "hi" to $HOME',
        "TRAILING": "bare",
        "EMPTY": "",
        "HASH": "abc#def",
        "INDENTED": "ok",
    }


def test_dotenv_handles_windows_line_endings() -> None:
    assert parse_dotenv("A=1\r\nB='2'\r\n") == {"A": "1", "B": "2"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("foo bar", ".env line 3: expected VARIABLE=value, got 'foo bar'"),
        ("1ABC=x", ".env line 3: expected VARIABLE=value, got '1ABC=x'"),
        ("A = b", ".env line 3: expected VARIABLE=value, got 'A = b'"),
        ('A="open', ".env line 3: unterminated double quote in 'A=\"open'"),
        ("A='open", '.env line 3: unterminated single quote in "A=\'open"'),
        ("A=two words", ".env line 3: unquoted space in the value; put the value in quotes in 'A=two words'"),
    ],
)
def test_a_malformed_dotenv_line_is_refused_with_its_line_number(line: str, message: str) -> None:
    with pytest.raises(ProjectError) as caught:
        parse_dotenv(f"# header\nOK=1\n{line}\n")
    assert str(caught.value) == message


def test_a_dotenv_error_names_the_file_it_was_given() -> None:
    with pytest.raises(ProjectError, match=r"^project/.env line 1: "):
        parse_dotenv("nope", "project/.env")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "CORTADO_NATS_URL=nats://elsewhere:4222",
            "CORTADO_NATS_URL is refused: variables starting with CORTADO_ are Cortado's",
        ),
        (
            "export CORTADO_WORKER_REPLICA=7",
            "CORTADO_WORKER_REPLICA is refused: variables starting with CORTADO_ are Cortado's",
        ),
        (
            "PROMETHEUS_MULTIPROC_DIR=/tmp/x",
            "PROMETHEUS_MULTIPROC_DIR is refused: Cortado sets it (the handler's metrics are collected there)",
        ),
    ],
)
def test_dotenv_refuses_the_variables_handler_env_refuses(line: str, message: str) -> None:
    with pytest.raises(ProjectError) as caught:
        parse_dotenv(f"# settings\nMODEL=small\n{line}\n")
    assert str(caught.value) == f".env line 3: {message}"


# --------------------------------------------------------------------------------------------------
# Project files


def write(path: Path, content: str | bytes = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)


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


def make_tree(root: Path) -> None:
    for name in [
        "cortex.yaml",
        "handler.py",
        "requirements.txt",
        ".env",
        ".hidden",
        ".git/config",
        ".git/objects/ab",
        "__pycache__/x.pyc",
        "a.pyc",
        "b.pyo",
        "c.pyd",
        "pkg/__init__.py",
        "pkg/__pycache__/mod.cpython-311.pyc",
        "pkg/.secret",
        "pkg/cortex.yaml",
        "debug.log",
        "keep.log",
        "logs/keep.log",
        "data/big.bin",
        "data/keep.txt",
        "pkg/data/nested.bin",
        "build/out.o",
        "src/build/kept.py",
        "datafile",
    ]:
        write(root / name)
    write(
        root / ".cortexignore",
        "# leave out logs but keep keep.log\n*.log\n!keep.log\ndata/\n!data/keep.txt\n/build\n",
    )


def test_collect_files_applies_the_dot_pycache_config_and_cortexignore_rules(tmp_path: Path) -> None:
    make_tree(tmp_path)
    assert collect_files(tmp_path, "cortex.yaml") == [
        (".env", 1),
        ("datafile", 1),
        ("handler.py", 1),
        ("keep.log", 1),
        ("logs/keep.log", 1),
        ("pkg/__init__.py", 1),
        ("pkg/cortex.yaml", 1),
        ("requirements.txt", 1),
        ("src/build/kept.py", 1),
    ]


def test_collect_files_follows_links_inside_the_project_and_skips_those_outside(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write(project / "handler.py", "print()")
    write(project / "models/model.bin", "12345")
    write(tmp_path / "outside.txt", "secret")
    write(tmp_path / "outside_dir/file.txt", "secret")
    os.symlink(project / "models/model.bin", project / "model-link.bin")
    os.symlink(project / "models", project / "models-link")
    os.symlink(tmp_path / "outside.txt", project / "outside-link.txt")
    os.symlink(tmp_path / "outside_dir", project / "outside-dir-link")
    os.symlink(project / "missing", project / "broken-link")
    os.symlink(project, project / "models/loop")  # a loop back up the tree is not followed
    assert collect_files(project, "cortado.yaml") == [
        ("handler.py", 7),
        ("model-link.bin", 5),
        ("models-link/model.bin", 5),
        ("models/model.bin", 5),
    ]


def test_check_project_files_reports_a_missing_handler(tmp_path: Path) -> None:
    write(tmp_path / "other.py")
    parsed = parse_config(MINIMAL, "cortado.yaml")
    with pytest.raises(ProjectError) as caught:
        check_project_files(parsed, collect_files(tmp_path, "cortado.yaml"), "cortado.yaml")
    assert str(caught.value).startswith("cortado.yaml: api 'echo': handler.path 'handler.py' is not in the project")
    write(tmp_path / "handler.py")
    check_project_files(parsed, collect_files(tmp_path, "cortado.yaml"), "cortado.yaml")


def test_pack_and_unpack_round_trip(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_tree(project)
    write(project / "handler.py", "def handle(x):\n    return x\n")
    write(project / "pkg/blob.bin", bytes(range(256)) * 10)
    (project / "run.sh").write_text("#!/bin/sh\n")
    (project / "run.sh").chmod(0o755)
    bundle = pack_project(project, "cortex.yaml")
    assert pack_project(project, "cortex.yaml") == bundle  # same files, same bytes

    dest = tmp_path / "unpacked"
    unpack_bundle(bundle, dest)
    unpacked = sorted(path.relative_to(dest).as_posix() for path in dest.rglob("*") if path.is_file())
    assert unpacked == [name for name, _ in collect_files(project, "cortex.yaml")]
    assert (dest / "handler.py").read_text() == "def handle(x):\n    return x\n"
    assert (dest / "pkg/blob.bin").read_bytes() == bytes(range(256)) * 10
    assert (dest / "run.sh").stat().st_mode & 0o111
    assert not (dest / "cortex.yaml").exists()


def test_a_project_over_the_limit_names_its_total_the_limit_and_the_largest_files(tmp_path: Path) -> None:
    write(tmp_path / "handler.py", "x" * 2048)
    with open(tmp_path / "model.bin", "wb") as f:
        f.truncate(38 * 1024 * 1024)  # sparse: nothing is written
    with open(tmp_path / "weights.bin", "wb") as f:
        f.truncate(2 * 1024 * 1024 + 200 * 1024)
    write(tmp_path / "tiny.txt", "abc")
    with pytest.raises(ProjectError) as caught:
        pack_project(tmp_path, "cortado.yaml")
    assert str(caught.value) == (
        "project is 40.2 MiB, over the 32 MiB limit; largest files: model.bin (38.0 MiB), weights.bin (2.2 MiB), "
        "handler.py (2.0 KiB), tiny.txt (3 B); add a .cortexignore to leave files out"
    )


def test_a_project_of_more_files_than_a_bundle_may_hold_is_refused_before_upload(tmp_path: Path) -> None:
    for i in range(MAX_BUNDLE_MEMBERS + 1):
        (tmp_path / f"f{i}").touch()
    with pytest.raises(ProjectError) as caught:
        pack_project(tmp_path, "cortado.yaml")
    assert str(caught.value) == (
        "project has 10001 files, over the limit of 10000; add a .cortexignore to leave files out"
    )


def test_a_project_at_exactly_the_limit_is_packed(tmp_path: Path) -> None:
    with open(tmp_path / "model.bin", "wb") as f:
        f.truncate(MAX_PROJECT_BYTES)
    assert len(pack_project(tmp_path, "cortado.yaml")) < MAX_PROJECT_BYTES


def tar_with(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, content in members:
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def test_unpack_refuses_a_path_with_dot_dot(tmp_path: Path) -> None:
    bundle = tar_with((tarfile.TarInfo("../evil"), b"evil"))
    with pytest.raises(ProjectError, match=re.escape("unsafe path: '../evil'")):
        unpack_bundle(bundle, tmp_path / "dest")
    assert not (tmp_path / "evil").exists()


def test_unpack_refuses_an_absolute_path(tmp_path: Path) -> None:
    bundle = tar_with((tarfile.TarInfo(str(tmp_path / "abs")), b"evil"))
    with pytest.raises(ProjectError, match="unsafe path"):
        unpack_bundle(bundle, tmp_path / "dest")
    assert not (tmp_path / "abs").exists()


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, b""


def file_member(name: str, content: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info, content


@pytest.mark.parametrize(
    ("member", "kind"),
    [
        (special("link", tarfile.SYMTYPE, "/etc/passwd"), "a symbolic link"),
        # Links that stay inside the destination are refused too: a bundle never needs one.
        (special("inside", tarfile.SYMTYPE, "handler.py"), "a symbolic link"),
        (special("hard", tarfile.LNKTYPE, "handler.py"), "a hard link"),
        (special("tty", tarfile.CHRTYPE), "a character device"),
        (special("disk", tarfile.BLKTYPE), "a block device"),
        (special("pipe", tarfile.FIFOTYPE), "a FIFO"),
    ],
    ids=lambda value: value if isinstance(value, str) else value[0].name,
)
def test_unpack_accepts_regular_files_and_folders_only_naming_the_member(
    tmp_path: Path, member: tuple[tarfile.TarInfo, bytes], kind: str
) -> None:
    name = member[0].name
    bundle = tar_with(file_member("handler.py"), member)
    with pytest.raises(ProjectError) as caught:
        unpack_bundle(bundle, tmp_path / "dest")
    assert str(caught.value) == f"bundle holds {kind}, {name!r}: only regular files and folders are allowed"
    # Every member is checked before anything is written.
    assert not (tmp_path / "dest").exists()


def test_unpack_caps_the_number_of_members(tmp_path: Path) -> None:
    bundle = tar_with(*(file_member(f"f{i}") for i in range(4)))
    with pytest.raises(ProjectError) as caught:
        unpack_bundle(bundle, tmp_path / "dest", max_members=3)
    assert str(caught.value) == "bundle holds more than 3 entries, over the limit"
    assert not (tmp_path / "dest").exists()
    unpack_bundle(bundle, tmp_path / "dest", max_members=4)
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["f0", "f1", "f2", "f3"]


def test_the_default_member_cap_is_the_documented_constant(tmp_path: Path) -> None:
    bundle = tar_with(*(file_member(f"f{i}", b"") for i in range(MAX_BUNDLE_MEMBERS + 1)))
    with pytest.raises(ProjectError, match=f"^bundle holds more than {MAX_BUNDLE_MEMBERS} entries"):
        unpack_bundle(bundle, tmp_path / "dest")
    docs = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    assert f"| {MAX_BUNDLE_MEMBERS:,} |" in docs


def test_unpack_caps_the_unpacked_size(tmp_path: Path) -> None:
    bundle = tar_with(file_member("a", b"x" * 600), file_member("b", b"x" * 600))
    with pytest.raises(ProjectError) as caught:
        unpack_bundle(bundle, tmp_path / "dest", max_bytes=1024)
    assert str(caught.value) == "bundle unpacks to more than 1.0 KiB, over the limit (reached at 'b')"


@pytest.mark.parametrize("name", ["a\\b", "a/../../b", "/etc/x", "."])
def test_unpack_refuses_paths_that_could_land_outside(tmp_path: Path, name: str) -> None:
    with pytest.raises(ProjectError) as caught:
        unpack_bundle(tar_with(file_member(name)), tmp_path / "dest")
    assert str(caught.value) == f"bundle holds an unsafe path: {name!r}"


def test_unpack_refuses_a_file_given_twice(tmp_path: Path) -> None:
    with pytest.raises(ProjectError) as caught:
        unpack_bundle(tar_with(file_member("a", b"1"), file_member("./a", b"2")), tmp_path / "dest")
    assert str(caught.value) == "bundle holds the file './a' twice"


def test_unpack_writes_folders_files_and_the_executable_bit_only(tmp_path: Path) -> None:
    folder = tarfile.TarInfo("pkg")
    folder.type = tarfile.DIRTYPE
    folder.mode = 0o777
    bundle = tar_with(
        (folder, b""), file_member("pkg/run.sh", b"#!/bin/sh\n", 0o4777), file_member("pkg/data", b"d", 0o666)
    )
    unpack_bundle(bundle, tmp_path / "dest")
    assert (tmp_path / "dest/pkg/run.sh").read_bytes() == b"#!/bin/sh\n"
    assert (tmp_path / "dest/pkg/run.sh").stat().st_mode & 0o7777 == 0o755
    assert (tmp_path / "dest/pkg/data").stat().st_mode & 0o7777 == 0o644


def test_unpack_refuses_garbage(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="cannot unpack bundle"):
        unpack_bundle(b"not a tar", tmp_path / "dest")


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
