"""Names of the NATS subjects, streams and buckets the mesh shares."""

from __future__ import annotations

REQUESTS_BUCKET = "cortado_requests"
"""KV bucket of request records, key = request id."""

APIS_BUCKET = "cortado_apis"
"""KV bucket of deployed API specs, key = API name."""

EXECUTORS_BUCKET = "cortado_executors"
"""KV bucket of executor heartbeats, key = executor id; entries expire when heartbeats stop."""

PLACEMENTS_BUCKET = "cortado_placements"
"""KV bucket of the replicas each executor must run, key = executor id."""

IDEMPOTENCY_BUCKET = "cortado_idempotency"
"""KV bucket mapping sha256(api, Idempotency-Key) to the request id it got; entries expire after a day."""

LEASES_BUCKET = "cortado_leases"
"""KV bucket of leadership leases (the scheduler's), expiring unless renewed."""

BUNDLES_STORE = "cortado_bundles"
"""Object Store of project bundles, name = bundle_object(api, version)."""

PAYLOADS_STORE = "cortado_payloads"
"""Object Store of request bodies too large to travel inline, name = request id."""

WORK_CONSUMER = "handlers"
"""Durable pull consumer every replica of an API shares."""

REQUESTS_SUBJECT_PREFIX = f"$KV.{REQUESTS_BUCKET}."
"""Subject prefix of every write to the requests bucket (one core subscription sees them all)."""


def work_stream(api: str) -> str:
    """Name of the JetStream stream that queues the API's requests."""
    return f"CORTADO_WORK_{api}"


def work_subject(api: str, request_id: str) -> str:
    """Subject one request of the API is published on: its id names it, so the queue itself says it is waiting."""
    return f"cortado.work.{api}.{request_id}"


def work_subjects(api: str) -> str:
    """Wildcard of every request subject of the API (the stream's and its consumer's filter)."""
    return f"cortado.work.{api}.>"


def bundle_object(api: str, version: int) -> str:
    """Object Store name of an API version's project bundle."""
    return f"{api}/v{version}"


DEAD_STREAM = "CORTADO_DEAD"
"""JetStream stream keeping the work items of requests Cortado gave up on, for an operator to look at and replay."""


def dead_subject(api: str, request_id: str) -> str:
    """Subject of a request's dead letter."""
    return f"cortado.dead.{api}.{request_id}"


LOGS_STREAM = "CORTADO_LOGS"
"""JetStream stream keeping recent handler log lines of every API."""


def logs_subject(api: str) -> str:
    """Subject an API's log lines are published on."""
    return f"cortado.logs.{api}"
