"""Projects: parse the API configuration file, read `.env`, and package the project's files."""

from __future__ import annotations

import difflib
import gzip
import io
import json
import math
import os
import re
import stat
import sys
import tarfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

import pathspec
import yaml

from cortado import webhooks
from cortado.env import SettingsError
from cortado.v1 import control_pb2

CONFIG_NAMES = ("cortado.yaml", "cortex.yaml")
MAX_PROJECT_BYTES = 32 * 1024 * 1024
MAX_BUNDLE_MEMBERS = 10_000
"""Most entries (files and folders) a bundle may hold: the scheduler and every executor unpack it."""
MAX_CONFIG_EXPANDED_BYTES = 4 * 1024 * 1024
"""Largest configuration file once YAML aliases are expanded (each value: one plus the length of its text)."""

IGNORE_FILE = ".cortexignore"
DOTENV_FILE = ".env"
ENV_PREFIX = "CORTADO_"

_KIB = 1024
_MIB = 1024 * 1024
_UINT32_MAX = 2**32 - 1
_UINT64_MAX = 2**64 - 1
_NANOS_PER_SECOND = 1_000_000_000


class ConfigError(Exception):
    """The configuration file is invalid; str() is the complete message, naming file, API and key."""


class ProjectError(Exception):
    """A problem with the project other than its configuration (files, size, `.env`, bundle)."""


@dataclass(frozen=True)
class ParsedConfig:
    """The APIs of a configuration file, defaults applied, and notices about accepted-but-ignored keys."""

    apis: list[control_pb2.ApiSpec]
    notices: list[str]


# --------------------------------------------------------------------------------------------------
# Finding and parsing the configuration file


