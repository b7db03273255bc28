"""Tests of cortado.project.handler: the handler section, tensorflow models included."""

from __future__ import annotations

import pytest

from cortado.project.config import parse_config
from tests.unit.projectsamples import MINIMAL, config_error, with_api


def test_null_handler_config_means_an_empty_mapping() -> None:
    [api] = parse_config(with_api("", "config: null"), "cortado.yaml").apis
    assert api.handler_config_json == b"{}"


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


def test_a_handler_path_that_is_not_a_string_is_refused() -> None:
    message = config_error(MINIMAL.replace("handler.py", "7"))
    assert message == "cortado.yaml: api 'echo': handler.path must be a string (got an integer, 7)"
