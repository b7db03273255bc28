"""A completed outcome's result into its final record: inline, or kept in the results Object Store first.

The handler process is untrusted: an inline result over the inline limit, a media type that is not one, or chunks
that do not add up to what the outcome announces fail the request with InvalidResult; a result that cannot be
stored fails it with ResultNotStored.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from nats.js import JetStreamContext
from nats.js.object_store import ObjectStore

from cortado import _resultobjects
from cortado.result import INLINE_RESULT_BYTES, JSON_TYPE, MAX_RESULT_BYTES, check_content_type
from cortado.v1 import handler_pb2, records_pb2
from services.executor.spool import ResultSpool, Spooled, remove

log = logging.getLogger(__name__)

RESULT_PUT_ATTEMPTS = 3
"""Tries to store a large result (over about 1.5 s) before the request fails with ResultNotStored."""


class ResultKeeper:
    """Receives one API's large results in chunks and keeps each completed outcome's result for its record."""

    def __init__(
        self, js: JetStreamContext, api: str, retention_seconds: float, spool: ResultSpool | None = None
    ) -> None:
        self._js = js
        self._api = api
        self._retention = retention_seconds
        self._results: ObjectStore | None = None
        self._spool = spool if spool is not None else ResultSpool()
        """Large results arriving in chunks, until their outcome comes (in the system's temporary directory)."""

    def add_chunk(self, request_id: str, data: bytes) -> None:
        """Append a chunk of the request's large result (it arrives before the outcome)."""
        self._spool.add(request_id, data)

    def discard(self, request_id: str) -> None:
        """Forget the chunks of a request no longer held (nothing happens when there are none)."""
        self._spool.discard(request_id)

    async def keep(
        self, request_id: str, outcome: handler_pb2.Outcome, final: records_pb2.RequestRecord
    ) -> tuple[str, str] | None:
        """Put a completed outcome's result in final (inline, or stored first); the failure when it cannot be.

        The failure is (error type, message). Chunks the process sent and this does not take are discarded when
        the request is released.
        """
        content_type = outcome.result_content_type
        if content_type:
            try:
                check_content_type(content_type)
            except ValueError as exc:
                return "InvalidResult", str(exc)
        if not outcome.result_streamed_bytes:
            inline = outcome.result_data if content_type else outcome.result_json
            if len(inline) > INLINE_RESULT_BYTES:
                return "InvalidResult", f"a result of {len(inline)} bytes came inline; at most {INLINE_RESULT_BYTES} do"
            if content_type:
                final.result_content_type = content_type
                final.result_data = outcome.result_data
            else:
                final.result_json = outcome.result_json
            final.result_size = len(inline)
            return None
        spooled = self._spool.take(request_id)
        if spooled is None or spooled.over_limit or spooled.size != outcome.result_streamed_bytes:
            if spooled is not None:
                remove(spooled)
            if spooled is not None and spooled.over_limit:
                return "InvalidResult", f"the result is larger than the {MAX_RESULT_BYTES // 2**30} GiB limit"
            return "InvalidResult", "the result arrived incomplete from the handler process"
        try:
            name = f"{request_id}.{secrets.token_hex(4)}"
            await self._put(name, spooled)
        except Exception as exc:
            log.warning("result not stored", extra={"id": request_id, "error": repr(exc)})
            return "ResultNotStored", (
                f"the result ({spooled.size / 2**20:.1f} MiB) could not be stored: {exc!r}; when the results "
                "store is full, raise CORTADO_RESULTS_MAX_BYTES or shorten results.retention"
            )
        finally:
            remove(spooled)
        final.result_content_type = content_type or JSON_TYPE
        final.result_object = name
        final.result_size = spooled.size
        final.result_sha256 = spooled.sha256
        return None

    async def _put(self, name: str, spooled: Spooled) -> None:
        """Store a spooled result under name (retried across a NATS fail-over), expiring with its record."""
        if self._results is None:
            self._results = await _resultobjects.results_store(self._js)
        expires_at = time.time() + max(1.0, self._retention)
        for attempt in range(RESULT_PUT_ATTEMPTS):
            try:
                await _resultobjects.put_result(self._results, name, self._api, spooled.path, expires_at)
                return
            except Exception:
                if attempt == RESULT_PUT_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.5 * 2**attempt)