def find_config(project_dir: Path) -> Path:
    """Return the project's configuration file: the first of cortado.yaml, cortado.yml, cortex.yaml, cortex.yml.

    Raises ProjectError when the directory does not exist or holds none of them.
    """
    if not project_dir.is_dir():
        raise ProjectError(f"{project_dir} is not a directory")
    for name in CONFIG_NAMES:
        stem = name.removesuffix(".yaml")
        for candidate in (name, f"{stem}.yml"):
            path = project_dir / candidate
            if path.is_file():
                return path
    raise ProjectError(f"no {' or '.join(CONFIG_NAMES)} found in {project_dir}")


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as the strings they were written as.

    Cortex (Go) read unquoted dates in `handler.config` as strings; PyYAML would make datetime objects that
    JSON cannot hold.
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    try:
        return int(yaml.SafeLoader.construct_yaml_int(loader, node))
    except ValueError:  # past Python's int-to-str digit limit
        digits = sys.get_int_max_str_digits()
        problem = f"an integer of more than {digits} digits cannot be read; quote it to keep it as text"
        raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from None


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _expanded_size(root: yaml.Node, filename: str) -> tuple[int, bool]:
    """(size of the document with every alias expanded, whether it uses aliases), before anything is built.

    Each node counts one plus the length of its text, and an aliased node counts again each time an alias repeats
    it, so `&a [..]`, `*a`, `*a` ... nested a few levels deep (a "billion laughs") is measured without being expanded.
    Raises ConfigError for an alias inside the node it refers to (a configuration cannot contain itself).
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()
    aliased = False

    def size(node: yaml.Node) -> int:
        nonlocal aliased
        key = id(node)
        if key in sizes:
            aliased = True
            return sizes[key]
        if key in active:
            raise ConfigError(
                f"{filename}: line {node.start_mark.line + 1}: an alias refers to a value that contains it; "
                "a configuration cannot contain itself"
            )
        active.add(key)
        if isinstance(node, yaml.ScalarNode):
            total = 1 + len(node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(item) for item in node.value)
        else:
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        active.discard(key)
        sizes[key] = total
        return total

    return size(root), aliased


def _load_yaml(text: bytes | str, filename: str) -> Any:
    """The YAML document, its size checked with aliases expanded before any Python object is built."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size, aliased = _expanded_size(node, filename)
        if size > MAX_CONFIG_EXPANDED_BYTES:
            limit = human_size(MAX_CONFIG_EXPANDED_BYTES)
            if aliased:
                raise ConfigError(
                    f"{filename}: YAML aliases (*name) expand the configuration to more than {limit}, the limit "
                    "(an alias counts the whole value it repeats, each time it is used); write the values out, or "
                    "keep large data in a file of the project"
                )
            raise ConfigError(
                f"{filename}: the configuration is larger than {limit}, the limit; keep large data in a file of the "
                "project"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def parse_config(text: bytes | str, filename: str, webhook_policy: webhooks.UrlPolicy | None = None) -> ParsedConfig:
    """Parse a cortado.yaml / cortex.yaml (a YAML list of APIs) into ApiSpecs with every default applied.

    `filename` is only used in messages. Returns the APIs in file order (version, bundle and deploy time left
    unset) and notices about keys that are accepted but ignored. Raises ConfigError, whose message names the
    file, the API and the key path, for anything invalid. `webhook.url` must pass webhook_policy (the one the
    `CORTADO_WEBHOOK_*` settings make when None).
    """
    try:
        # _Loader is a SafeLoader: no arbitrary Python objects.
        document = _load_yaml(text, filename)
    except yaml.YAMLError as e:
        raise ConfigError(f"{filename}: not valid YAML: {_one_line(str(e))}") from e
    except RecursionError:
        raise ConfigError(f"{filename}: not valid YAML: it is nested too deeply") from None
    if document is None:
        raise ConfigError(f"{filename}: the file is empty; it must be a YAML list of APIs (`- name: ...`)")
    if isinstance(document, dict):
        raise ConfigError(
            f"{filename}: must be a YAML list of APIs, got a single mapping; start the API with `- ` (`- name: ...`)"
        )
    if not isinstance(document, list):
        raise ConfigError(f"{filename}: must be a YAML list of APIs, got {_type_name(document)}")
    if not document:
        raise ConfigError(f"{filename}: the list of APIs is empty")

    apis: list[control_pb2.ApiSpec] = []
    notices: list[str] = []
    names: dict[str, int] = {}
    endpoints: dict[str, str] = {}
    for index, entry in enumerate(document):
        parser = _ApiParser(filename, index, notices, webhook_policy)
        spec = parser.parse(entry)
        if spec.name in names:
            parser.fail("name", f"'{spec.name}' is already used by the API at index {names[spec.name]}")
        names[spec.name] = index
        if spec.endpoint in endpoints:
            parser.fail("networking.endpoint", f"'{spec.endpoint}' is already used by api '{endpoints[spec.endpoint]}'")
        endpoints[spec.endpoint] = spec.name
        apis.append(spec)
    return ParsedConfig(apis=apis, notices=notices)


_NAME_RE = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_NAME_MAX = 42
_OTHER_CORTEX_KINDS = ("RealtimeAPI", "BatchAPI", "TaskAPI", "TrafficSplitter")
_LOG_LEVELS = ("debug", "info", "warning", "error")
_ENDPOINT_RE = re.compile(r"/[A-Za-z0-9._~/-]*")

_TOP_KEYS = (
    "name",
    "kind",
    "handler",
    "compute",
    "autoscaling",
    "update_strategy",
    "networking",
    "queue",
    "results",
    "webhook",
    "chaining",
)
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
_COMPUTE_KEYS = ("cpu", "mem", "gpu", "inf", "node_groups")
_AUTOSCALING_KEYS = (
    "min_replicas",
    "max_replicas",
    "init_replicas",
    "target_replica_concurrency",
    "target_in_flight",
    "max_replica_concurrency",
    "window",
    "downscale_stabilization_period",
    "upscale_stabilization_period",
    "max_downscale_factor",
    "max_upscale_factor",
    "downscale_tolerance",
    "upscale_tolerance",
)
_UPDATE_STRATEGY_KEYS = ("max_surge", "max_unavailable")
_NETWORKING_KEYS = ("endpoint",)
_QUEUE_KEYS = ("max_length",)
_RESULTS_KEYS = ("retention",)
_WEBHOOK_KEYS = ("url",)
_CHAINING_KEYS = ("allow",)

# Keys of older Cortex releases, so the unknown-key error can say what became of them.
_RENAMED = {"predictor": "handler (Cortex v0.34 renamed `predictor` to `handler`)"}


class _ApiParser:
    """Validates one API entry; every error carries the file, the API and the key path."""

    def __init__(
        self, filename: str, index: int, notices: list[str], webhook_policy: webhooks.UrlPolicy | None = None
    ) -> None:
        self.filename = filename
        self.index = index
        self.label = f"api at index {index}"
        self.notices = notices
        self.webhook_policy = webhook_policy

    def fail(self, path: str, message: str) -> NoReturn:
        raise ConfigError(f"{self.filename}: {self.label}: {path} {message}")

    def notice(self, message: str) -> None:
        self.notices.append(f"{self.filename}: {self.label}: {message}")

    def ignored(self, path: str) -> None:
        self.notice(f"`{path}` only mattered to Cortex's cluster; it is ignored")

    # -- structure

    def section(self, api: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        """Return `api[key]` as a mapping ({} when absent or null) after refusing unknown keys."""
        value = api.get(key)
        if value is None:
            return {}
        return self.mapping(value, key, allowed)

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(path, f"must be a mapping (got {_type_name(value)})")
        prefix = f"{path}." if path else ""
        for key in value:
            if not isinstance(key, str):
                self.fail(f"{prefix}{key!r}", "is not a valid key: keys must be strings")
            if key not in allowed:
                hint = _RENAMED.get(key)
                if hint is None:
                    close = difflib.get_close_matches(key, allowed, n=1)
                    hint = f"{prefix}{close[0]}" if close else None
                suffix = f" (did you mean {hint}?)" if hint else f"; known keys: {', '.join(allowed)}"
                self.fail(f"{prefix}{key}", f"is not a known key{suffix}")
        return value

    # -- scalar readers; a null value means the default, like an absent key

    def string(self, section: Mapping[str, Any], path: str, default: str | None) -> str | None:
        value = section.get(path.rsplit(".", 1)[-1])
        if value is None:
            return default
        if not isinstance(value, str):
            self.fail(path, f"must be a string (got {_describe(value)})")
        return value

    def integer(
        self, section: Mapping[str, Any], path: str, default: int, minimum: int, maximum: int = _UINT32_MAX
    ) -> int:
        value = section.get(path.rsplit(".", 1)[-1])
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"must be an integer (got {_describe(value)})")
        if value < minimum:
            self.fail(path, f"must be at least {minimum} (got {value})")
        if value > maximum:
            self.fail(path, f"must be at most {maximum} (got {value})")
        return value

    def number(self, section: Mapping[str, Any], path: str, default: float) -> float:
        value = section.get(path.rsplit(".", 1)[-1])
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.fail(path, f"must be a number (got {_describe(value)})")
        return float(value)

    def duration(self, section: Mapping[str, Any], path: str, default: str | None) -> int | None:
        """Return the duration at `path` in nanoseconds, or None when absent and without default."""
        value = section.get(path.rsplit(".", 1)[-1])
        if value is None:
            if default is None:
                return None
            value = default
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.fail(path, f"must be a duration like 50ms, 10s, 5m, 1h or 7d (got {_describe(value)})")
        return round(parse_duration(value, f"{self.filename}: {self.label}: {path}") * _NANOS_PER_SECOND)

    def relative_path(self, value: str, path: str) -> str:
        """Normalise a project-relative path, refusing absolute paths and `..`."""
        pure = PurePosixPath(value.strip())
        if not value.strip() or pure.is_absolute() or ".." in pure.parts or "\\" in value:
            self.fail(path, f"must be a path relative to the project root (got {value!r})")
        normal = str(pure)
        return "" if normal == "." else normal

    # -- the API

    def parse(self, entry: Any) -> control_pb2.ApiSpec:
        if not isinstance(entry, dict):
            raise ConfigError(
                f"{self.filename}: {self.label}: each API must be a mapping with name, kind and handler "
                f"(got {_type_name(entry)})"
            )
        api = entry
        spec = control_pb2.ApiSpec()
        # The name first, so every later message can call the API by its name.
        name = api.get("name")
        if name is None:
            self.fail("name", "is required")
        if not isinstance(name, str):
            self.fail("name", f"must be a string (got {_describe(name)})")
        if len(name) > _NAME_MAX or not _NAME_RE.fullmatch(name):
            self.fail(
                "name",
                "must be a DNS-1035 label: lower-case letters, digits and '-', starting with a letter, "
                f"not ending with '-', at most {_NAME_MAX} characters (got {name!r})",
            )
        self.label = f"api '{name}'"
        spec.name = name
        self.mapping(api, "", _TOP_KEYS)

        kind = api.get("kind")
        if kind is None:
            self.fail("kind", "is required and must be AsyncAPI")
        if kind in _OTHER_CORTEX_KINDS:
            self.fail("kind", f"is {kind}, but Cortado only supports AsyncAPI")
        if kind != "AsyncAPI":
            self.fail("kind", f"must be AsyncAPI (got {_describe(kind)})")

        self.parse_handler(api, spec)
        self.parse_compute(api, spec)
        self.parse_autoscaling(api, spec)

        update_strategy = self.section(api, "update_strategy", _UPDATE_STRATEGY_KEYS)
        for key in _UPDATE_STRATEGY_KEYS:
            value = update_strategy.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, str | int)):
                self.fail(f"update_strategy.{key}", f"must be a number or a percentage (got {_describe(value)})")
        if any(update_strategy.get(key) is not None for key in _UPDATE_STRATEGY_KEYS):
            self.ignored("update_strategy")

        networking = self.section(api, "networking", _NETWORKING_KEYS)
        endpoint = self.string(networking, "networking.endpoint", None)
        spec.endpoint = self.endpoint(endpoint) if endpoint is not None else f"/{name}"

        queue = self.section(api, "queue", _QUEUE_KEYS)
        spec.queue_max_length = self.integer(queue, "queue.max_length", 100_000, 1, _UINT64_MAX)

        results = self.section(api, "results", _RESULTS_KEYS)
        retention = self.duration(results, "results.retention", "7d")
        assert retention is not None  # it has a default
        if retention <= 0:
            self.fail("results.retention", "must be longer than 0s")
        spec.retention.FromNanoseconds(retention)

        webhook = self.section(api, "webhook", _WEBHOOK_KEYS)
        url = self.string(webhook, "webhook.url", None)
        if url is not None:
            spec.webhook_url = self.webhook_url(url)

        chaining = self.section(api, "chaining", _CHAINING_KEYS)
        allow = chaining.get("allow")
        if allow is not None:
            if not isinstance(allow, list) or not allow:
                self.fail("chaining.allow", f"must be a non-empty list of API names (got {_describe(allow)})")
            for callee in allow:
                if not isinstance(callee, str) or len(callee) > _NAME_MAX or not _NAME_RE.fullmatch(callee):
                    self.fail(
                        "chaining.allow",
                        f"must list API names (lowercase letters, digits and '-'), not {_describe(callee)}",
                    )
            spec.chain_allow.extend(sorted(set(allow)))
        return spec

    def model_path(self, value: Any, path: str) -> str:
        """A SavedModel's path: relative to the project (normalised), or absolute on the executors' machines."""
        if not isinstance(value, str) or not value.strip():
            self.fail(path, f"must be a path to a SavedModel folder (got {_describe(value)})")
        if "://" in value:
            self.fail(
                path,
                f"is {value!r}, but Cortado loads models from the project folder or a path on the executors' "
                "machines, not from a bucket: download it there first",
            )
        if PurePosixPath(value.strip()).is_absolute():
            return str(PurePosixPath(value.strip()))
        return self.relative_path(value, path)

    def parse_models(self, handler: Mapping[str, Any], spec: control_pb2.ApiSpec) -> None:
        """`handler.models` of a tensorflow handler: exactly one of path, paths (named) or dir."""
        if handler.get("models") is None:
            self.fail("handler.models", "is required for handler.type tensorflow (with path, paths or dir)")
        models = self.mapping(handler["models"], "handler.models", _MODELS_KEYS)
        given = [key for key in ("path", "paths", "dir") if models.get(key) is not None]
        if len(given) != 1:
            found = f" (got {', '.join(given)})" if given else ""
            self.fail("handler.models", f"must have exactly one of path, paths or dir{found}")
        spec.signature_key = self.string(models, "handler.models.signature_key", "") or ""
        if given == ["path"]:
            spec.models.add(path=self.model_path(models["path"], "handler.models.path"))
        elif given == ["dir"]:
            spec.models_dir = self.model_path(models["dir"], "handler.models.dir")
        else:
            entries = models["paths"]
            if not isinstance(entries, list) or not entries:
                self.fail(
                    "handler.models.paths", f"must be a non-empty list of {{name, path}} (got {_describe(entries)})"
                )
            seen: set[str] = set()
            for index, entry in enumerate(entries):
                where = f"handler.models.paths[{index}]"
                entry = self.mapping(entry, where, _MODEL_PATH_KEYS)
                name = self.string(entry, f"{where}.name", None)
                if not name:
                    self.fail(f"{where}.name", "is required: the model_name handlers predict with")
                if name in seen:
                    self.fail(f"{where}.name", f"'{name}' is used by another model")
                seen.add(name)
                if entry.get("path") is None:
                    self.fail(f"{where}.path", "is required: the SavedModel's folder")
                spec.models.add(
                    name=name,
                    path=self.model_path(entry["path"], f"{where}.path"),
                    signature_key=self.string(entry, f"{where}.signature_key", "") or "",
                )

    def webhook_url(self, value: str) -> str:
        """The URL normalised, if the operator's policy lets webhooks go there (cortado.webhooks.check_url)."""
        policy = self.webhook_policy
        if policy is None:
            try:
                policy = webhooks.UrlPolicy.from_env()
            except SettingsError as exc:
                self.fail("webhook.url", f"cannot be checked: {exc}")
        try:
            return webhooks.check_url(value, policy)
        except webhooks.WebhookUrlError as exc:
            self.fail("webhook.url", f"is refused: {exc}")

    def endpoint(self, value: str) -> str:
        # Cortex canonicalised endpoints the same way: one leading slash, no trailing slash.
        endpoint = "/" + value.strip().strip("/")
        if not _ENDPOINT_RE.fullmatch(endpoint) or "//" in endpoint:
            self.fail(
                "networking.endpoint",
                f"must be a URL path of letters, digits, '-', '.', '_', '~' and '/' (got {value!r})",
            )
        if endpoint == "/" or "/" in endpoint[1:]:
            # The API answers POST /<endpoint> and GET /<endpoint>/<id>: one segment keeps the two apart.
            self.fail("networking.endpoint", f"must be a single path segment such as /my-api (got {value!r})")
        return endpoint

    def parse_handler(self, api: Mapping[str, Any], spec: control_pb2.ApiSpec) -> None:
        if api.get("handler") is None:
            self.fail("handler", "is required (with at least type: python and path: <file>.py)")
        handler = self.section(api, "handler", _HANDLER_KEYS)

        handler_type = handler.get("type")
        if handler_type is None:
            self.fail("handler.type", "is required and must be python or tensorflow")
        if handler_type not in ("python", "tensorflow"):
            self.fail("handler.type", f"must be python or tensorflow (got {_describe(handler_type)})")
        spec.handler_type = handler_type
        if handler_type == "tensorflow":
            self.parse_models(handler, spec)
        elif handler.get("models") is not None:
            self.fail("handler.models", "is only for handler.type tensorflow (a python handler loads its own models)")
        if handler.get("tensorflow_serving_image") is not None:
            self.notice(
                "`handler.tensorflow_serving_image` has no effect: Cortado runs SavedModels in the handler's own "
                "process, with TensorFlow's runtime"
            )

        path = self.string(handler, "handler.path", None)
        if path is None:
            self.fail("handler.path", "is required: the handler's .py file, relative to the project root")
        if not path.endswith(".py"):
            self.fail("handler.path", f"must be a .py file (got {path!r})")
        spec.handler_path = self.relative_path(path, "handler.path")

        config = handler.get("config")
        if config is None:
            config = {}
        if not isinstance(config, dict):
            self.fail("handler.config", f"must be a mapping (got {_type_name(config)})")
        try:
            # ensure_ascii=False and plain ints keep the text readable and big integers exact.
            config_json = json.dumps(config, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as e:
            self.fail("handler.config", f"cannot be represented as JSON: {e}")
        spec.handler_config_json = config_json.encode("utf-8")

        python_path = self.string(handler, "handler.python_path", None)
        if python_path is not None:
            spec.python_path = self.relative_path(python_path, "handler.python_path")

        env = handler.get("env")
        if env is not None:
            if not isinstance(env, dict):
                self.fail("handler.env", f"must be a mapping of variable names to strings (got {_type_name(env)})")
            for key, value in env.items():
                if not isinstance(key, str) or not key or "=" in key or "\0" in key:
                    self.fail(f"handler.env.{key}", "is not a valid environment variable name")
                refused = reserved_env_problem(key)
                if refused:
                    self.fail(f"handler.env.{key}", refused)
                spec.env[key] = self.env_value(value, f"handler.env.{key}")

        log_level = self.string(handler, "handler.log_level", "info")
        assert log_level is not None  # it has a default
        if log_level.lower() not in _LOG_LEVELS:
            self.fail("handler.log_level", f"must be one of {', '.join(_LOG_LEVELS)} (got {log_level!r})")
        spec.log_level = log_level.lower()

        dependencies = handler.get("dependencies")
        dependencies = (
            {} if dependencies is None else self.mapping(dependencies, "handler.dependencies", _DEPENDENCIES_KEYS)
        )
        if dependencies.get("conda") is not None:
            self.fail("handler.dependencies.conda", "is not supported: Cortado installs pip requirements only")
        pip = self.string(dependencies, "handler.dependencies.pip", "requirements.txt")
        shell = self.string(dependencies, "handler.dependencies.shell", "dependencies.sh")
        assert pip is not None and shell is not None  # they have defaults
        spec.dependencies_pip = self.relative_path(pip, "handler.dependencies.pip")
        spec.dependencies_shell = self.relative_path(shell, "handler.dependencies.shell")

        shm_size = handler.get("shm_size")
        if shm_size is not None:
            parse_quantity_bytes(shm_size, f"{self.filename}: {self.label}: handler.shm_size")
            self.notice("`handler.shm_size` is ignored: handler processes share the machine's /dev/shm")
        if self.string(handler, "handler.image", None) is not None:
            self.ignored("handler.image")
        for key in ("processes_per_replica", "threads_per_process"):
            count = self.integer(handler, f"handler.{key}", 1, 0)
            if count != 1:
                self.fail(
                    f"handler.{key}",
                    f"must be 1 for an AsyncAPI (got {count}); use handler.max_concurrency for concurrent requests",
                )

        spec.max_concurrency = self.integer(handler, "handler.max_concurrency", 1, 1)
        spec.max_batch_size = self.integer(handler, "handler.max_batch_size", 1, 1)
        batch_interval = self.duration(handler, "handler.batch_interval", "50ms")
        assert batch_interval is not None  # it has a default
        spec.batch_interval.FromNanoseconds(batch_interval)
        timeout = self.duration(handler, "handler.timeout", None)
        if timeout is not None:
            if timeout <= 0:
                self.fail("handler.timeout", "must be longer than 0s (leave it out for no limit)")
            spec.timeout.FromNanoseconds(timeout)
        spec.max_retries = self.integer(handler, "handler.max_retries", 3, 0)

    def env_value(self, value: Any, path: str) -> str:
        # Cortex's env was map[string]string and YAML scalars became their text; write them the same way.
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str | int | float):
            return str(value)
        self.fail(path, f"must be a string (got {_type_name(value)})")

    def parse_compute(self, api: Mapping[str, Any], spec: control_pb2.ApiSpec) -> None:
        compute = self.section(api, "compute", _COMPUTE_KEYS)
        cpu = compute.get("cpu")
        cpu_millis = 200 if cpu is None else self.cpu_millis(cpu)
        if cpu_millis < 20:
            self.fail("compute.cpu", f"must be at least 20m (got {cpu!r})")
        if cpu_millis > _UINT32_MAX:
            self.fail("compute.cpu", f"is too large (got {cpu!r})")
        spec.compute.cpu_millis = cpu_millis

        mem = compute.get("mem")
        if mem is not None:
            mem_bytes = parse_quantity_bytes(mem, f"{self.filename}: {self.label}: compute.mem")
            if mem_bytes < 20 * _MIB:
                self.fail("compute.mem", f"must be at least 20Mi (got {mem!r})")
            if mem_bytes > _UINT64_MAX:
                self.fail("compute.mem", f"is too large (got {mem!r})")
            spec.compute.mem_bytes = mem_bytes

        spec.compute.gpu = self.integer(compute, "compute.gpu", 0, 0)
        inf = self.integer(compute, "compute.inf", 0, 0)
        if inf > 0:
            self.fail("compute.inf", f"asks for Inferentia chips, which Cortado does not support (got {inf})")
        node_groups = compute.get("node_groups")
        if node_groups is not None:
            if not isinstance(node_groups, list) or not all(isinstance(group, str) for group in node_groups):
                self.fail("compute.node_groups", f"must be a list of strings (got {_describe(node_groups)})")
            self.ignored("compute.node_groups")

    def cpu_millis(self, value: Any) -> int:
        """Read a Kubernetes CPU quantity (1, 0.5, "1", "500m") as thousandths of a core, rounded up."""
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.fail("compute.cpu", f"must be a number of cores or millicores like 500m (got {_describe(value)})")
        text = str(value).strip()
        scale = Decimal(1000)
        if text.endswith("m"):
            text, scale = text[:-1], Decimal(1)
        try:
            amount = Decimal(text)
        except InvalidOperation:
            amount = Decimal("NaN")
        if not amount.is_finite() or amount < 0:
            self.fail("compute.cpu", f"must be a number of cores or millicores like 500m (got {value!r})")
        return math.ceil(amount * scale)

    def parse_autoscaling(self, api: Mapping[str, Any], spec: control_pb2.ApiSpec) -> None:
        section = self.section(api, "autoscaling", _AUTOSCALING_KEYS)
        scaling = spec.autoscaling
        scaling.min_replicas = self.integer(section, "autoscaling.min_replicas", 1, 0)
        scaling.max_replicas = self.integer(section, "autoscaling.max_replicas", 100, 1)
        if scaling.max_replicas < scaling.min_replicas:
            self.fail(
                "autoscaling.max_replicas",
                f"must be at least min_replicas ({scaling.min_replicas}) (got {scaling.max_replicas})",
            )
        scaling.init_replicas = self.integer(section, "autoscaling.init_replicas", scaling.min_replicas, 0)
        if not scaling.min_replicas <= scaling.init_replicas <= scaling.max_replicas:
            self.fail(
                "autoscaling.init_replicas",
                f"must be between min_replicas ({scaling.min_replicas}) and max_replicas ({scaling.max_replicas}) "
                f"(got {scaling.init_replicas})",
            )

        # v0.35 called it target_replica_concurrency; later Cortex releases target_in_flight.
        old, new = section.get("target_replica_concurrency"), section.get("target_in_flight")
        if old is not None and new is not None:
            self.fail(
                "autoscaling.target_in_flight",
                "and autoscaling.target_replica_concurrency are two spellings of one setting; give only one",
            )
        target_key = "autoscaling.target_replica_concurrency" if old is not None else "autoscaling.target_in_flight"
        target = self.number(section, target_key, 1.0)
        if target <= 0:
            self.fail(target_key, f"must be greater than 0 (got {_number(target)})")
        scaling.target_in_flight = target
        # Cortex's meaning: the most requests one replica holds, running or waiting. A Cortado replica holds at most
        # replica_holds_at_most(...) (the rest wait in the API's queue), so a value at least that is honoured as it
        # stands, and a smaller one cannot be: it is refused rather than silently exceeded.
        held = replica_holds_at_most(spec.max_concurrency, spec.max_batch_size)
        limit = self.integer(section, "autoscaling.max_replica_concurrency", 1024, 1, 30000)
        if section.get("max_replica_concurrency") is None:
            limit = min(max(limit, held), _UINT32_MAX)
        elif limit < held:
            self.fail(
                "autoscaling.max_replica_concurrency",
                f"must be at least {held} (got {limit}): a replica of this API holds up to {held} requests, the "
                f"{held // 2} its handler works on at once (handler.max_concurrency {spec.max_concurrency} x "
                f"handler.max_batch_size {spec.max_batch_size}) and as many fetched ahead; lower those to hold fewer",
            )
        scaling.max_replica_concurrency = limit

        window = self.duration(section, "autoscaling.window", "60s")
        assert window is not None  # it has a default
        if window < 10 * _NANOS_PER_SECOND or window % (10 * _NANOS_PER_SECOND):
            self.fail(
                "autoscaling.window",
                f"must be at least 10s and a multiple of 10s (got {section.get('window')!r})",
            )
        scaling.window.FromNanoseconds(window)
        down_period = self.duration(section, "autoscaling.downscale_stabilization_period", "5m")
        up_period = self.duration(section, "autoscaling.upscale_stabilization_period", "1m")
        assert down_period is not None and up_period is not None  # they have defaults
        scaling.downscale_stabilization_period.FromNanoseconds(down_period)
        scaling.upscale_stabilization_period.FromNanoseconds(up_period)

        checks: tuple[tuple[str, float, Callable[[float], bool], str], ...] = (
            ("max_downscale_factor", 0.75, lambda v: 0 <= v < 1, "must be at least 0 and less than 1"),
            ("max_upscale_factor", 1.5, lambda v: v > 1, "must be greater than 1"),
            ("downscale_tolerance", 0.05, lambda v: 0 <= v < 1, "must be at least 0 and less than 1"),
            ("upscale_tolerance", 0.05, lambda v: v >= 0, "must be at least 0"),
        )
        for key, default, valid, rule in checks:
            value = self.number(section, f"autoscaling.{key}", default)
            if not valid(value):
                self.fail(f"autoscaling.{key}", f"{rule} (got {_number(value)})")
            setattr(scaling, key, value)


