"""What tests do through the session's mesh: its settings, waiting for an API, and submitting and reading requests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from cortado.client import SchedulerClient
from cortado.v1 import control_pb2
from tests.helpers import eventually

# Tests deploy many small APIs on the one executor: let it host them all.
MESH_ENV = {
    "CORTADO_EXECUTOR_CPU_MILLIS": "1000000",
    "CORTADO_GRACE_SECONDS": "5",
    "CORTADO_CANCEL_GRACE_SECONDS": "1",
    # The console links each request to Jaeger there (no Jaeger runs: the links are only checked).
    "CORTADO_CONSOLE_TRACES_URL": "http://jaeger.test:16686",
}

Deploy = Callable[..., str]
"""The `deploy` fixture: deploy(handler_source, api={...}, files={...}, wait=True, name=None) -> the API's name."""


def wait_ready(scheduler: SchedulerClient, name: str, timeout: float = 60.0) -> control_pb2.ApiStatus:
    """Wait until the API has a ready replica; fail at once if it failed to start."""

    def ready() -> control_pb2.ApiStatus | None:
        status = scheduler.describe(name)
        assert status.state != control_pb2.API_STATE_FAILED, status.message
        return status if status.ready_replicas else None

    return eventually(ready, timeout, what=f"API {name} ready")


def submit(http: httpx.Client, api: str, **request: Any) -> str:
    """POST a request through Envoy and return its id (the answer must be 200)."""
    reply = http.post(f"/{api}", **request)
    assert reply.status_code == 200, reply.text
    return str(reply.json()["id"])


def result(http: httpx.Client, api: str, request_id: str, wait: float = 30) -> dict[str, Any]:
    """The final state of a request through Envoy, waiting with ?wait= until it finishes."""

    def final() -> dict[str, Any] | None:
        reply = http.get(f"/{api}/{request_id}", params={"wait": wait})
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        return body if body["status"] in ("completed", "failed", "cancelled") else None

    return eventually(final, timeout=wait * 2, what=f"request {request_id} finished")


def fill_queue(
    http: httpx.Client, scheduler: SchedulerClient, api: str, hold: Callable[[], Any], max_length: int
) -> list[str]:
    """Fill the queue of an API whose one replica runs one request at a time: submit hold() payloads until its
    replica holds two (one running, one fetched ahead) and max_length more wait, so the next submit finds the
    queue full (queue.max_length counts only requests not yet delivered). Their ids, in order."""
    ids = [submit(http, api, json=hold())]
    eventually(lambda: scheduler.describe(api).in_flight == 1, what=f"the first request of {api} taken")
    ids.append(submit(http, api, json=hold()))

    def held_ahead() -> bool:
        status = scheduler.describe(api)
        return (status.in_flight, status.queued) == (2, 0)

    eventually(held_ahead, what=f"a second request of {api} fetched ahead")
    ids += [submit(http, api, json=hold()) for _ in range(max_length)]
    assert scheduler.describe(api).queued == max_length
    return ids
