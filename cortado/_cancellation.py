"""Whether a request a handler is running was cancelled: `from cortado import cancelled`.

The handler process marks a request here when its executor says the request was cancelled
(`DELETE /<api>/<id>`), and forgets it once the request's call has returned. Everything else in
the process only reads it, from any thread.
"""

from __future__ import annotations

import threading

__all__ = ["cancelled"]

_lock = threading.Lock()
_cancelled: set[str] = set()


def cancelled(request_id: str) -> bool:
    """True once the request `request_id` has been cancelled while this handler process runs it.

    A plain (`def`) handler cannot be interrupted, so a long one should poll this between steps and
    stop early when it turns true (what it then returns or raises is dropped: the request already
    reads `cancelled`). If it does not stop, its process is stopped and restarted after the
    executor's grace period (`CORTADO_CANCEL_GRACE_SECONDS`, 10 s by default), and the other
    requests that process held go back to the queue. An `async def` handler is cancelled as
    `asyncio` cancels any task (`asyncio.CancelledError` is raised at its current `await`); a
    `handle_batch` call goes on until all its requests are cancelled (an `async def` one is then
    cancelled), so it can poll this for each of its `request_ids` and skip the cancelled ones.

    False for a request not cancelled, for an id this process does not run, and outside a handler
    process (in a unit test of the handler, say)::

        from cortado import cancelled

        class Handler:
            def handle_async(self, payload, request_id):
                for step in range(100):
                    if cancelled(request_id):
                        return {}  # dropped: the request is cancelled
                    work(step)
                return {"done": True}
    """
    with _lock:
        return request_id in _cancelled


def mark(request_id: str) -> None:
    """Say that the request was cancelled (the handler process does, when its executor tells it)."""
    with _lock:
        _cancelled.add(request_id)


def forget(request_id: str) -> None:
    """The request's call returned: stop remembering it."""
    with _lock:
        _cancelled.discard(request_id)