def replica_holds_at_most(max_concurrency: int, max_batch_size: int) -> int:
    """The most requests one replica holds at once: the executor feeds its handler process up to max_concurrency x
    max_batch_size requests (max_batch_size only when the handler batches) and fetches as many ahead, no more.

    `autoscaling.max_replica_concurrency` (Cortex's bound on a replica's running and waiting requests) is honoured
    by refusing values below this.
    """
    return 2 * max(1, max_concurrency) * max(1, max_batch_size)


# --------------------------------------------------------------------------------------------------
# Durations and quantities

_DURATION_UNITS = {
    "ns": Decimal("1e-9"),
    "us": Decimal("1e-6"),
    "µs": Decimal("1e-6"),
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
    "d": Decimal(86400),
}
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d)")
_NUMBER_RE = re.compile(r"\d+(?:\.\d*)?|\.\d+")


def parse_duration(value: str | int | float, where: str) -> float:
    """Return a duration in seconds: "50ms", "10s", "5m", "1h", "7d", "1h30m", or a bare number of seconds.

    Units are ns, us, ms, s, m, h and d, as in Go plus days. Raises ConfigError, prefixed with `where`, for
    anything else, negative values included.
    """
    problem = f"{where} must be a duration like 50ms, 10s, 5m, 1h or 7d (got {value!r})"
    if isinstance(value, bool):
        raise ConfigError(problem)
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ConfigError(problem)
        return float(value)
    text = value.strip()
    if _NUMBER_RE.fullmatch(text):
        return float(text)
    total = Decimal(0)
    position = 0
    for match in _DURATION_PART_RE.finditer(text):
        if match.start() != position:
            break
        total += Decimal(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if not text or position != len(text):
        raise ConfigError(problem)
    return float(total)


_QUANTITY_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E)?")
_QUANTITY_SUFFIXES = {
    "": 1,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}


