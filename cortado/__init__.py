"""Cortado: run Python handlers as asynchronous APIs.

What this package offers its users, and all it promises to keep stable, is `__all__`:

For handler authors:
- `log`: the JSON logger (each line carries the request id of the call it was written in);
- `cancelled(request_id) -> bool`: whether the running request was cancelled (a plain `def` handler
  cannot be interrupted, and may poll it);
- `Result`: binary output (bytes or a file, with its media type) returned from `handle_async`;
- `MetricsClient`: the type of the `metrics_client` given to `Handler.__init__` (`increment`, `gauge`,
  `histogram`).

For client code (loaded on first use, so a handler that never calls an API pays nothing for gRPC):
- `Client` and `AsyncClient`: submit, get, watch and cancel requests over gRPC;
- `SchedulerClient`: deploy, describe and delete APIs (the control plane);
- `ClientError` and its kinds (`NotFound`, `InvalidRequest`, `QueueFull`, `AlreadyFinished`, `NoResult`,
  `Unauthenticated`, `PermissionDenied`, `Unavailable`): what a failed call raises;
- `RequestView`: the state of one request, as `get` and `watch` answer it, and `STATUS_NAMES`: the name
  of each status (`completed`, ...) as the HTTP API writes it.

Everything else in the package serves Cortado's own services and tools and may change between releases:
`cortado.records` (the request record), `cortado.webhooks`, `cortado.project` (cortado.yaml and bundles),
`cortado.runtime` (loading and calling handlers), `cortado.mesh` (the local development mesh) and the
plumbing modules beside them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cortado._cancellation import cancelled
from cortado._logs import handler_logger as log
from cortado._metrics import MetricsClient
from cortado.result import Result

if TYPE_CHECKING:
    from cortado._clientcommon import (
        AlreadyFinished,
        ClientError,
        InvalidRequest,
        NoResult,
        NotFound,
        PermissionDenied,
        QueueFull,
        Unauthenticated,
        Unavailable,
    )
    from cortado.client import AsyncClient, Client, SchedulerClient
    from cortado.records.states import STATUS_NAMES
    from cortado.v1.records_pb2 import RequestView

_LAZY = {
    "AsyncClient": "cortado.client",
    "Client": "cortado.client",
    "SchedulerClient": "cortado.client",
    "ClientError": "cortado._clientcommon",
    "NotFound": "cortado._clientcommon",
    "InvalidRequest": "cortado._clientcommon",
    "QueueFull": "cortado._clientcommon",
    "AlreadyFinished": "cortado._clientcommon",
    "NoResult": "cortado._clientcommon",
    "Unauthenticated": "cortado._clientcommon",
    "PermissionDenied": "cortado._clientcommon",
    "Unavailable": "cortado._clientcommon",
    "RequestView": "cortado.v1.records_pb2",
    "STATUS_NAMES": "cortado.records.states",
}
"""Public names whose modules load gRPC or NATS: imported on first use (PEP 562)."""

__all__ = [
    "STATUS_NAMES",
    "AlreadyFinished",
    "AsyncClient",
    "Client",
    "ClientError",
    "InvalidRequest",
    "MetricsClient",
    "NoResult",
    "NotFound",
    "PermissionDenied",
    "QueueFull",
    "RequestView",
    "Result",
    "SchedulerClient",
    "Unauthenticated",
    "Unavailable",
    "cancelled",
    "log",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cortado' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
