"""Python clients: the public API (submit, get, watch) and the scheduler's control plane (deploy and friends)."""

from __future__ import annotations

import builtins
import contextlib
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import grpc
from google.api import httpbody_pb2

from cortado._clientcommon import (
    CHANNEL_OPTIONS,
    MetadataInterceptor,
    bearer,
    channel_security,
    submit_request,
    watch_ends,
    watch_requests,
)
from cortado._tls import TlsError, channel_credentials, diagnose, load_ca
from cortado.asyncclient import AsyncClient
from cortado.project import find_config, pack_project
from cortado.v1 import control_pb2, control_pb2_grpc, public_pb2, public_pb2_grpc, records_pb2

__all__ = ["AsyncClient", "Client", "SchedulerClient"]


class Client:
    """Submits requests and reads their state over gRPC (through Envoy or straight to the services).

    api_key, when given, is sent on every call as `authorization: Bearer <api_key>`. ca: the PEM file of the CA
    that signed the public port's certificate, to connect with TLS (as the port serves with CORTADO_HTTP_TLS_CERT);
    empty: plain text.
    """

    def __init__(self, address: str, api_key: str = "", ca: str | Path = "") -> None:
        security = channel_security(ca)
        if security is None:
            self._plain = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        else:
            self._plain = grpc.secure_channel(address, security, options=CHANNEL_OPTIONS)
        self._channel = grpc.intercept_channel(self._plain, MetadataInterceptor(bearer(api_key)))
        self._submission = public_pb2_grpc.SubmissionStub(self._channel)
        self._results = public_pb2_grpc.ResultsStub(self._channel)
        self._requests = public_pb2_grpc.RequestsStub(self._channel)

    def close(self) -> None:
        """Close the channel."""
        self._plain.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    request = staticmethod(submit_request)
    """One request to submit (with submit_many, or a stub's Submit): `cortado._clientcommon.submit_request`."""

    def submit(
        self,
        api: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        idempotency_key: str = "",
        priority: str = "",
        webhook: str = "",
    ) -> str:
        """Submit one payload; the request id. grpc.RpcError carries the reason on refusal."""
        request = self.request(api, data, content_type, idempotency_key, priority, webhook)
        return str(self._submission.Submit(request, timeout=60).id)

    def submit_and_wait(
        self,
        api: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        wait: float = 60.0,
        idempotency_key: str = "",
        priority: str = "",
        webhook: str = "",
    ) -> records_pb2.RequestView:
        """Submit one payload and wait up to `wait` seconds (capped by the service, 60 s by default).

        The request's final state if it finished within the wait, else its state then (the request goes on:
        follow its `id` with wait() or get()). grpc.RpcError carries the reason on refusal.
        """
        request = self.request(api, data, content_type, idempotency_key, priority, webhook)
        request.wait = wait
        reply: public_pb2.SubmitResponse = self._submission.Submit(request, timeout=wait + 60)
        return reply.request

    def submit_many(
        self, requests: Iterable[public_pb2.SubmitRequest], timeout: float | None = None
    ) -> Iterator[public_pb2.SubmitStreamResponse]:
        """Submit many requests over one stream (Submission/SubmitStream), sent as the iterable yields them.

        Yields one answer per request, in order: `id` when accepted; otherwise `status.code` (a
        grpc.StatusCode value: NOT_FOUND, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE) and
        `status.message`, and the stream goes on. Build requests with Client.request.
        """
        yield from self._submission.SubmitStream(iter(requests), timeout=timeout)

    def results(self, api: str, ids: Iterable[str], timeout: float | None = None) -> Iterator[records_pb2.RequestView]:
        """The final state of each request named (completed, failed, or not found), in the order they finish.

        Over one stream (Results/WatchMany). ids may be a list, or a lazy iterable such as the ids coming back
        from submit_many: each is followed as soon as it is known, and the stream ends once the iterable is
        exhausted and every request it named has finished. LookupError when the API is not deployed.
        """
        for reply in self._results.WatchMany(watch_requests(api, ids), timeout=timeout):
            if reply.HasField("error"):
                raise LookupError(reply.error.message)
            yield reply.request

    def get(self, api: str, request_id: str) -> records_pb2.RequestView:
        """The request's current state (status NOT_FOUND when unknown or expired)."""
        reply: public_pb2.GetResponse = self._results.Get(public_pb2.GetRequest(api=api, id=request_id), timeout=30)
        return reply.request

    def read_result(self, api: str, request_id: str, timeout: float | None = None) -> tuple[str, Iterator[bytes]]:
        """A completed request's result: its media type and its bytes, streamed (Results/ReadResult).

        Works for every kind of result (a dict's JSON is `application/json`); a large one arrives in chunks of at
        most 1 MiB, so it never needs to fit in memory. grpc.RpcError at once with NOT_FOUND for an unknown or
        expired id, FAILED_PRECONDITION while the request is not completed; DATA_LOSS while iterating when the
        stored bytes no longer match their SHA-256.
        """
        stream = self._results.ReadResult(public_pb2.ReadResultRequest(api=api, id=request_id), timeout=timeout)
        first: httpbody_pb2.HttpBody = next(stream)

        def chunks() -> Iterator[bytes]:
            yield first.data
            for message in stream:
                yield message.data

        return first.content_type, chunks()

    def cancel(self, api: str, request_id: str) -> records_pb2.RequestView:
        """Cancel a request: its state, now `cancelled` (the same when it already was).

        A queued request never runs; a running one is stopped (see the handler guide). grpc.RpcError with
        FAILED_PRECONDITION when the request had already finished otherwise (the message names its status),
        NOT_FOUND for an unknown id or API.
        """
        request = public_pb2.CancelRequestRequest(api=api, id=request_id)
        reply: public_pb2.CancelResponse = self._requests.Cancel(request, timeout=30)
        return reply.request

    def watch(self, api: str, request_id: str, timeout: float | None = None) -> Iterator[records_pb2.RequestView]:
        """Every state of the request from now on, ending with its final one (or NOT_FOUND).

        Past the service's Watch limit (240 s by default) it calls Watch again, so it ends only with a final
        state, or at `timeout` seconds (grpc.RpcError DEADLINE_EXCEEDED) when given.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last_status: int | None = None
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                for reply in self._results.Watch(public_pb2.WatchRequest(api=api, id=request_id), timeout=left):
                    if reply.request.status != last_status:  # a new Watch starts with the state already seen
                        last_status = reply.request.status
                        yield reply.request
                    if watch_ends(reply.request):
                        return
                return
            except grpc.RpcError as exc:
                out_of_time = deadline is not None and time.monotonic() >= deadline
                if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED or out_of_time:
                    raise

    def wait(self, api: str, request_id: str, timeout: float | None = None) -> records_pb2.RequestView:
        """The request's final state (or not found), following the watch stream."""
        states = list(self.watch(api, request_id, timeout))
        return states[-1]