def parse_quantity_bytes(value: Any, where: str) -> int:
    """Return a Kubernetes memory quantity ("512Mi", "1G", "1.5Gi", 1073741824) in bytes, rounded up.

    Raises ConfigError, prefixed with `where`, when it is not one.
    """
    problem = f"{where} must be a size in bytes, optionally with a suffix Ki, Mi, Gi, Ti, K, M, G or T (got {value!r})"
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(problem)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(problem)
    match = _QUANTITY_RE.fullmatch(str(value).strip())
    if match is None:
        raise ConfigError(problem)
    return math.ceil(Decimal(match.group(1)) * _QUANTITY_SUFFIXES[match.group(2) or ""])


# --------------------------------------------------------------------------------------------------
# .env

_ENV_LINE_RE = re.compile(r"(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)")

RESERVED_ENV_NAMES = ("PROMETHEUS_MULTIPROC_DIR",)
"""Variables outside the CORTADO_ prefix that the executor sets for the handler process and a project may not."""


def reserved_env_problem(name: str) -> str | None:
    """Why a project may not set the environment variable `name` (handler.env or .env), or None when it may."""
    if name.startswith(ENV_PREFIX):
        return f"is refused: variables starting with {ENV_PREFIX} are Cortado's"
    if name in RESERVED_ENV_NAMES:
        return "is refused: Cortado sets it (the handler's metrics are collected there)"
    return None


