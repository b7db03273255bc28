"""The floor's ingest server: publish the body to the stream (pipelined), answer {"id"}. Nothing else."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import grpc
from google.api import httpbody_pb2

from bench.floor import common


async def main() -> None:
    """Serve Submit until stopped."""
    pb = common.messages(Path(os.environ[common.ENV_GENERATED]))
    nc = await common.connect()
    js = nc.jetstream()

    async def submit(request: Any, context: grpc.aio.ServicerContext) -> Any:
        request_id = os.urandom(16).hex()
        stored = await js.publish_async(common.SUBJECT_PREFIX + request_id, request.body.data)
        await stored
        return httpbody_pb2.HttpBody(content_type=common.JSON, data=b'{"id":"%s"}' % request_id.encode())

    try:
        await common.serve_until_stopped({"Submit": common.unary(submit, pb.SubmitRequest)})
    finally:
        await common.close(nc)


if __name__ == "__main__":
    common.run(main)
