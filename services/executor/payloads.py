"""Request bodies in the executor: inline in the work item, or in the payloads Object Store when large."""

from __future__ import annotations

import contextlib

from nats.js import JetStreamContext
from nats.js.object_store import ObjectStore

from cortado import _names, _nats
from cortado.v1 import records_pb2


class Payloads:
    """Reads the bodies of one API's requests, and deletes the stored ones once they are no longer needed."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._store: ObjectStore | None = None
        """The payloads Object Store, opened on the first large body read."""

    async def fetch(self, item: records_pb2.WorkItem) -> bytes:
        """The request's body: the work item's own, or read from the Object Store (errors propagate)."""
        if not item.payload_object:
            return item.payload
        if self._store is None:
            self._store = await _nats.object_store(self._js, _names.PAYLOADS_STORE)
        result = await self._store.get(item.payload_object)
        return bytes(result.data or b"")

    async def drop(self, item: records_pb2.WorkItem) -> None:
        """Delete the request's stored body, if any was read here (a failure is ignored)."""
        if item.payload_object and self._store is not None:
            with contextlib.suppress(Exception):
                await self._store.delete(item.payload_object)
