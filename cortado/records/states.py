"""A request record's states: the forward-only rule every write obeys, and the names clients see."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from cortado.v1 import control_pb2, records_pb2

Status = records_pb2.RequestStatus

FINAL_STATUSES = frozenset(
    {records_pb2.REQUEST_STATUS_COMPLETED, records_pb2.REQUEST_STATUS_FAILED, records_pb2.REQUEST_STATUS_CANCELLED}
)

_RANK: dict[int, int] = {
    records_pb2.REQUEST_STATUS_UNSPECIFIED: 0,
    records_pb2.REQUEST_STATUS_IN_QUEUE: 1,
    records_pb2.REQUEST_STATUS_IN_PROGRESS: 2,
    records_pb2.REQUEST_STATUS_COMPLETED: 3,
    records_pb2.REQUEST_STATUS_FAILED: 3,
    records_pb2.REQUEST_STATUS_CANCELLED: 3,
}

STATUS_NAMES: dict[int, str] = {
    records_pb2.REQUEST_STATUS_IN_QUEUE: "in_queue",
    records_pb2.REQUEST_STATUS_IN_PROGRESS: "in_progress",
    records_pb2.REQUEST_STATUS_COMPLETED: "completed",
    records_pb2.REQUEST_STATUS_FAILED: "failed",
    records_pb2.REQUEST_STATUS_CANCELLED: "cancelled",
    records_pb2.REQUEST_STATUS_NOT_FOUND: "not_found",
}


def is_final(status: int) -> bool:
    """Whether no write may follow this status."""
    return status in FINAL_STATUSES


def may_move(current: int, new: int) -> bool:
    """Whether a record in `current` may be rewritten to `new`: only forward, never out of a final state.

    IN_PROGRESS may be rewritten to IN_PROGRESS (a redelivery counts another attempt).
    """
    if is_final(current):
        return False
    return _RANK[new] >= _RANK[current]


def now_timestamp() -> Timestamp:
    """The current time as a protobuf Timestamp."""
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


def retention_seconds(spec: control_pb2.ApiSpec) -> float:
    """How long the API's records are kept after their last write (`results.retention`)."""
    return float(spec.retention.ToTimedelta().total_seconds())


def record_ttl(retention: float) -> float:
    """The TTL a record is written with for a retention of `retention` seconds: at least one second."""
    return max(1.0, retention)