class SchedulerClient:
    """Deploys, lists, describes and deletes APIs, and rotates their webhook secrets, over the scheduler's gRPC port.

    ca: the PEM file of the CA that signed the scheduler's certificate: connect with TLS, as a scheduler listening
    beyond loopback requires (empty: plain text, as the local mesh's scheduler on loopback serves). TlsError when
    that file cannot be used, and from any call whose connection failed at TLS: a certificate the CA did not sign
    (or made out to other names than the address's host), a scheduler serving TLS to a plain-text client, or the
    other way round.
    """

    def __init__(self, address: str, token: str = "", ca: str | Path = "") -> None:
        self._address = address
        self._ca_file = str(ca)
        self._ca = load_ca(ca) if ca else None
        if self._ca is None:
            self._channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        else:
            self._channel = grpc.secure_channel(address, channel_credentials(self._ca), options=CHANNEL_OPTIONS)
        self._stub = control_pb2_grpc.SchedulerStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> SchedulerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _explained(self) -> Iterator[None]:
        """A call that failed to connect because of TLS raises TlsError saying why, not gRPC's UNAVAILABLE."""
        try:
            yield
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                reason = diagnose(self._address, self._ca, self._ca_file)
                if reason:
                    raise TlsError(reason) from None
            raise

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
        with self._explained():
            reply: control_pb2.DeployResponse = self._stub.Deploy(request, timeout=120, metadata=self._metadata)
        return reply

    def delete(self, name: str, force: bool = False) -> None:
        """Delete an API (grpc.RpcError NOT_FOUND if it is not deployed, FAILED_PRECONDITION while it has work)."""
        request = control_pb2.DeleteApiRequest(name=name, force=force)
        with self._explained():
            self._stub.DeleteApi(request, timeout=30, metadata=self._metadata)

    def list(self) -> list[control_pb2.ApiStatus]:
        """Every deployed API's status."""
        with self._explained():
            reply = self._stub.ListApis(control_pb2.ListApisRequest(), timeout=30, metadata=self._metadata)
        return list(reply.apis)

    def logs(self, name: str, tail: int = 100, follow: bool = False) -> Iterator[bytes]:
        """The API's last `tail` log lines (JSON, one per item), then with follow every new one."""
        request = control_pb2.StreamLogsRequest(name=name, tail=tail, follow=follow)
        with self._explained():
            for reply in self._stub.StreamLogs(request, metadata=self._metadata):
                yield bytes(reply.line)

    def dead_letters(self, name: str) -> builtins.list[control_pb2.DeadLetter]:
        """The API's requests Cortado gave up on, newest first (grpc.RpcError NOT_FOUND for an unknown API)."""
        request = control_pb2.ListDeadLettersRequest(name=name)
        with self._explained():
            reply = self._stub.ListDeadLetters(request, timeout=30, metadata=self._metadata)
        return list(reply.dead_letters)

    def pause(self, name: str) -> control_pb2.ApiStatus:
        """Stop dispatching the API's queued requests (they wait); its status (grpc.RpcError NOT_FOUND if it is not
        deployed)."""
        with self._explained():
            reply: control_pb2.PauseApiResponse = self._stub.PauseApi(
                control_pb2.PauseApiRequest(name=name), timeout=30, metadata=self._metadata
            )
        return reply.api

    def resume(self, name: str) -> control_pb2.ApiStatus:
        """Dispatch the API's queued requests again; its status."""
        with self._explained():
            reply: control_pb2.ResumeApiResponse = self._stub.ResumeApi(
                control_pb2.ResumeApiRequest(name=name), timeout=30, metadata=self._metadata
            )
        return reply.api

    def replay(self, name: str, request_id: str) -> str:
        """Queue a dead letter's request again; its new id (grpc.RpcError NOT_FOUND when there is no such letter)."""
        request = control_pb2.ReplayDeadLetterRequest(name=name, id=request_id)
        with self._explained():
            reply: control_pb2.ReplayDeadLetterResponse = self._stub.ReplayDeadLetter(
                request, timeout=30, metadata=self._metadata
            )
        return reply.id

    def rotate_webhook_secret(
        self, name: str, previous_valid_seconds: float | None = None
    ) -> control_pb2.RotateWebhookSecretResponse:
        """Give the API a new webhook signing secret: the answer's `secret` (shown only here) and `previous_until`.

        Until then webhooks carry a signature made with the previous secret too: previous_valid_seconds from now
        (None: the scheduler's default, 24 hours; 0: no longer). grpc.RpcError NOT_FOUND for an API that is not
        deployed, INVALID_ARGUMENT for a negative time or one over 30 days.
        """
        request = control_pb2.RotateWebhookSecretRequest(name=name)
        if previous_valid_seconds is not None:
            request.previous_valid_for.FromNanoseconds(round(previous_valid_seconds * 1e9))
        with self._explained():
            reply: control_pb2.RotateWebhookSecretResponse = self._stub.RotateWebhookSecret(
                request, timeout=30, metadata=self._metadata
            )
        return reply

    def create_api_key(
        self,
        apis: Sequence[str],
        name: str = "",
        expires_in_seconds: float | None = None,
        rate_per_second: float = 0.0,
        burst: int = 0,
    ) -> control_pb2.CreateApiKeyResponse:
        """Make an API key for these APIs: the answer's `key` (shown only here) and `record`.

        rate_per_second (0: none) limits its submissions through each ingest replica, burst above it (0: the rate
        rounded up). grpc.RpcError NOT_FOUND for an API that is not deployed, INVALID_ARGUMENT for no API, a
        name a live key has, an expiry not within 0 to 3650 days, or a negative rate.
        """
        request = control_pb2.CreateApiKeyRequest(
            apis=list(apis), name=name, rate_per_second=rate_per_second, burst=burst
        )
        if expires_in_seconds is not None:
            request.expires_in.FromNanoseconds(round(expires_in_seconds * 1e9))
        with self._explained():
            reply: control_pb2.CreateApiKeyResponse = self._stub.CreateApiKey(
                request, timeout=30, metadata=self._metadata
            )
        return reply

    def api_keys(self) -> builtins.list[control_pb2.ApiKey]:
        """Every API key's record (never the key), oldest first."""
        with self._explained():
            reply = self._stub.ListApiKeys(control_pb2.ListApiKeysRequest(), timeout=30, metadata=self._metadata)
        return list(reply.keys)

    def revoke_api_key(self, key: str) -> control_pb2.ApiKey:
        """Revoke the API key with this id or name (grpc.RpcError NOT_FOUND when none has it); its record."""
        request = control_pb2.RevokeApiKeyRequest(key=key)
        with self._explained():
            reply: control_pb2.RevokeApiKeyResponse = self._stub.RevokeApiKey(
                request, timeout=30, metadata=self._metadata
            )
        return reply.record

    def describe(self, name: str) -> control_pb2.ApiStatus:
        """One API's status (grpc.RpcError NOT_FOUND if it is not deployed)."""
        request = control_pb2.DescribeApiRequest(name=name)
        with self._explained():
            reply: control_pb2.DescribeApiResponse = self._stub.DescribeApi(
                request, timeout=30, metadata=self._metadata
            )
        return reply.api
