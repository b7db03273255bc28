"""Request records: read with their revision, created once, advanced forward only with compare-and-set."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from cortado import names, natsutil, records
from cortado.v1 import records_pb2


class RecordStore:
    """Reads and advances request records; a final record is never overwritten."""

    def __init__(self, js: JetStreamContext, kv: KeyValue) -> None:
        self._js = js
        self._kv = kv

    async def read(self, request_id: str) -> tuple[records_pb2.RequestRecord | None, int]:
        """The record and its revision; (None, 0) when absent."""
        try:
            entry = await self._kv.get(request_id)
        except KeyNotFoundError:
            return None, 0
        if not entry.value:
            return None, entry.revision or 0
        return records_pb2.RequestRecord.FromString(entry.value), entry.revision or 0

    async def create(self, request_id: str, new: records_pb2.RequestRecord, retention_seconds: float) -> int:
        """Write new only where the request has no record yet; its revision. KeyWrongLastSequenceError otherwise.

        Like every record, it expires after retention_seconds (at least 1), should nothing overwrite it.
        """
        return await natsutil.kv_put_if(
            self._js, names.REQUESTS_BUCKET, request_id, new.SerializeToString(), 0, max(1.0, retention_seconds)
        )

    async def advance(
        self, request_id: str, new: records_pb2.RequestRecord, revision: int, retention_seconds: float
    ) -> tuple[bool, records_pb2.RequestRecord | None, int]:
        """Write new if the stored record may move to it; (written, stored record, revision) after the attempt.

        The record expires after retention_seconds (at least 1), should nothing overwrite it. A concurrent
        write makes it re-read and decide again, so a final state is never overwritten.
        """
        ttl = max(1.0, retention_seconds)
        current: records_pb2.RequestRecord | None = None
        for _ in range(10):
            try:
                revision = await natsutil.kv_put_if(
                    self._js, names.REQUESTS_BUCKET, request_id, new.SerializeToString(), revision, ttl
                )
                return True, new, revision
            except KeyWrongLastSequenceError:
                current, revision = await self.read(request_id)
                if current is not None and not records.may_move(current.status, new.status):
                    return False, current, revision
        raise RuntimeError(f"request {request_id}: too many concurrent writes")
