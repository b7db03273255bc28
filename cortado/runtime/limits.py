"""What a request body may be: its size, everywhere, and what an ``application/json`` body may hold."""

from __future__ import annotations

from dataclasses import dataclass

MAX_BODY_BYTES = 32 * 1024 * 1024
"""Largest request body Cortado takes: Envoy answers a larger HTTP body 413, ingest refuses a larger gRPC one."""

MAX_JSON_DEPTH = 512
"""The deepest nesting any setting may allow in a JSON body; ``decode_payload`` decodes bodies this deep."""

DEFAULT_JSON_DEPTH = 128
"""``JsonLimits.max_depth`` unless ingest is told otherwise."""
DEFAULT_JSON_VALUES = 1_000_000
"""``JsonLimits.max_values`` unless ingest is told otherwise."""


@dataclass(frozen=True)
class JsonLimits:
    """What an accepted ``application/json`` body may hold (ingest's settings; see docs/operations.md#limits)."""

    max_depth: int = DEFAULT_JSON_DEPTH
    """Arrays and objects open at once: ``[[1]]`` is 2 deep (at most MAX_JSON_DEPTH)."""
    max_values: int = DEFAULT_JSON_VALUES
    """Values in the whole body: each array, object, string, number, true, false and null counts one."""
