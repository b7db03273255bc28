"""Ingest's gRPC services: Submission and WaitingSubmission (proto ↔ Submitter, Outcomes for the waiting forms),
and Requests (cancel).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import NoReturn

import grpc
from google.api import httpbody_pb2
from google.rpc import status_pb2

from cortado import _waiting, records
from cortado._apikeys import KeyGate, Metadata
from cortado._service import abort
from cortado.records.cancel import ApiNotDeployed, Cancelled, Canceller, Outcome
from cortado.records.outcomes import Outcomes
from cortado.v1 import public_pb2, public_pb2_grpc, records_pb2
from services.ingest.options import PRIORITY_HEADER, WEBHOOK_HEADER, OptionsError, submit_options
from services.ingest.submitter import Options, Prepared, Refused, Submitter

log = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "idempotency-key"
PREFER_HEADER = "prefer"

STREAM_WINDOW = 64
"""Items of one SubmitStream being queued at once (their answers still go out in order)."""


def _headers(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """The call's metadata the services read (idempotency-key, prefer, cortado-*), by lower-case name."""
    found: dict[str, str] = {}
    for name, value in context.invocation_metadata() or ():
        if name in (IDEMPOTENCY_HEADER, PREFER_HEADER, PRIORITY_HEADER, WEBHOOK_HEADER):
            found[name] = value if isinstance(value, str) else value.decode("utf-8", "replace")
    return found


async def _refuse(context: grpc.aio.ServicerContext, refused: Refused) -> NoReturn:
    if refused.retry_after is not None:
        await context.send_initial_metadata((("retry-after", str(refused.retry_after)),))
    await abort(context, refused.code, refused.message)


class Waiting:
    """A submit that waits for its outcome: follow the record first, then queue, then wait."""

    def __init__(self, submitter: Submitter, outcomes: Outcomes) -> None:
        self._submitter = submitter
        self._outcomes = outcomes

    async def submit(
        self, api: str, content_type: str, body: bytes, key: str | None, seconds: float, options: Options
    ) -> tuple[str, records_pb2.RequestView]:
        """The request's id and its final view if it finished within `seconds`, else its view at the end."""
        prepared: Prepared = await self._submitter.prepare(api, content_type, body, key, options)
        async with self._outcomes.follow(prepared.id) as writes:
            if not prepared.known:
                await self._submitter.enqueue(prepared)
            record = await self._outcomes.wait(writes, prepared.api, prepared.id, seconds, prepared.known)
        return prepared.id, records.view(record) if record else records.not_found_view(prepared.id)


CheckWebhook = Callable[[str], str]
"""Checks a request's webhook URL: the URL to store, or ValueError saying why it is refused."""


