"""The Celery application the benchmark measures Cortado against: a no-op task and a 10 ms task.

The worker imports it as `celery -A bench.celery_app worker`, finding Redis in `$BENCH_REDIS_URL`;
the benchmark's own process calls configure() instead.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery  # type: ignore[import-untyped]

REDIS_URL_VARIABLE = "BENCH_REDIS_URL"

app = Celery("bench")


def configure(redis_url: str) -> None:
    """Redis as the broker and the result backend, as the usual Celery deployment has it."""
    app.conf.update(
        broker_url=redis_url,
        result_backend=redis_url,
        broker_connection_retry_on_startup=True,
    )


configure(os.environ.get(REDIS_URL_VARIABLE, "redis://127.0.0.1:6379/0"))


def _noop(payload: Any = None) -> dict[str, bool]:
    """Does nothing: measures Celery's own overhead."""
    return {"ok": True}


def _sleep10(payload: Any = None) -> dict[str, bool]:
    """Sleeps 10 ms, like the Cortado handler in bench/sleep10."""
    time.sleep(0.01)
    return {"ok": True}


noop: Any = app.task(name="bench.noop")(_noop)
sleep10: Any = app.task(name="bench.sleep10")(_sleep10)
