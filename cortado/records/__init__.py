"""A request's record: the one owner of where a request stands, from submission to expiry.

Ingest writes no record when it queues a request; the executor writes the first (`in_progress`) when a
handler takes it and the final one when it ends; a cancel writes `cancelled`; the webhook sender writes
the delivery state. A record only moves forward (`states`), every write is a compare-and-set carrying the
API's retention as its TTL (`store`), and a request is always in its queue or in the bucket (`locate`).

| module | holds |
|---|---|
| `states` | statuses, the forward-only rule, the names clients see, retention as a TTL |
| `store` | `RecordStore`: read, create, advance (forward only, compare-and-set), `put_if` |
| `locate` | where a request stands: its record, or its work item while it waits in the queue |
| `follow` | `RecordWaiters`: every write of the records callers wait on (results service) |
| `outcomes` | `Outcomes`: a submit that waits for its own request's outcome (ingest) |
| `cancel` | `Canceller`: a request's final `cancelled` record and what follows it (ingest, console) |
| `delivery` | `RequestRecords`: the webhook sender's reads with TTL and delivery-state writes |
| `render` | what clients see: the view (gRPC, webhooks) and the JSON body of `GET /<api>/<id>` |
"""

from cortado.records.locate import current, queued, queued_at, queued_record, read_entry, stored
from cortado.records.render import (
    not_found_message,
    not_found_view,
    render_json,
    result_path,
    result_reference,
    rfc3339,
    view,
)
from cortado.records.states import (
    FINAL_STATUSES,
    STATUS_NAMES,
    Status,
    is_final,
    may_move,
    now_timestamp,
    record_ttl,
    retention_seconds,
)
from cortado.records.store import RecordStore, put_if

__all__ = [
    "FINAL_STATUSES",
    "STATUS_NAMES",
    "RecordStore",
    "Status",
    "current",
    "is_final",
    "may_move",
    "not_found_message",
    "not_found_view",
    "now_timestamp",
    "put_if",
    "queued",
    "queued_at",
    "queued_record",
    "read_entry",
    "record_ttl",
    "render_json",
    "result_path",
    "result_reference",
    "retention_seconds",
    "rfc3339",
    "stored",
    "view",
]
