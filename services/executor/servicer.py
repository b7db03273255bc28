"""The Executor gRPC service: the executor's inventory, for operators and the CLI."""

from __future__ import annotations

import grpc

from cortado.v1 import control_pb2, control_pb2_grpc
from services.executor.supervisor import Supervisor


class ExecutorServicer(control_pb2_grpc.ExecutorServicer):
    """Answers what this executor has and runs."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    async def GetInfo(
        self, request: control_pb2.GetInfoRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.GetInfoResponse:
        return control_pb2.GetInfoResponse(info=self._supervisor.info())
