"""The floor's results server: one ordered consumer on the results bucket fans writes out to waiters by id.

GetResult reads the bucket after registering its waiter, so a write is seen either by the read or by the
watch (JetStream delivers a write only once stored). Submit with `?wait=` publishes the request and waits
for its result in the same call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any

import grpc
from google.api import httpbody_pb2
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from nats.js.errors import KeyNotFoundError

from bench.floor import common

MAX_WAIT = 120.0


def answer(request_id: str, result: bytes | None) -> httpbody_pb2.HttpBody:
    """{"id", "status": "completed", "result"} once the result is written, {"id", "status": "pending"} before."""
    if result is None:
        data = json.dumps({"id": request_id, "status": "pending"}).encode()
    else:
        data = b'{"id":"%s","status":"completed","result":%s}' % (request_id.encode(), result)
    return httpbody_pb2.HttpBody(content_type=common.JSON, data=data)


async def main() -> None:
    """Watch the results bucket and serve GetResult and Submit-with-wait until stopped."""
    pb = common.messages(Path(os.environ[common.ENV_GENERATED]))
    nc = await common.connect()
    js = nc.jetstream()
    kv = await js.key_value(common.BUCKET)
    waiters: dict[str, asyncio.Future[bytes]] = {}

    async def on_write(msg: Msg) -> None:
        waiter = waiters.get(msg.subject[len(common.KV_PREFIX) :])
        if waiter is not None and not waiter.done():
            waiter.set_result(msg.data)

    async def watch() -> None:
        await js.subscribe(
            common.KV_PREFIX + ">",
            stream=f"KV_{common.BUCKET}",
            cb=on_write,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
            inactive_threshold=3600,
            pending_msgs_limit=1_000_000,
            pending_bytes_limit=1024**3,
        )

    async def wait_for(request_id: str, waiter: asyncio.Future[bytes], seconds: float) -> bytes | None:
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(waiter, min(seconds, MAX_WAIT))
        return None

    async def get_result(request: Any, context: grpc.aio.ServicerContext) -> httpbody_pb2.HttpBody:
        request_id = str(request.id)
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        waiters[request_id] = waiter
        try:
            with contextlib.suppress(KeyNotFoundError):
                entry = await kv.get(request_id)
                return answer(request_id, entry.value)
            if request.wait <= 0:
                return answer(request_id, None)
            return answer(request_id, await wait_for(request_id, waiter, request.wait))
        finally:
            if waiters.get(request_id) is waiter:
                del waiters[request_id]

    async def submit_and_wait(request: Any, context: grpc.aio.ServicerContext) -> httpbody_pb2.HttpBody:
        request_id = os.urandom(16).hex()
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        waiters[request_id] = waiter  # before the publish: no write can come earlier, so no read is needed
        try:
            stored = await js.publish_async(common.SUBJECT_PREFIX + request_id, request.body.data)
            await stored
            return answer(request_id, await wait_for(request_id, waiter, request.wait))
        finally:
            del waiters[request_id]

    handlers = {
        "GetResult": common.unary(get_result, pb.GetResultRequest),
        "Submit": common.unary(submit_and_wait, pb.SubmitRequest),
    }
    try:
        await common.serve_until_stopped(handlers, start=watch)
    finally:
        await common.close(nc)


if __name__ == "__main__":
    common.run(main)