class SubmissionServicer(public_pb2_grpc.SubmissionServicer):
    """Submit (at once, or waiting with `wait`) and SubmitStream."""

    def __init__(
        self,
        submitter: Submitter,
        outcomes: Outcomes,
        max_wait_seconds: float,
        check_webhook: CheckWebhook,
        gate: KeyGate | None = None,
    ) -> None:
        self._submitter = submitter
        self._check_webhook = check_webhook
        self._gate = gate or KeyGate(required=False)
        self._waiting = Waiting(submitter, outcomes)
        self._max_wait = max_wait_seconds
        self._stopping = asyncio.Event()
        self._items: set[asyncio.Task[public_pb2.SubmitStreamResponse]] = set()

    def stop_taking_items(self) -> None:
        """SubmitStream calls take no new item from now on; each ends once it answered those it took."""
        self._stopping.set()

    async def Submit(
        self, request: public_pb2.SubmitRequest, context: grpc.aio.ServicerContext
    ) -> public_pb2.SubmitResponse:
        await self._gate.admit(context, request.api, limited=True)
        headers = _headers(context)
        key = request.idempotency_key or headers.get(IDEMPOTENCY_HEADER)
        body = request.body
        try:
            _waiting.check_seconds(request.wait, "wait")
            options = submit_options(request.priority, request.webhook, headers, self._check_webhook)
        except (_waiting.WaitError, OptionsError) as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            if request.wait == 0:
                prepared = await self._submitter.submit(request.api, body.content_type, body.data, key, options)
                return public_pb2.SubmitResponse(id=prepared.id)
            seconds = _waiting.capped(request.wait, self._max_wait)
            request_id, view = await self._waiting.submit(
                request.api, body.content_type, body.data, key, seconds, options
            )
        except Refused as refused:
            await _refuse(context, refused)
        return public_pb2.SubmitResponse(id=request_id, request=view)

    async def SubmitStream(
        self, request_iterator: AsyncIterator[public_pb2.SubmitRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[public_pb2.SubmitStreamResponse]:
        # Items are queued concurrently (up to STREAM_WINDOW at once) and answered in the order they came.
        answers: asyncio.Queue[asyncio.Task[public_pb2.SubmitStreamResponse] | None] = asyncio.Queue()
        metadata = context.invocation_metadata()
        window = asyncio.Semaphore(STREAM_WINDOW)

        async def take_items() -> bool:
            """Take items until the client's side ends (False) or the service stops taking them (True)."""
            stopping = asyncio.ensure_future(self._stopping.wait())
            try:
                while True:
                    await window.acquire()
                    # The next item, or the stop: a client that sends nothing does not hold the stop up.
                    following = asyncio.ensure_future(anext(request_iterator))
                    await asyncio.wait((following, stopping), return_when=asyncio.FIRST_COMPLETED)
                    if not following.done():
                        following.cancel()
                        return True
                    try:
                        item = following.result()
                    except StopAsyncIteration:
                        return False
                    task = asyncio.create_task(self._stream_item(item, metadata))
                    # Held until done: an item goes on being queued even if the client goes away meanwhile.
                    self._items.add(task)
                    task.add_done_callback(self._items.discard)
                    answers.put_nowait(task)
                    if len(item.body.data) > self._submitter.inline_payload_bytes:
                        # Large bodies one at a time: the window bounds the items, this bounds the memory.
                        await asyncio.wait([task])
            finally:
                stopping.cancel()
                answers.put_nowait(None)

        reader = asyncio.create_task(take_items())
        reader.add_done_callback(lambda task: task.cancelled() or task.exception())
        try:
            while (answer := await answers.get()) is not None:
                yield await answer
                window.release()
            cut_short = await reader
        finally:
            reader.cancel()
        if cut_short:
            await abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                "the service is stopping: every item answered so far is settled; "
                "send the rest again (it is safe to retry)",
            )

    async def _stream_item(
        self, item: public_pb2.SubmitRequest, metadata: Metadata | None
    ) -> public_pb2.SubmitStreamResponse:
        try:
            refusal = self._gate.refusal(metadata, item.api, limited=True)
            if refusal is not None:
                raise Refused(refusal.code, refusal.message, refusal.retry_after)
            if item.wait:
                raise Refused(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "wait is not supported on SubmitStream; follow the ids with Results/WatchMany",
                )
            key = item.idempotency_key or None
            try:
                options = submit_options(item.priority, item.webhook, {}, self._check_webhook)
            except OptionsError as exc:
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
            prepared = await self._submitter.submit(item.api, item.body.content_type, item.body.data, key, options)
        except Refused as refused:
            status = status_pb2.Status(code=refused.code.value[0], message=refused.message)
            return public_pb2.SubmitStreamResponse(status=status)
        except Exception as exc:
            log.exception("stream item not queued", extra={"api": item.api, "error": repr(exc)})
            unavailable = grpc.StatusCode.UNAVAILABLE
            message = "the request could not be queued; it is safe to retry"
            return public_pb2.SubmitStreamResponse(status=status_pb2.Status(code=unavailable.value[0], message=message))
        return public_pb2.SubmitStreamResponse(id=prepared.id, status=status_pb2.Status(code=0))


class WaitingSubmissionServicer(public_pb2_grpc.WaitingSubmissionServicer):
    """`POST /<api>?wait=<s>` and `POST /<api>` with `Prefer: wait=<s>`, as Envoy transcodes them."""

    def __init__(
        self,
        submitter: Submitter,
        outcomes: Outcomes,
        max_wait_seconds: float,
        check_webhook: CheckWebhook,
        gate: KeyGate | None = None,
    ) -> None:
        self._submitter = submitter
        self._waiting = Waiting(submitter, outcomes)
        self._max_wait = max_wait_seconds
        self._check_webhook = check_webhook
        self._gate = gate or KeyGate(required=False)

    async def SubmitAndWait(
        self, request: public_pb2.SubmitAndWaitRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        await self._gate.admit(context, request.api, limited=True)
        headers = _headers(context)
        try:
            seconds = self._seconds(request.wait, headers.get(PREFER_HEADER, ""))
            options = submit_options(0, "", headers, self._check_webhook)
        except (_waiting.WaitError, OptionsError) as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        body = request.body
        try:
            _, view = await self._waiting.submit(
                request.api, body.content_type, body.data, headers.get(IDEMPOTENCY_HEADER), seconds, options
            )
        except Refused as refused:
            await _refuse(context, refused)
        # Exactly what GET /<api>/<id> answers for the record as it now stands, its HTTP status included.
        if view.status == records_pb2.REQUEST_STATUS_NOT_FOUND:
            await context.send_initial_metadata(((_waiting.HTTP_STATUS_HEADER, "404"),))
        return httpbody_pb2.HttpBody(content_type="application/json", data=records.render_json(view, request.api))

    def _seconds(self, query: str, prefer: str) -> float:
        """The wait asked for: `?wait=` first, else the Prefer header's `wait` (Envoy routes only these here)."""
        if query:
            return _waiting.parse_seconds(query, "?wait=", self._max_wait)
        preferred = _waiting.prefer_wait(prefer)
        if preferred is not None:
            return _waiting.parse_seconds(preferred, "the wait in the Prefer header", self._max_wait)
        # Envoy sends here only a POST with ?wait= or with `wait=` in Prefer: this one had an empty ?wait=.
        return _waiting.parse_seconds(query, "?wait=", self._max_wait)


class RequestsServicer(public_pb2_grpc.RequestsServicer):
    """`DELETE /<api>/<id>` (CancelRequest, as Envoy transcodes it) and Cancel for gRPC clients."""

    def __init__(self, canceller: Canceller, gate: KeyGate | None = None) -> None:
        self._canceller = canceller
        self._gate = gate or KeyGate(required=False)

    async def _cancel(self, request: public_pb2.CancelRequestRequest, context: grpc.aio.ServicerContext) -> Cancelled:
        await self._gate.admit(context, request.api, limited=True)
        try:
            return await self._canceller.cancel(request.api, request.id)
        except ApiNotDeployed as exc:
            await abort(context, grpc.StatusCode.NOT_FOUND, str(exc))

    async def CancelRequest(
        self, request: public_pb2.CancelRequestRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        done = await self._cancel(request, context)
        # The request's state as GET /<api>/<id> answers it: 200 cancelled, 409 finished otherwise, 404 unknown.
        view = records.view(done.record) if done.record is not None else records.not_found_view(request.id)
        status = {Outcome.FINISHED: "409", Outcome.UNKNOWN: "404"}.get(done.outcome)
        if status is not None:
            await context.send_initial_metadata(((_waiting.HTTP_STATUS_HEADER, status),))
        body = records.render_json(view, request.api)
        if done.outcome == Outcome.FINISHED:
            body = body[:-1] + b',"message":' + json.dumps(_finished_message(request, view)).encode() + b"}"
        return httpbody_pb2.HttpBody(content_type="application/json", data=body)

    async def Cancel(
        self, request: public_pb2.CancelRequestRequest, context: grpc.aio.ServicerContext
    ) -> public_pb2.CancelResponse:
        done = await self._cancel(request, context)
        if done.outcome == Outcome.UNKNOWN or done.record is None:
            await abort(context, grpc.StatusCode.NOT_FOUND, records.not_found_message(request.api, request.id))
        view = records.view(done.record)
        if done.outcome == Outcome.FINISHED:
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, _finished_message(request, view))
        return public_pb2.CancelResponse(request=view)


def _finished_message(request: public_pb2.CancelRequestRequest, view: records_pb2.RequestView) -> str:
    status = records.STATUS_NAMES.get(view.status, "unknown")
    return (
        f"request {request.id!r} of API {request.api!r} already {status}: "
        "only a queued or running request can be cancelled"
    )