def parse_dotenv(text: str, filename: str = DOTENV_FILE) -> dict[str, str]:
    """Parse `VARIABLE=value` lines the way bash would source them, for the simple cases.

    Blank lines and `#` comments are skipped, a leading `export ` is allowed, quotes around (parts of) the
    value are removed, and an unquoted `#` after whitespace starts a comment. Variables are not expanded.
    A later line wins over an earlier one. Raises ProjectError naming the file and line for a malformed line, or
    for a variable Cortado sets itself (`CORTADO_*`, `PROMETHEUS_MULTIPROC_DIR`), as handler.env refuses them.
    """
    variables: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _ENV_LINE_RE.fullmatch(line)
        if match is None:
            raise ProjectError(f"{filename} line {number}: expected VARIABLE=value, got {line!r}")
        refused = reserved_env_problem(match.group(1))
        if refused:
            raise ProjectError(f"{filename} line {number}: {match.group(1)} {refused}")
        try:
            variables[match.group(1)] = _shell_word(match.group(2))
        except ValueError as e:
            raise ProjectError(f"{filename} line {number}: {e} in {line!r}") from e
    return variables


def _shell_word(text: str) -> str:
    """Return the value of one shell word: quotes removed, backslash escapes applied; ValueError otherwise."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise ValueError("unterminated single quote")
            out.append(text[i + 1 : end])
            i = end + 1
        elif char == '"':
            i += 1
            while True:
                if i >= len(text):
                    raise ValueError("unterminated double quote")
                char = text[i]
                if char == '"':
                    i += 1
                    break
                # Inside double quotes bash only treats these characters after a backslash as escaped.
                if char == "\\" and i + 1 < len(text) and text[i + 1] in '\\"$`':
                    out.append(text[i + 1])
                    i += 2
                else:
                    out.append(char)
                    i += 1
        elif char == "\\":
            if i + 1 >= len(text):
                raise ValueError("a trailing backslash (line continuation) is not supported")
            out.append(text[i + 1])
            i += 2
        elif char in " \t":
            rest = text[i:].lstrip(" \t")
            if rest and not rest.startswith("#"):
                raise ValueError("unquoted space in the value; put the value in quotes")
            break
        else:
            out.append(char)
            i += 1
    return "".join(out)


# --------------------------------------------------------------------------------------------------
# Project files and bundles

_SKIPPED_SUFFIXES = (".pyc", ".pyo", ".pyd")


def collect_files(project_dir: Path, config_name: str) -> list[tuple[str, int]]:
    """Return (relative posix path, size in bytes) of every file that belongs in the bundle, sorted by path.

    Left out: `*.pyc`, `*.pyo`, `*.pyd`, `__pycache__/`, files and folders whose name starts with `.` (except
    the top-level `.env`), the configuration file `config_name`, and whatever the top-level `.cortexignore`
    excludes (gitignore semantics: a file in an excluded folder cannot be re-included). Symbolic links are
    followed when they point inside the project and skipped otherwise.
    """
    root = project_dir.resolve()
    spec = _ignore_spec(root)
    return sorted(_walk(root, root, "", config_name, spec, frozenset({root})))


def _ignore_spec(root: Path) -> pathspec.GitIgnoreSpec | None:
    path = root / IGNORE_FILE
    if not path.is_file():
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ProjectError(f"cannot read {IGNORE_FILE}: {e}") from e
    return pathspec.GitIgnoreSpec.from_lines(lines)


def _walk(
    root: Path,
    directory: Path,
    prefix: str,
    config_name: str,
    spec: pathspec.GitIgnoreSpec | None,
    ancestors: frozenset[Path],
) -> Iterator[tuple[str, int]]:
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError as e:
        raise ProjectError(f"cannot read {directory}: {e}") from e
    for entry in entries:
        relative = f"{prefix}{entry.name}"
        if entry.name.startswith(".") and relative != DOTENV_FILE:
            continue
        path = Path(entry.path)
        if entry.is_symlink():
            try:
                target = path.resolve(strict=True)
            except (OSError, RuntimeError):
                continue  # broken or looping link
            if not target.is_relative_to(root):
                continue
        else:
            target = path
        try:
            info = target.stat()
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode):
            if entry.name == "__pycache__" or (spec is not None and spec.match_file(f"{relative}/")):
                continue
            real = target.resolve()
            if real in ancestors:
                continue  # a link back up the tree would recurse forever
            yield from _walk(root, target, f"{relative}/", config_name, spec, ancestors | {real})
        elif stat.S_ISREG(info.st_mode):
            if entry.name.endswith(_SKIPPED_SUFFIXES) or relative == config_name:
                continue
            if spec is not None and spec.match_file(relative):
                continue
            yield relative, info.st_size


def check_project_files(config: ParsedConfig, files: list[tuple[str, int]], config_name: str) -> None:
    """Check that every API's handler file and python_path folder are among the bundled `files`.

    `files` is what collect_files returned. Raises ProjectError naming the file, the API and the missing path.
    """
    names = {name for name, _ in files}
    folders = {str(parent) for name in names for parent in PurePosixPath(name).parents}
    for spec in config.apis:
        where = f"{config_name}: api '{spec.name}'"
        if spec.handler_path not in names:
            raise ProjectError(
                f"{where}: handler.path {spec.handler_path!r} is not in the project "
                f"(hidden files, __pycache__ and what {IGNORE_FILE} excludes are left out)"
            )
        if spec.python_path and spec.python_path not in folders:
            raise ProjectError(f"{where}: handler.python_path {spec.python_path!r} is not a folder of the project")


def human_size(size: int) -> str:
    """Return a byte count in binary units with one decimal: "512 B", "3.4 KiB", "38.0 MiB"."""
    if size < _KIB:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def pack_project(project_dir: Path, config_name: str) -> bytes:
    """Return the project's files (those of collect_files) as a gzip-compressed tar, paths relative to the root.

    Owners are cleared and permissions normalised to 0644/0755, so the same files give the same archive.
    Raises ProjectError when there are more than MAX_BUNDLE_MEMBERS files, or when they total more than
    MAX_PROJECT_BYTES (naming the largest ones).
    """
    files = collect_files(project_dir, config_name)
    if len(files) > MAX_BUNDLE_MEMBERS:
        raise ProjectError(
            f"project has {len(files)} files, over the limit of {MAX_BUNDLE_MEMBERS}; "
            f"add a {IGNORE_FILE} to leave files out"
        )
    total = sum(size for _, size in files)
    if total > MAX_PROJECT_BYTES:
        largest = sorted(files, key=lambda item: (-item[1], item[0]))[:5]
        listed = ", ".join(f"{name} ({human_size(size)})" for name, size in largest)
        raise ProjectError(
            f"project is {human_size(total)}, over the {MAX_PROJECT_BYTES // _MIB} MiB limit; "
            f"largest files: {listed}; add a {IGNORE_FILE} to leave files out"
        )
    root = project_dir.resolve()
    buffer = io.BytesIO()
    # mtime=0 in the gzip header keeps the archive's bytes (and so its SHA-256) stable across packs.
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, _ in files:
            try:
                with open(root / name, "rb") as handle:
                    info = os.fstat(handle.fileno())
                    member = tarfile.TarInfo(name)
                    member.size = info.st_size
                    member.mtime = int(info.st_mtime)
                    member.mode = 0o755 if info.st_mode & 0o111 else 0o644
                    tar.addfile(member, handle)
            except OSError as e:
                raise ProjectError(f"cannot read {name}: {e}") from e
    return buffer.getvalue()


_MEMBER_KINDS = {
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.LNKTYPE: "a hard link",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a FIFO",
    tarfile.CONTTYPE: "a contiguous file",
    tarfile.GNUTYPE_SPARSE: "a sparse file",
}
_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE)
_COPY_CHUNK = 1024 * 1024


def _member_path(member: tarfile.TarInfo) -> PurePosixPath:
    """The member's path relative to the destination; ProjectError for anything that could land outside it."""
    name = member.name
    parts = PurePosixPath(name).parts
    if not name or name.startswith(("/", "\\")) or "\\" in name or "\0" in name or ".." in parts:
        raise ProjectError(f"bundle holds an unsafe path: {name!r}")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _check_member(member: tarfile.TarInfo) -> PurePosixPath:
    """The relative path of a regular file or folder; ProjectError naming any other kind of entry."""
    path = _member_path(member)
    if member.type not in _FILE_TYPES and member.type != tarfile.DIRTYPE:
        kind = _MEMBER_KINDS.get(member.type, f"an entry of unknown type {member.type!r}")
        raise ProjectError(f"bundle holds {kind}, {member.name!r}: only regular files and folders are allowed")
    if member.type in _FILE_TYPES and path == PurePosixPath("."):
        raise ProjectError(f"bundle holds an unsafe path: {member.name!r}")
    return path


