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

RESULTS_STORE = "cortado_results"
"""Object Store of results too large for their record, name = request id (see cortado._resultobjects)."""

WORK_CONSUMER = "handlers"
"""Prefix of the durable pull consumers of an API's queue (one per priority: see work_consumer)."""

REQUESTS_SUBJECT_PREFIX = f"$KV.{REQUESTS_BUCKET}."
"""Subject prefix of every write to the requests bucket: `<prefix><id>` is one record's (results waiters follow it)."""


def work_stream(api: str) -> str:
    """Name of the JetStream stream that queues the API's requests."""
    return f"CORTADO_WORK_{api}"


PRIORITY_NAMES = {1: "high", 2: "normal", 3: "low"}
"""Subject token of each records_pb2.Priority (unset travels as normal)."""


PRIORITIES: tuple[int, ...] = tuple(PRIORITY_NAMES)
"""The priorities, highest first (records_pb2.PRIORITY_HIGH, _NORMAL, _LOW)."""


def priority_name(priority: int) -> str:
    """The subject token of a priority: high, normal or low (anything else is normal)."""
    return PRIORITY_NAMES.get(priority, "normal")


def work_subject(api: str, request_id: str, priority: int = 2) -> str:
    """Subject one request of the API is published on: its id names it, so the queue itself says it is waiting."""
    return f"cortado.work.{api}.{priority_name(priority)}.{request_id}"


def work_subject_any_priority(api: str, request_id: str) -> str:
    """Wildcard matching the request's subject whatever its priority (a direct get reads it in one call)."""
    return f"cortado.work.{api}.*.{request_id}"


def work_subjects(api: str, priority: int | None = None) -> str:
    """Wildcard of the API's request subjects: every one (the stream's filter), or one priority's (its consumer's)."""
    if priority is None:
        return f"cortado.work.{api}.>"
    return f"cortado.work.{api}.{priority_name(priority)}.*"


def work_consumer(priority: int) -> str:
    """Durable pull consumer of one priority of an API's queue, which every replica of the API shares."""
    return f"{WORK_CONSUMER}-{priority_name(priority)}"


def cancel_subject(api: str) -> str:
    """Core subject ingest announces an API's cancelled request ids on; its executors listen."""
    return f"cortado.cancel.{api}"


WEBHOOKS_STREAM = "CORTADO_WEBHOOKS"
"""JetStream work-queue stream of webhook deliveries due (records_pb2.WebhookJob), one message per request."""

WEBHOOK_SUBJECTS = "cortado.webhooks.>"
"""The webhooks stream's subjects: each job's is webhook_subject(api, id), its Nats-Msg-Id the request id."""

WEBHOOKS_CONSUMER = "senders"
"""Durable pull consumer the webhook senders share."""

WEBHOOK_SECRETS_BUCKET = "cortado_webhook_secrets"
"""KV bucket of each API's webhook signing secrets (records of control_pb2.WebhookSecrets), key = API name."""

API_KEYS_BUCKET = "cortado_api_keys"
"""KV bucket of the front door's API keys (records of control_pb2.ApiKey, hashes only), key = the key's id."""


def webhook_subject(api: str, request_id: str) -> str:
    """Subject of one request's webhook delivery."""
    return f"cortado.webhooks.{api}.{request_id}"


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
