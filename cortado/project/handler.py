"""The `handler` section of an API: its type, file, config, environment, dependencies, batching and retries,
and the SavedModels of a tensorflow handler."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from cortado.project.dotenv import reserved_env_problem
from cortado.project.fields import FieldReader
from cortado.project.messages import describe, type_name
from cortado.project.units import parse_quantity_bytes
from cortado.v1 import control_pb2

_LOG_LEVELS = ("debug", "info", "warning", "error")

_HANDLER_KEYS = (
    "type",
    "path",
    "config",
    "python_path",
    "env",
    "log_level",
    "dependencies",
    "shm_size",
    "image",
    "processes_per_replica",
    "threads_per_process",
    "max_concurrency",
    "max_batch_size",
    "batch_interval",
    "timeout",
    "max_retries",
    "models",
    "tensorflow_serving_image",
)
_MODELS_KEYS = ("path", "paths", "dir", "signature_key")
_MODEL_PATH_KEYS = ("name", "path", "signature_key")
_DEPENDENCIES_KEYS = ("pip", "shell", "conda")


def parse_handler(reader: FieldReader, api: Mapping[str, Any], spec: control_pb2.ApiSpec) -> None:
    """Fill spec's handler fields from `api["handler"]`, defaults applied; fail naming the key for anything invalid.

    Keys that only mattered to Cortex's cluster (image, shm_size, tensorflow_serving_image) leave a notice.
    """
    if api.get("handler") is None:
        reader.fail("handler", "is required (with at least type: python and path: <file>.py)")
    handler = reader.section(api, "handler", _HANDLER_KEYS)

    handler_type = handler.get("type")
    if handler_type is None:
        reader.fail("handler.type", "is required and must be python or tensorflow")
    if handler_type not in ("python", "tensorflow"):
        reader.fail("handler.type", f"must be python or tensorflow (got {describe(handler_type)})")
    spec.handler_type = handler_type
    if handler_type == "tensorflow":
        _parse_models(reader, handler, spec)
    elif handler.get("models") is not None:
        reader.fail("handler.models", "is only for handler.type tensorflow (a python handler loads its own models)")
    if handler.get("tensorflow_serving_image") is not None:
        reader.notice(
            "`handler.tensorflow_serving_image` has no effect: Cortado runs SavedModels in the handler's own "
            "process, with TensorFlow's runtime"
        )

    path = reader.string(handler, "handler.path", None)
    if path is None:
        reader.fail("handler.path", "is required: the handler's .py file, relative to the project root")
    if not path.endswith(".py"):
        reader.fail("handler.path", f"must be a .py file (got {path!r})")
    spec.handler_path = reader.relative_path(path, "handler.path")

    config = handler.get("config")
    if config is None:
        config = {}
    if not isinstance(config, dict):
        reader.fail("handler.config", f"must be a mapping (got {type_name(config)})")
    try:
        # ensure_ascii=False and plain ints keep the text readable and big integers exact.
        config_json = json.dumps(config, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        reader.fail("handler.config", f"cannot be represented as JSON: {e}")
    spec.handler_config_json = config_json.encode("utf-8")

    python_path = reader.string(handler, "handler.python_path", None)
    if python_path is not None:
        spec.python_path = reader.relative_path(python_path, "handler.python_path")

    env = handler.get("env")
    if env is not None:
        if not isinstance(env, dict):
            reader.fail("handler.env", f"must be a mapping of variable names to strings (got {type_name(env)})")
        for key, value in env.items():
            if not isinstance(key, str) or not key or "=" in key or "\0" in key:
                reader.fail(f"handler.env.{key}", "is not a valid environment variable name")
            refused = reserved_env_problem(key)
            if refused:
                reader.fail(f"handler.env.{key}", refused)
            spec.env[key] = _env_value(reader, value, f"handler.env.{key}")

    log_level = reader.string(handler, "handler.log_level", "info")
    assert log_level is not None  # it has a default
    if log_level.lower() not in _LOG_LEVELS:
        reader.fail("handler.log_level", f"must be one of {', '.join(_LOG_LEVELS)} (got {log_level!r})")
    spec.log_level = log_level.lower()

    dependencies = handler.get("dependencies")
    dependencies = (
        {} if dependencies is None else reader.mapping(dependencies, "handler.dependencies", _DEPENDENCIES_KEYS)
    )
    if dependencies.get("conda") is not None:
        reader.fail("handler.dependencies.conda", "is not supported: Cortado installs pip requirements only")
    pip = reader.string(dependencies, "handler.dependencies.pip", "requirements.txt")
    shell = reader.string(dependencies, "handler.dependencies.shell", "dependencies.sh")
    assert pip is not None and shell is not None  # they have defaults
    spec.dependencies_pip = reader.relative_path(pip, "handler.dependencies.pip")
    spec.dependencies_shell = reader.relative_path(shell, "handler.dependencies.shell")

    shm_size = handler.get("shm_size")
    if shm_size is not None:
        parse_quantity_bytes(shm_size, f"{reader.filename}: {reader.label}: handler.shm_size")
        reader.notice("`handler.shm_size` is ignored: handler processes share the machine's /dev/shm")
    if reader.string(handler, "handler.image", None) is not None:
        reader.ignored("handler.image")
    for key in ("processes_per_replica", "threads_per_process"):
        count = reader.integer(handler, f"handler.{key}", 1, 0)
        if count != 1:
            reader.fail(
                f"handler.{key}",
                f"must be 1 for an AsyncAPI (got {count}); use handler.max_concurrency for concurrent requests",
            )

    spec.max_concurrency = reader.integer(handler, "handler.max_concurrency", 1, 1)
    spec.max_batch_size = reader.integer(handler, "handler.max_batch_size", 1, 1)
    batch_interval = reader.duration(handler, "handler.batch_interval", "50ms")
    assert batch_interval is not None  # it has a default
    spec.batch_interval.FromNanoseconds(batch_interval)
    timeout = reader.duration(handler, "handler.timeout", None)
    if timeout is not None:
        if timeout <= 0:
            reader.fail("handler.timeout", "must be longer than 0s (leave it out for no limit)")
        spec.timeout.FromNanoseconds(timeout)
    spec.max_retries = reader.integer(handler, "handler.max_retries", 3, 0)


def _env_value(reader: FieldReader, value: Any, path: str) -> str:
    """The text of a `handler.env` value: null is "", booleans are true/false, numbers their text."""
    # Cortex's env was map[string]string and YAML scalars became their text; write them the same way.
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    reader.fail(path, f"must be a string (got {type_name(value)})")


def _model_path(reader: FieldReader, value: Any, path: str) -> str:
    """A SavedModel's path: relative to the project (normalised), or absolute on the executors' machines."""
    if not isinstance(value, str) or not value.strip():
        reader.fail(path, f"must be a path to a SavedModel folder (got {describe(value)})")
    if "://" in value:
        reader.fail(
            path,
            f"is {value!r}, but Cortado loads models from the project folder or a path on the executors' "
            "machines, not from a bucket: download it there first",
        )
    if PurePosixPath(value.strip()).is_absolute():
        return str(PurePosixPath(value.strip()))
    return reader.relative_path(value, path)


def _parse_models(reader: FieldReader, handler: Mapping[str, Any], spec: control_pb2.ApiSpec) -> None:
    """`handler.models` of a tensorflow handler: exactly one of path, paths (named) or dir."""
    if handler.get("models") is None:
        reader.fail("handler.models", "is required for handler.type tensorflow (with path, paths or dir)")
    models = reader.mapping(handler["models"], "handler.models", _MODELS_KEYS)
    given = [key for key in ("path", "paths", "dir") if models.get(key) is not None]
    if len(given) != 1:
        found = f" (got {', '.join(given)})" if given else ""
        reader.fail("handler.models", f"must have exactly one of path, paths or dir{found}")
    spec.signature_key = reader.string(models, "handler.models.signature_key", "") or ""
    if given == ["path"]:
        spec.models.add(path=_model_path(reader, models["path"], "handler.models.path"))
    elif given == ["dir"]:
        spec.models_dir = _model_path(reader, models["dir"], "handler.models.dir")
    else:
        entries = models["paths"]
        if not isinstance(entries, list) or not entries:
            reader.fail("handler.models.paths", f"must be a non-empty list of {{name, path}} (got {describe(entries)})")
        seen: set[str] = set()
        for index, entry in enumerate(entries):
            where = f"handler.models.paths[{index}]"
            entry = reader.mapping(entry, where, _MODEL_PATH_KEYS)
            name = reader.string(entry, f"{where}.name", None)
            if not name:
                reader.fail(f"{where}.name", "is required: the model_name handlers predict with")
            if name in seen:
                reader.fail(f"{where}.name", f"'{name}' is used by another model")
            seen.add(name)
            if entry.get("path") is None:
                reader.fail(f"{where}.path", "is required: the SavedModel's folder")
            spec.models.add(
                name=name,
                path=_model_path(reader, entry["path"], f"{where}.path"),
                signature_key=reader.string(entry, f"{where}.signature_key", "") or "",
            )
