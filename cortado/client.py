"""Python clients: the public API (submit, get, watch) and the scheduler's control plane (deploy and friends)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
from google.api import httpbody_pb2

from cortado.project import find_config, pack_project
from cortado.service import MAX_MESSAGE_BYTES
from cortado.v1 import control_pb2, control_pb2_grpc, public_pb2, public_pb2_grpc, records_pb2

_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


class Client:
    """Submits requests and reads their state over gRPC (through Envoy or straight to the services)."""

    def __init__(self, address: str) -> None:
        self._channel = grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
        self._submission = public_pb2_grpc.SubmissionStub(self._channel)
        self._results = public_pb2_grpc.ResultsStub(self._channel)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, api: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Submit one payload; the request id. grpc.RpcError carries the reason on refusal."""
        body = httpbody_pb2.HttpBody(content_type=content_type, data=data)
        return str(self._submission.Submit(public_pb2.SubmitRequest(api=api, body=body), timeout=60).id)

    def get(self, api: str, request_id: str) -> records_pb2.RequestView:
        """The request's current state (status NOT_FOUND when unknown or expired)."""
        reply: public_pb2.GetResponse = self._results.Get(public_pb2.GetRequest(api=api, id=request_id), timeout=30)
        return reply.request

    def watch(self, api: str, request_id: str, timeout: float | None = None) -> Iterator[records_pb2.RequestView]:
        """Every state of the request from now on, ending with its final one."""
        for reply in self._results.Watch(public_pb2.WatchRequest(api=api, id=request_id), timeout=timeout):
            yield reply.request

    def wait(self, api: str, request_id: str, timeout: float | None = None) -> records_pb2.RequestView:
        """The request's final state (or not found), following the watch stream."""
        states = list(self.watch(api, request_id, timeout))
        return states[-1]


class SchedulerClient:
    """Deploys, lists, describes and deletes APIs through the scheduler's gRPC port."""

    def __init__(self, address: str, token: str = "") -> None:
        self._channel = grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
        self._stub = control_pb2_grpc.SchedulerStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> SchedulerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def deploy(self, project_dir: Path) -> control_pb2.DeployResponse:
        """Package the project folder and deploy its APIs.

        Raises ProjectError/ConfigError for a project that cannot be packed and
        grpc.RpcError (INVALID_ARGUMENT, with the reason) for one the scheduler refuses.
        """
        config = find_config(project_dir)
        return self.deploy_bundle(config.name, config.read_bytes(), pack_project(project_dir, config.name))

    def deploy_bundle(self, config_name: str, config_yaml: bytes, bundle: bytes) -> control_pb2.DeployResponse:
        """Deploy an already packaged project (see deploy)."""
        request = control_pb2.DeployRequest(config_name=config_name, config_yaml=config_yaml, bundle=bundle)
        reply: control_pb2.DeployResponse = self._stub.Deploy(request, timeout=120, metadata=self._metadata)
        return reply

    def delete(self, name: str, force: bool = False) -> None:
        """Delete an API (grpc.RpcError NOT_FOUND if it is not deployed, FAILED_PRECONDITION while it has work)."""
        request = control_pb2.DeleteApiRequest(name=name, force=force)
        self._stub.DeleteApi(request, timeout=30, metadata=self._metadata)

    def list(self) -> list[control_pb2.ApiStatus]:
        """Every deployed API's status."""
        return list(self._stub.ListApis(control_pb2.ListApisRequest(), timeout=30, metadata=self._metadata).apis)

    def logs(self, name: str, tail: int = 100, follow: bool = False) -> Iterator[bytes]:
        """The API's last `tail` log lines (JSON, one per item), then with follow every new one."""
        request = control_pb2.StreamLogsRequest(name=name, tail=tail, follow=follow)
        for reply in self._stub.StreamLogs(request, metadata=self._metadata):
            yield bytes(reply.line)

    def describe(self, name: str) -> control_pb2.ApiStatus:
        """One API's status (grpc.RpcError NOT_FOUND if it is not deployed)."""
        request = control_pb2.DescribeApiRequest(name=name)
        reply: control_pb2.DescribeApiResponse = self._stub.DescribeApi(request, timeout=30, metadata=self._metadata)
        return reply.api
