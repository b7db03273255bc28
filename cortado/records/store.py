"""Writing request records: created once, advanced forward only, every write a compare-and-set with its TTL.

Every writer of the requests bucket goes through here (the executor's `in_progress` and final records, a
cancel's `cancelled`, the webhook sender's delivery state), so no write can move a record backwards or
overwrite a final one it did not read.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from cortado import _names, _nats
from cortado.records.locate import read_entry
from cortado.records.states import may_move, record_ttl
from cortado.v1 import records_pb2

ADVANCE_ATTEMPTS = 10
"""Compare-and-set rounds `advance` tries before giving up (each lost one means another write came between)."""


async def put_if(
    js: JetStreamContext, request_id: str, new: records_pb2.RequestRecord, revision: int, ttl: float | None
) -> int:
    """Write new only if the record is still at `revision` (0: absent); its new revision.

    KeyWrongLastSequenceError when another write came first. ttl: seconds until it expires (None: never).
    """
    return await _nats.kv_put_if(js, _names.REQUESTS_BUCKET, request_id, new.SerializeToString(), revision, ttl)


class RecordStore:
    """Reads and writes request records; a final record is never overwritten."""

    def __init__(self, js: JetStreamContext, kv: KeyValue) -> None:
        self._js = js
        self._kv = kv

    async def read(self, request_id: str) -> tuple[records_pb2.RequestRecord | None, int]:
        """The record and its revision; (None, 0) when absent."""
        return await read_entry(self._kv, request_id)

    async def put_if(self, request_id: str, new: records_pb2.RequestRecord, revision: int, ttl: float | None) -> int:
        """Write new only if the record is still at `revision` (0: absent); its new revision (see `put_if`)."""
        return await put_if(self._js, request_id, new, revision, ttl)

    async def create(self, request_id: str, new: records_pb2.RequestRecord, retention_seconds: float) -> int:
        """Write new only where the request has no record yet; its revision. KeyWrongLastSequenceError otherwise.

        Like every record, it expires after retention_seconds (at least 1), should nothing overwrite it.
        """
        return await self.put_if(request_id, new, 0, record_ttl(retention_seconds))

    async def advance(
        self, request_id: str, new: records_pb2.RequestRecord, revision: int, retention_seconds: float
    ) -> tuple[bool, records_pb2.RequestRecord | None, int]:
        """Write new if the stored record may move to it; (written, stored record, revision) after the attempt.

        The record expires after retention_seconds (at least 1), should nothing overwrite it. A concurrent
        write makes it re-read and decide again, so a final state is never overwritten.
        """
        ttl = record_ttl(retention_seconds)
        current: records_pb2.RequestRecord | None = None
        for _ in range(ADVANCE_ATTEMPTS):
            try:
                revision = await self.put_if(request_id, new, revision, ttl)
                return True, new, revision
            except KeyWrongLastSequenceError:
                current, revision = await self.read(request_id)
                if current is not None and not may_move(current.status, new.status):
                    return False, current, revision
        raise RuntimeError(f"request {request_id}: too many concurrent writes")
