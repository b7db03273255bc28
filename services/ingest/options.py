"""A submit's options beyond its body: `Cortado-Priority` and `Cortado-Webhook` (or their gRPC fields)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from cortado import _names
from cortado.v1 import records_pb2
from services.ingest.submitter import Options

PRIORITY_HEADER = "cortado-priority"
WEBHOOK_HEADER = "cortado-webhook"

_PRIORITIES = {name: value for value, name in _names.PRIORITY_NAMES.items()}


class OptionsError(ValueError):
    """An option the client set is not valid; the message says which and why (INVALID_ARGUMENT, HTTP 400)."""


def parse_priority(text: str) -> int:
    """The records_pb2.Priority a `Cortado-Priority` header names: high, normal or low (any case, trimmed)."""
    priority = _PRIORITIES.get(text.strip().lower())
    if priority is None:
        raise OptionsError(f"Cortado-Priority must be high, normal or low, not {text!r}")
    return priority


def submit_options(
    priority: int,
    webhook: str,
    headers: Mapping[str, str],
    check_webhook: Callable[[str], str],
) -> Options:
    """The options of one submit: the gRPC fields when set, else the headers; webhook URLs pass check_webhook.

    check_webhook returns the URL to store or raises ValueError with the reason it is refused.
    """
    if priority:
        if priority not in _names.PRIORITY_NAMES:
            raise OptionsError(f"priority {priority} is not one of PRIORITY_HIGH, PRIORITY_NORMAL, PRIORITY_LOW")
    elif PRIORITY_HEADER in headers:
        priority = parse_priority(headers[PRIORITY_HEADER])
    else:
        priority = records_pb2.PRIORITY_NORMAL
    url = webhook or headers.get(WEBHOOK_HEADER, "")
    if url:
        try:
            url = check_webhook(url)
        except ValueError as exc:
            raise OptionsError(str(exc)) from None
    return Options(priority=priority, webhook_url=url)
