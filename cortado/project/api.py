"""One API entry of a configuration file: its name and kind, its sections in order, and the small sections
(update_strategy, networking, queue, results, webhook, chaining) read here."""

from __future__ import annotations

import re
from typing import Any

from cortado import webhooks
from cortado._env import SettingsError
from cortado.project.autoscaling import parse_autoscaling
from cortado.project.compute import parse_compute
from cortado.project.errors import ConfigError
from cortado.project.fields import UINT64_MAX, FieldReader
from cortado.project.handler import parse_handler
from cortado.project.messages import describe, type_name
from cortado.v1 import control_pb2

_NAME_RE = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_NAME_MAX = 42
_OTHER_CORTEX_KINDS = ("RealtimeAPI", "BatchAPI", "TaskAPI", "TrafficSplitter")
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
_UPDATE_STRATEGY_KEYS = ("max_surge", "max_unavailable")
_NETWORKING_KEYS = ("endpoint",)
_QUEUE_KEYS = ("max_length",)
_RESULTS_KEYS = ("retention",)
_WEBHOOK_KEYS = ("url",)
_CHAINING_KEYS = ("allow",)


def parse_api(reader: FieldReader, entry: Any, webhook_policy: webhooks.UrlPolicy | None) -> control_pb2.ApiSpec:
    """Return the ApiSpec of one entry of the configuration's list, every default applied.

    Sets reader.label to the API's name once it is read, so later messages name the API. Raises ConfigError
    naming the file, the API and the key path for anything invalid. `webhook.url` must pass webhook_policy (the
    one the `CORTADO_WEBHOOK_*` settings make when None).
    """
    if not isinstance(entry, dict):
        raise ConfigError(
            f"{reader.filename}: {reader.label}: each API must be a mapping with name, kind and handler "
            f"(got {type_name(entry)})"
        )
    api = entry
    spec = control_pb2.ApiSpec()
    # The name first, so every later message can call the API by its name.
    name = api.get("name")
    if name is None:
        reader.fail("name", "is required")
    if not isinstance(name, str):
        reader.fail("name", f"must be a string (got {describe(name)})")
    if len(name) > _NAME_MAX or not _NAME_RE.fullmatch(name):
        reader.fail(
            "name",
            "must be a DNS-1035 label: lower-case letters, digits and '-', starting with a letter, "
            f"not ending with '-', at most {_NAME_MAX} characters (got {name!r})",
        )
    reader.label = f"api '{name}'"
    spec.name = name
    reader.mapping(api, "", _TOP_KEYS)

    kind = api.get("kind")
    if kind is None:
        reader.fail("kind", "is required and must be AsyncAPI")
    if kind in _OTHER_CORTEX_KINDS:
        reader.fail("kind", f"is {kind}, but Cortado only supports AsyncAPI")
    if kind != "AsyncAPI":
        reader.fail("kind", f"must be AsyncAPI (got {describe(kind)})")

    parse_handler(reader, api, spec)
    parse_compute(reader, api, spec)
    parse_autoscaling(reader, api, spec)

    update_strategy = reader.section(api, "update_strategy", _UPDATE_STRATEGY_KEYS)
    for key in _UPDATE_STRATEGY_KEYS:
        value = update_strategy.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, str | int)):
            reader.fail(f"update_strategy.{key}", f"must be a number or a percentage (got {describe(value)})")
    if any(update_strategy.get(key) is not None for key in _UPDATE_STRATEGY_KEYS):
        reader.ignored("update_strategy")

    networking = reader.section(api, "networking", _NETWORKING_KEYS)
    endpoint = reader.string(networking, "networking.endpoint", None)
    spec.endpoint = _endpoint(reader, endpoint) if endpoint is not None else f"/{name}"

    queue = reader.section(api, "queue", _QUEUE_KEYS)
    spec.queue_max_length = reader.integer(queue, "queue.max_length", 100_000, 1, UINT64_MAX)

    results = reader.section(api, "results", _RESULTS_KEYS)
    retention = reader.duration(results, "results.retention", "7d")
    assert retention is not None  # it has a default
    if retention <= 0:
        reader.fail("results.retention", "must be longer than 0s")
    spec.retention.FromNanoseconds(retention)

    webhook = reader.section(api, "webhook", _WEBHOOK_KEYS)
    url = reader.string(webhook, "webhook.url", None)
    if url is not None:
        spec.webhook_url = _webhook_url(reader, url, webhook_policy)

    chaining = reader.section(api, "chaining", _CHAINING_KEYS)
    allow = chaining.get("allow")
    if allow is not None:
        if not isinstance(allow, list) or not allow:
            reader.fail("chaining.allow", f"must be a non-empty list of API names (got {describe(allow)})")
        for callee in allow:
            if not isinstance(callee, str) or len(callee) > _NAME_MAX or not _NAME_RE.fullmatch(callee):
                reader.fail(
                    "chaining.allow",
                    f"must list API names (lowercase letters, digits and '-'), not {describe(callee)}",
                )
        spec.chain_allow.extend(sorted(set(allow)))
    return spec


def _webhook_url(reader: FieldReader, value: str, policy: webhooks.UrlPolicy | None) -> str:
    """The URL normalised, if the operator's policy lets webhooks go there (cortado.webhooks.check_url)."""
    if policy is None:
        try:
            policy = webhooks.UrlPolicy.from_env()
        except SettingsError as exc:
            reader.fail("webhook.url", f"cannot be checked: {exc}")
    try:
        return webhooks.check_url(value, policy)
    except webhooks.WebhookUrlError as exc:
        reader.fail("webhook.url", f"is refused: {exc}")


def _endpoint(reader: FieldReader, value: str) -> str:
    """The endpoint canonicalised to one leading slash and no trailing one; it must be a single path segment."""
    # Cortex canonicalised endpoints the same way: one leading slash, no trailing slash.
    endpoint = "/" + value.strip().strip("/")
    if not _ENDPOINT_RE.fullmatch(endpoint) or "//" in endpoint:
        reader.fail(
            "networking.endpoint",
            f"must be a URL path of letters, digits, '-', '.', '_', '~' and '/' (got {value!r})",
        )
    if endpoint == "/" or "/" in endpoint[1:]:
        # The API answers POST /<endpoint> and GET /<endpoint>/<id>: one segment keeps the two apart.
        reader.fail("networking.endpoint", f"must be a single path segment such as /my-api (got {value!r})")
    return endpoint
