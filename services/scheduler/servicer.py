"""The Scheduler gRPC service: a thin adapter over the registry and the reconciler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TypeVar

import grpc
from google.api import httpbody_pb2
from nats.js import JetStreamContext

from cortado import _metrics, records
from cortado._mirror import KvMirror
from cortado._service import abort
from cortado.console import console_file
from cortado.records.cancel import ApiNotDeployed, Canceller, Outcome
from cortado.v1 import control_pb2, control_pb2_grpc
from services.scheduler.activity import Activity
from services.scheduler.apikeys import ApiKeyError, ApiKeyStore, NoSuchKeyError, shown
from services.scheduler.deadletters import NoSuchDeadLetterError, list_dead_letters, replay_dead_letter
from services.scheduler.logs import stream_logs
from services.scheduler.reconciler import Reconciler
from services.scheduler.registry import ApiBusyError, DeployError, Registry, UnknownApiError
from services.scheduler.requestdetail import RequestDetails
from services.scheduler.requestlist import BadFilterError, list_requests, parse_filter, summary
from services.scheduler.webhooksecrets import (
    DEFAULT_PREVIOUS_VALID_SECONDS,
    MAX_PREVIOUS_VALID_SECONDS,
    NoSecretError,
    WebhookSecrets,
)

log = logging.getLogger(__name__)

_Part = TypeVar("_Part")

IDLE_MESSAGE = "scaled to zero (min_replicas 0); the first request starts a replica"

DEFAULT_WATCH_SECONDS = 2.0
MIN_WATCH_SECONDS, MAX_WATCH_SECONDS = 0.5, 60.0


def api_status(
    spec: control_pb2.ApiSpec,
    executors: list[control_pb2.ExecutorInfo],
    desired: int,
    problem: str | None,
    queued: int,
    in_flight: int,
) -> control_pb2.ApiStatus:
    """Summarise one API from its spec and the replicas the executors report."""
    placed = [
        (info, r) for info in executors for r in info.replicas if r.api == spec.name and r.version == spec.version
    ]
    replicas = [r for _, r in placed]
    ready = sum(1 for r in replicas if r.state == control_pb2.REPLICA_STATE_READY)
    failed = [r for r in replicas if r.state == control_pb2.REPLICA_STATE_FAILED]
    status = control_pb2.ApiStatus(
        name=spec.name,
        version=spec.version,
        desired_replicas=desired,
        ready_replicas=ready,
        queued=queued,
        in_flight=in_flight,
        deployed_at=spec.deployed_at,
        completed=sum(r.completed for r in replicas),
        failed=sum(r.failed for r in replicas),
    )
    for info, r in sorted(placed, key=lambda pair: pair[1].replica):
        status.replicas.append(
            control_pb2.ReplicaLocation(
                replica=r.replica,
                state=r.state,
                executor_id=info.id,
                hostname=info.hostname,
                gpu_indices=r.gpu_indices,
            )
        )
    if ready:
        status.state = control_pb2.API_STATE_LIVE
    elif failed:
        status.state = control_pb2.API_STATE_FAILED
        status.message = failed[0].message
    elif problem:
        status.state = control_pb2.API_STATE_UNPLACEABLE
        status.message = problem
    elif desired == 0 and not queued and not in_flight:
        # Scaled to zero and nothing waiting: deployed, and the first request wakes it (waking shows as starting).
        status.state = control_pb2.API_STATE_IDLE
        status.message = IDLE_MESSAGE
    else:
        status.state = control_pb2.API_STATE_STARTING
    if ready and problem:
        status.message = problem
    return status


class SchedulerServicer(control_pb2_grpc.SchedulerServicer):
    """Deploys, deletes, lists, describes, pauses and resumes APIs; rotates their webhook signing secrets; keeps API
    keys; and answers the web console (its files, an API's requests, one request's detail, cancels)."""

    def __init__(
        self,
        registry: Registry,
        reconciler: Reconciler,
        executors: KvMirror[control_pb2.ExecutorInfo],
        js: JetStreamContext,
        webhook_secrets: WebhookSecrets | None = None,
        api_keys: ApiKeyStore | None = None,
        activity: Activity | None = None,
        details: RequestDetails | None = None,
        canceller: Canceller | None = None,
    ) -> None:
        self._js = js
        self._closing = asyncio.Event()
        """Set when the scheduler stops: open WatchApis streams end rather than hold its grace period."""
        self._activity = activity
        self._details = details
        self._canceller = canceller
        self._api_keys = api_keys
        self._registry = registry
        self._reconciler = reconciler
        self._executors = executors
        self._webhook_secrets = webhook_secrets

    async def _status(self, spec: control_pb2.ApiSpec) -> control_pb2.ApiStatus:
        queue = await self._registry.queue_state(spec.name)
        _metrics.QUEUE_LENGTH.labels(spec.name).set(queue.queued)
        _metrics.IN_FLIGHT.labels(spec.name).set(queue.in_flight)
        status = api_status(
            spec,
            [info for _, info in self._executors.items()],
            self._reconciler.desired_replicas(spec),
            self._reconciler.problems.get(spec.name),
            queue.queued,
            queue.in_flight,
        )
        status.queued_by_priority.update(queue.by_priority)
        status.paused = queue.paused
        if self._activity is not None:
            status.activity.CopyFrom(self._activity.of(spec.name, time.time()))
        if self._webhook_secrets is not None:
            try:
                status.webhooks_undelivered = await self._webhook_secrets.undelivered(spec.name)
            except Exception as exc:
                # The rest of the status still answers.
                log.warning("undelivered webhooks not counted", extra={"api": spec.name, "error": repr(exc)})
        return status

    async def Deploy(
        self, request: control_pb2.DeployRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.DeployResponse:
        try:
            response = await self._registry.deploy(request.config_name, request.config_yaml, request.bundle)
        except DeployError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        self._reconciler.wake()
        return response

    async def DeleteApi(
        self, request: control_pb2.DeleteApiRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.DeleteApiResponse:
        try:
            await self._registry.delete(request.name, request.force)
        except UnknownApiError:
            await abort(context, grpc.StatusCode.NOT_FOUND, f"API {request.name!r} is not deployed")
        except ApiBusyError as exc:
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        self._reconciler.wake()
        return control_pb2.DeleteApiResponse()

    async def ListApis(
        self, request: control_pb2.ListApisRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.ListApisResponse:
        specs = sorted((spec for _, spec in self._registry.apis.items()), key=lambda s: s.name)
        return control_pb2.ListApisResponse(apis=[await self._status(s) for s in specs])

    async def WatchApis(
        self, request: control_pb2.WatchApisRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[control_pb2.ListApisResponse]:
        interval = DEFAULT_WATCH_SECONDS
        if request.HasField("interval"):
            interval = request.interval.ToNanoseconds() / 1e9
        if not MIN_WATCH_SECONDS <= interval <= MAX_WATCH_SECONDS:
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"interval must be from {MIN_WATCH_SECONDS:g} s to {MAX_WATCH_SECONDS:g} s, got {interval:g} s",
            )
        while not self._closing.is_set():
            yield await self.ListApis(control_pb2.ListApisRequest(), context)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), interval)

    def close_streams(self) -> None:
        """End the open WatchApis streams (the scheduler is stopping; the console reconnects to another)."""
        self._closing.set()

    async def _deployed(self, name: str, context: grpc.aio.ServicerContext) -> control_pb2.ApiSpec:
        """The API's spec; the call ends NOT_FOUND "API '<name>' is not deployed" when there is none."""
        spec = self._registry.apis.get(name)
        if spec is None:
            await abort(context, grpc.StatusCode.NOT_FOUND, f"API {name!r} is not deployed")
        assert spec is not None
        return spec

    async def PauseApi(
        self, request: control_pb2.PauseApiRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.PauseApiResponse:
        return control_pb2.PauseApiResponse(api=await self._set_paused(request.name, True, context))

    async def ResumeApi(
        self, request: control_pb2.ResumeApiRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.ResumeApiResponse:
        return control_pb2.ResumeApiResponse(api=await self._set_paused(request.name, False, context))

    async def _set_paused(self, name: str, paused: bool, context: grpc.aio.ServicerContext) -> control_pb2.ApiStatus:
        spec = await self._deployed(name, context)
        await self._registry.set_paused(spec.name, paused)
        self._reconciler.wake()
        return await self._status(spec)

    async def ListRequests(
        self, request: control_pb2.ListRequestsRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.ListRequestsResponse:
        spec = await self._deployed(request.name, context)
        try:
            status = parse_filter(request.status)
        except BadFilterError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        details = await self._console_part(self._details, context)
        listing = await list_requests(self._js, details.requests, spec.name, status, request.limit)
        return control_pb2.ListRequestsResponse(
            requests=listing.requests, scanned=listing.scanned, truncated=listing.truncated
        )

    async def GetRequestDetail(
        self, request: control_pb2.GetRequestDetailRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.GetRequestDetailResponse:
        spec = await self._deployed(request.name, context)
        details = await self._console_part(self._details, context)
        detail = await details.get(spec.name, request.id)
        if detail is None:
            await abort(context, grpc.StatusCode.NOT_FOUND, records.not_found_message(spec.name, request.id))
        assert detail is not None
        return detail

    async def CancelRequest(
        self, request: control_pb2.CancelRequestByOperatorRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.CancelRequestByOperatorResponse:
        spec = await self._deployed(request.name, context)
        canceller = await self._console_part(self._canceller, context)
        try:
            done = await canceller.cancel(spec.name, request.id)
        except ApiNotDeployed as exc:
            await abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        if done.outcome is Outcome.UNKNOWN or done.record is None:
            await abort(context, grpc.StatusCode.NOT_FOUND, records.not_found_message(spec.name, request.id))
        assert done.record is not None
        log.info("request cancelled from the console", extra={"api": spec.name, "id": request.id})
        return control_pb2.CancelRequestByOperatorResponse(outcome=done.outcome.value, summary=summary(done.record))

    async def GetConsoleFile(
        self, request: control_pb2.GetConsoleFileRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        found = console_file(request.path)
        if found is None:
            await abort(context, grpc.StatusCode.NOT_FOUND, f"the console has no file {request.path!r}")
        assert found is not None
        data, content_type = found
        return httpbody_pb2.HttpBody(content_type=content_type, data=data)

    async def _console_part(self, part: _Part | None, context: grpc.aio.ServicerContext) -> _Part:
        if part is None:
            await abort(context, grpc.StatusCode.UNIMPLEMENTED, "this scheduler does not serve the console")
        assert part is not None
        return part

    async def DescribeApi(
        self, request: control_pb2.DescribeApiRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.DescribeApiResponse:
        spec = await self._deployed(request.name, context)
        return control_pb2.DescribeApiResponse(api=await self._status(spec))

    async def ListDeadLetters(
        self, request: control_pb2.ListDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.ListDeadLettersResponse:
        await self._deployed(request.name, context)
        return control_pb2.ListDeadLettersResponse(dead_letters=await list_dead_letters(self._js, request.name))

    async def ReplayDeadLetter(
        self, request: control_pb2.ReplayDeadLetterRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.ReplayDeadLetterResponse:
        await self._deployed(request.name, context)
        try:
            new_id = await replay_dead_letter(self._js, request.name, request.id)
        except NoSuchDeadLetterError:
            await abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"API {request.name!r} has no dead letter {request.id!r} (never failed that way, replayed already, "
                "or expired)",
            )
        return control_pb2.ReplayDeadLetterResponse(id=new_id)

    async def StreamLogs(
        self, request: control_pb2.StreamLogsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[control_pb2.StreamLogsResponse]:
        await self._deployed(request.name, context)
        async for line in stream_logs(self._js, request.name, request.tail, request.follow):
            yield control_pb2.StreamLogsResponse(line=line)

    async def RotateWebhookSecret(
        self, request: control_pb2.RotateWebhookSecretRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.RotateWebhookSecretResponse:
        await self._deployed(request.name, context)
        if self._webhook_secrets is None:
            await abort(context, grpc.StatusCode.UNIMPLEMENTED, "this scheduler keeps no webhook secrets")
        valid_for = DEFAULT_PREVIOUS_VALID_SECONDS
        if request.HasField("previous_valid_for"):
            valid_for = request.previous_valid_for.ToNanoseconds() / 1e9
        if not 0 <= valid_for <= MAX_PREVIOUS_VALID_SECONDS:
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"previous_valid_for must be from 0 to {MAX_PREVIOUS_VALID_SECONDS / 86400:g} days, "
                f"got {valid_for:g} s",
            )
        try:
            rotated = await self._webhook_secrets.rotate(request.name, valid_for)
        except NoSecretError as exc:
            await abort(context, grpc.StatusCode.ABORTED, str(exc))
        response = control_pb2.RotateWebhookSecretResponse(secret=rotated.current)
        if rotated.HasField("previous_until"):
            response.previous_until.CopyFrom(rotated.previous_until)
        return response

    async def _key_store(self, context: grpc.aio.ServicerContext) -> ApiKeyStore:
        if self._api_keys is None:
            await abort(context, grpc.StatusCode.UNIMPLEMENTED, "this scheduler keeps no API keys")
        assert self._api_keys is not None
        return self._api_keys

    async def CreateApiKey(
        self, request: control_pb2.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.CreateApiKeyResponse:
        store = await self._key_store(context)
        unknown = [api for api in request.apis if self._registry.apis.get(api) is None]
        if unknown:
            await abort(context, grpc.StatusCode.NOT_FOUND, f"API {unknown[0]!r} is not deployed")
        expires_in = request.expires_in.ToTimedelta() if request.HasField("expires_in") else None
        try:
            key, record = await store.create(
                request.name, list(request.apis), expires_in, request.rate_per_second, request.burst
            )
        except ApiKeyError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        log.info("API key created", extra={"key_id": record.id, "key_name": record.name, "apis": list(record.apis)})
        return control_pb2.CreateApiKeyResponse(key=key, record=shown(record))

    async def ListApiKeys(
        self, request: control_pb2.ListApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.ListApiKeysResponse:
        store = await self._key_store(context)
        return control_pb2.ListApiKeysResponse(keys=[shown(record) for record in store.records()])

    async def RevokeApiKey(
        self, request: control_pb2.RevokeApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.RevokeApiKeyResponse:
        store = await self._key_store(context)
        try:
            record = await store.revoke(request.key)
        except NoSuchKeyError as exc:
            await abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        log.info("API key revoked", extra={"key_id": record.id, "key_name": record.name})
        return control_pb2.RevokeApiKeyResponse(record=shown(record))
