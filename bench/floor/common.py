"""What the floor's processes share: names, the generated protobuf module, and the process scaffolding."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from types import ModuleType
from typing import Any

import google.api.annotations_pb2
import grpc
import grpc_tools  # type: ignore[import-untyped]
import nats
import uvloop
from grpc_tools import protoc
from nats.aio.client import Client

HERE = Path(__file__).resolve().parent
PROTO = HERE / "floor.proto"
MODULE = "floor_pb2"
DESCRIPTOR = "floor.pb"
SERVICE = "benchfloor.Floor"

STREAM = "FLOOR"
SUBJECT_PREFIX = "floor.req."
"""A request is published to floor.req.<id>: the worker takes the id from the subject."""
CONSUMER = "worker"
BUCKET = "floor_results"
KV_PREFIX = f"$KV.{BUCKET}."
BATCH = 100
"""The most messages one pull request asks for."""

ENV_NATS = "FLOOR_NATS_URL"
ENV_ADDRESS = "FLOOR_ADDRESS"
ENV_GENERATED = "FLOOR_GENERATED"

JSON = "application/json"
log = logging.getLogger("floor")


def generate(out: Path) -> Path:
    """Compile floor.proto into out: the Python module and Envoy's descriptor set (whose path is returned)."""
    googleapis_root = Path(google.api.annotations_pb2.__file__).resolve().parents[2]
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    descriptor = out / DESCRIPTOR
    args = [
        "protoc",
        f"-I{HERE}",
        f"-I{googleapis_root}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--descriptor_set_out={descriptor}",
        "--include_imports",
        PROTO.name,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc could not compile {PROTO}")
    return descriptor


def messages(generated: Path) -> ModuleType:
    """The generated floor_pb2 module in the folder generate() wrote."""
    if str(generated) not in sys.path:
        sys.path.insert(0, str(generated))
    return importlib.import_module(MODULE)


async def connect() -> Client:
    """A NATS connection to $FLOOR_NATS_URL."""
    return await nats.connect(os.environ[ENV_NATS], max_reconnect_attempts=-1, reconnect_time_wait=0.2)


def unary(handler: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]], request: Any) -> grpc.RpcMethodHandler:
    """A unary method handler taking request's message type and answering a serialized message."""
    return grpc.unary_unary_rpc_method_handler(
        handler, request_deserializer=request.FromString, response_serializer=lambda reply: reply.SerializeToString()
    )


async def serve_until_stopped(
    handlers: dict[str, grpc.RpcMethodHandler], start: Callable[[], Awaitable[object]] | None = None
) -> None:
    """Serve the Floor service's handlers on $FLOOR_ADDRESS until SIGTERM or SIGINT."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(os.environ[ENV_ADDRESS])
    if start is not None:
        await start()
    await server.start()
    await stopping.wait()
    await server.stop(1.0)


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a floor process's main coroutine on uvloop (as Cortado's services do)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    uvloop.run(main())


async def close(nc: Client) -> None:
    """Close the NATS connection, bounded (a drain can hang after heavy work)."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.close(), 2.0)
