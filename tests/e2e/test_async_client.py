"""`cortado.client.AsyncClient` against the real mesh, through Envoy's port: the sync client's methods awaited,
refusals raised as the named errors (NotFound, InvalidRequest, QueueFull with retry_after, AlreadyFinished), and
the bulk streams fed and read with async iterables."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from cortado._clientcommon import AlreadyFinished, InvalidRequest, NotFound, QueueFull
from cortado.client import AsyncClient, SchedulerClient
from cortado.mesh import LocalMesh
from cortado.v1 import public_pb2, records_pb2
from tests.e2e.test_cancel import HELD, Held, queued_behind
from tests.meshcalls import Deploy, fill_queue

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"

ECHO = """
class Handler:
    def handle_async(self, payload, request_id):
        return {"echo": payload}
"""

COMPLETED = records_pb2.REQUEST_STATUS_COMPLETED


async def test_submit_wait_get_watch_and_submit_and_wait(mesh: LocalMesh, deploy: Deploy) -> None:
    api = deploy(ECHO)
    async with AsyncClient(mesh.grpc_address) as client:
        request_id = await client.submit(api, b'{"n": 1}', "application/json", priority="high")
        final = await client.wait(api, request_id, timeout=30)
        assert (final.id, final.status) == (request_id, COMPLETED)
        assert json.loads(final.result_json) == {"echo": {"n": 1}}
        assert (await client.get(api, request_id)).status == COMPLETED
        # Watching a finished request yields its final state and ends.
        assert [state.status async for state in client.watch(api, request_id, timeout=30)] == [COMPLETED]
        # One call, and many at once on one channel.
        view = await client.submit_and_wait(api, b'{"n": 2}', "application/json", wait=30)
        assert (view.status, json.loads(view.result_json)) == (COMPLETED, {"echo": {"n": 2}})
        ids = await asyncio.gather(
            *(client.submit(api, json.dumps({"n": n}).encode(), "application/json") for n in range(50))
        )
        finals = await asyncio.gather(*(client.wait(api, i, timeout=60) for i in ids))
        assert [json.loads(f.result_json)["echo"]["n"] for f in finals] == list(range(50))
        # An unknown id is a state, not an error (as GET's 404 JSON is).
        unknown = await client.get(api, uuid.uuid4().hex)
        assert unknown.status == records_pb2.REQUEST_STATUS_NOT_FOUND


async def test_refusals_raise_named_errors_that_are_grpc_errors_too(mesh: LocalMesh, deploy: Deploy) -> None:
    api = deploy(ECHO)
    async with AsyncClient(mesh.grpc_address) as client:
        with pytest.raises(NotFound) as missing:
            await client.submit("no-such-api", b"{}", "application/json")
        assert str(missing.value) == "API 'no-such-api' is not deployed"
        assert isinstance(missing.value, grpc.RpcError) and missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(InvalidRequest) as refused:
            await client.submit(api, b"{}", "application/json", webhook="ftp://hooks.example.com/")
        assert "must start with http:// or https://" in refused.value.details()
        with pytest.raises(InvalidRequest) as bad_json:
            await client.submit(api, b"{not json", "application/json")
        assert bad_json.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(ValueError, match="priority must be high, normal or low, not 'urgent'"):
            await client.submit(api, b"{}", "application/json", priority="urgent")

        done = await client.submit_and_wait(api, b"{}", "application/json", wait=30)
        assert done.status == COMPLETED
        with pytest.raises(AlreadyFinished) as finished:
            await client.cancel(api, done.id)
        assert "already completed" in str(finished.value)
        with pytest.raises(NotFound):
            await client.cancel(api, uuid.uuid4().hex)
        with pytest.raises(NotFound, match="not deployed"):
            [view async for view in client.results("no-such-api", [done.id])]


async def test_a_full_queue_raises_queue_full_with_retry_after(
    mesh: LocalMesh, deploy: Deploy, http: httpx.Client, scheduler: SchedulerClient, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    config = {"calls": str(tmp_path / "calls.log"), "release": str(release)}
    api = deploy(
        HELD,
        api={
            "handler": {"max_concurrency": 1, "config": config},
            "autoscaling": {"min_replicas": 1, "max_replicas": 1},
            "queue": {"max_length": 1},
        },
    )
    try:
        fill_queue(http, scheduler, api, dict, 1)
        async with AsyncClient(mesh.grpc_address) as client:
            with pytest.raises(QueueFull) as full:
                await client.submit(api, b"{}", "application/json")
        assert full.value.retry_after >= 1
        assert f"the queue of API '{api}' is full" in str(full.value)
    finally:
        release.touch()


async def test_cancel_a_queued_request_twice(
    mesh: LocalMesh, http: httpx.Client, scheduler: SchedulerClient, held: Held
) -> None:
    _, later = queued_behind(http, scheduler, held, 1)
    target = later[-1]
    async with AsyncClient(mesh.grpc_address) as client:
        first = await client.cancel(held.name, target)
        assert (first.id, first.status) == (target, records_pb2.REQUEST_STATUS_CANCELLED)
        assert await client.cancel(held.name, target) == first
        assert (await client.wait(held.name, target, timeout=10)) == first
    assert target not in held.called()


async def test_submit_many_piped_into_results_with_async_iterables(mesh: LocalMesh, deploy: Deploy) -> None:
    api = deploy(ECHO)
    async with AsyncClient(mesh.grpc_address) as client:

        async def requests() -> AsyncIterator[public_pb2.SubmitRequest]:
            for n in range(200):
                yield AsyncClient.request(api, json.dumps({"n": n}).encode(), "application/json", f"bulk-{api}-{n}")
            yield AsyncClient.request(api, b"{broken", "application/json")

        refused: list[str] = []

        async def ids() -> AsyncIterator[str]:
            async for answer in client.submit_many(requests()):
                if answer.id:
                    yield answer.id
                else:
                    refused.append(answer.status.message)

        finals = [view async for view in client.results(api, ids(), timeout=120)]
        assert len(finals) == 200 and {view.status for view in finals} == {COMPLETED}
        assert sorted(json.loads(view.result_json)["echo"]["n"] for view in finals) == list(range(200))
        assert len(refused) == 1 and "JSON" in refused[0], refused


async def test_the_readme_fastapi_example_answers_through_the_mesh(mesh: LocalMesh, deploy: Deploy) -> None:
    blocks: list[str] = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    [source] = [block for block in blocks if "from fastapi import" in block]
    api = deploy(ECHO)
    assert '"localhost:8888"' in source and '"iris"' in source
    source = source.replace('"localhost:8888"', repr(mesh.grpc_address)).replace('"iris"', repr(api))
    example: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(source, "README.md", "exec"), example)
    transport = httpx.ASGITransport(app=example["app"])
    async with httpx.AsyncClient(transport=transport, base_url="http://example") as web:
        answer = await web.post("/classify", json={"sepal_length": 5.2})
    await example["cortado"].close()
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"echo": {"sepal_length": 5.2}}