def unpack_bundle(
    data: bytes, dest: Path, max_bytes: int = MAX_PROJECT_BYTES, max_members: int = MAX_BUNDLE_MEMBERS
) -> None:
    """Extract a bundle made by pack_project into `dest` (created if missing).

    Every entry is checked here before anything is written (tarfile's extraction filters are not relied on):
    only regular files and folders are accepted, with relative paths free of `..`, each at most once. Refuses,
    with ProjectError naming the entry, archives that are corrupt, hold anything else (links, devices, FIFOs),
    hold more than `max_members` entries, or whose files total more than `max_bytes`. Files are written with
    mode 0644, or 0755 when the archive marks them executable; owners and other mode bits are not kept.
    Blocking: run it in a thread from async code.
    """
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            entries: list[tuple[tarfile.TarInfo, PurePosixPath]] = []
            seen: set[PurePosixPath] = set()
            total = 0
            for member in tar:
                if len(entries) >= max_members:
                    raise ProjectError(f"bundle holds more than {max_members} entries, over the limit")
                path = _check_member(member)
                if member.type in _FILE_TYPES:
                    if path in seen:
                        raise ProjectError(f"bundle holds the file {member.name!r} twice")
                    seen.add(path)
                    total += member.size
                    if total > max_bytes:
                        raise ProjectError(
                            f"bundle unpacks to more than {human_size(max_bytes)}, over the limit "
                            f"(reached at {member.name!r})"
                        )
                entries.append((member, path))
            dest.mkdir(parents=True, exist_ok=True)
            for member, path in entries:
                _extract(tar, member, dest, path)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise ProjectError(f"cannot unpack bundle: {e}") from e


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, path: PurePosixPath) -> None:
    """Write one checked member; only folders and regular files are ever created, so no link can redirect a write."""
    target = dest.joinpath(path)
    if member.type == tarfile.DIRTYPE:
        target.mkdir(mode=0o755, parents=True, exist_ok=True)
        return
    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    source = tar.extractfile(member)
    if source is None:  # not reached for regular files
        raise ProjectError(f"cannot read {member.name!r} from the bundle")
    mode = 0o755 if member.mode & 0o111 else 0o644
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    with source, os.fdopen(os.open(target, flags, mode), "wb") as out:
        remaining = member.size
        while remaining > 0:
            chunk = source.read(min(_COPY_CHUNK, remaining))
            if not chunk:
                raise ProjectError(f"bundle is truncated in {member.name!r}")
            out.write(chunk)
            remaining -= len(chunk)
    os.chmod(target, mode)


# --------------------------------------------------------------------------------------------------
# Helpers for messages


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _describe(value: Any) -> str:
    """Name the value's type and, for scalars, the value itself."""
    if isinstance(value, str | int | float) or value is None:
        return f"{_type_name(value)}, {value!r}" if value is not None else "null"
    return _type_name(value)


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else str(value)


def _one_line(text: str) -> str:
    return " ".join(text.split())
