"""The webhook sender's access to request records: each read with its TTL, only the delivery state written back.

A delivery state write keeps the record's own TTL (read from the stored message's `Nats-TTL` header), so
recording an attempt never extends or shortens how long the result is kept.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError, NotFoundError

from cortado import _names
from cortado.records.store import put_if
from cortado.v1 import records_pb2

MAX_WRITE_TRIES = 20
"""Record writes that may lose a compare-and-set race, in a row, before the attempt's job is retried later."""

_KV_OPERATION = "KV-Operation"
_TTL_HEADER = "Nats-TTL"
_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class StoredRecord:
    """A request record as stored: its revision, and the TTL it was written with (None: it never expires)."""

    record: records_pb2.RequestRecord
    revision: int
    ttl: float | None


class RequestRecords:
    """Reads request records and writes their webhook delivery state, nothing else, with compare-and-set."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._stream = f"KV_{_names.REQUESTS_BUCKET}"

    async def read(self, request_id: str) -> StoredRecord | None:
        """The request's record, its revision and TTL; None when it is gone (never written, deleted or expired)."""
        try:
            msg = await self._js.get_msg(self._stream, subject=f"$KV.{_names.REQUESTS_BUCKET}.{request_id}")
        except NotFoundError:
            return None
        headers = msg.headers or {}
        if headers.get(_KV_OPERATION) in ("DEL", "PURGE") or not msg.data:
            return None
        record = records_pb2.RequestRecord.FromString(msg.data)
        return StoredRecord(record, int(msg.seq or 0), parse_ttl(headers.get(_TTL_HEADER)))

    async def update_webhook(
        self,
        request_id: str,
        stored: StoredRecord,
        change: Callable[[records_pb2.WebhookDelivery], str | None],
    ) -> tuple[StoredRecord | None, str | None]:
        """Apply change to the record's webhook and write it, with the record's TTL, if nothing wrote it since.

        change edits the delivery in place and answers what it recorded, or None to write nothing. After a
        conflicting write the record is read again and change applied to it afresh. Answers the record as
        stored afterwards (None when it is gone) and what change answered. RuntimeError when too many
        writes win the race in a row.
        """
        for _ in range(MAX_WRITE_TRIES):
            record = records_pb2.RequestRecord()
            record.CopyFrom(stored.record)
            outcome = change(record.webhook)
            if outcome is None:
                return stored, None
            try:
                revision = await put_if(self._js, request_id, record, stored.revision, stored.ttl)
            except KeyWrongLastSequenceError:
                fresh = await self.read(request_id)
                if fresh is None:
                    return None, None
                stored = fresh
                continue
            return StoredRecord(record, revision, stored.ttl), outcome
        raise RuntimeError(f"request {request_id}: too many concurrent writes of its record")


def parse_ttl(header: str | None) -> float | None:
    """Seconds a `Nats-TTL` header value says (`3600`, `1h30m`, `90s`); None for none, `never` or a bad value."""
    if not header or header.strip() == "never":
        return None
    text = header.strip()
    if text.isdigit():
        return float(text)
    pieces = _GO_DURATION.findall(text)
    if not pieces or "".join(n + u for n, u in pieces) != text:
        return None
    return math.fsum(float(n) * _DURATION_UNITS[u] for n, u in pieces)
