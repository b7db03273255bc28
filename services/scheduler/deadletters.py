"""Dead letters: the requests Cortado gave up on, kept so that an operator can look at them and queue them again.

An executor that fails a request with `HandlerProcessDied` (its handler's process kept dying) or
`DeliveryLimitExceeded` (no outcome could be recorded) first stores the request's work item, body included,
on `cortado.dead.<api>.<id>` with the error in its headers. `cortado dead-letters` lists them; `cortado replay`
queues one again under a new id.
"""

from __future__ import annotations

import secrets

from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from cortado import _names, _nats, _tracing
from cortado._env import Env
from cortado.records import now_timestamp
from cortado.v1 import control_pb2, records_pb2

DEAD_MAX_AGE_SECONDS = 7 * 24 * 3600.0
"""Dead letters are kept as long as request records are by default (7 days)."""

DEAD_MAX_BYTES = 1024**3

MAX_LISTED = 1000
"""Most dead letters one ListDeadLetters answers (the newest)."""

ERROR_TYPE_HEADER = "Cortado-Error-Type"
ERROR_MESSAGE_HEADER = "Cortado-Error-Message"
"""The headers the executor writes the error in (services/executor/redelivery.py)."""


class NoSuchDeadLetterError(LookupError):
    """The API has no dead letter with that id (never one, replayed already, or expired)."""


async def ensure_dead_stream(js: JetStreamContext) -> None:
    """Create the dead-letter stream if it does not exist (oldest letters go first when it is full)."""
    config = StreamConfig(
        name=_names.DEAD_STREAM,
        subjects=["cortado.dead.>"],
        storage=StorageType.FILE,
        max_age=DEAD_MAX_AGE_SECONDS,
        max_bytes=Env().integer("DEAD_MAX_BYTES", DEAD_MAX_BYTES, minimum=1024),
        discard=DiscardPolicy.OLD,
        num_replicas=_nats.replicas(),
    )
    await _nats.ensure_stream(js, config)


async def list_dead_letters(js: JetStreamContext, api: str) -> list[control_pb2.DeadLetter]:
    """The API's dead letters, newest first (at most MAX_LISTED)."""
    info = await js.stream_info(_names.DEAD_STREAM, subjects_filter=_names.dead_subject(api, ">"))
    letters: list[control_pb2.DeadLetter] = []
    for subject in list(info.state.subjects or {})[-MAX_LISTED:]:
        try:
            msg = await js.get_msg(_names.DEAD_STREAM, subject=subject)
        except NotFoundError:
            continue
        item = records_pb2.WorkItem.FromString(msg.data or b"")
        headers = msg.headers or {}
        failed_at = Timestamp()
        if msg.time is not None:
            failed_at.FromDatetime(msg.time)
        letters.append(
            control_pb2.DeadLetter(
                id=item.id,
                error_type=headers.get(ERROR_TYPE_HEADER, ""),
                error_message=headers.get(ERROR_MESSAGE_HEADER, ""),
                failed_at=failed_at,
                submitted_at=item.submitted_at,
                content_type=item.content_type,
                body_bytes=len(item.payload) if not item.payload_object else 0,
            )
        )
    letters.sort(key=lambda letter: (letter.failed_at.seconds, letter.failed_at.nanos), reverse=True)
    return letters


async def replay_dead_letter(js: JetStreamContext, api: str, request_id: str) -> str:
    """Queue the dead letter's request again under a new id (returned) and remove the letter."""
    try:
        msg = await js.get_msg(_names.DEAD_STREAM, subject=_names.dead_subject(api, request_id))
    except NotFoundError:
        raise NoSuchDeadLetterError(request_id) from None
    item = records_pb2.WorkItem.FromString(msg.data or b"")
    item.id = secrets.token_hex(16)
    item.submitted_at.CopyFrom(now_timestamp())
    # The body (inline, or the Object Store entry the letter kept) goes with it.
    await js.publish(
        _names.work_subject(api, item.id, item.priority),
        item.SerializeToString(),
        stream=_names.work_stream(api),
        headers=_tracing.inject_headers({"Nats-Msg-Id": item.id}),
    )
    if msg.seq is not None:
        await js.delete_msg(_names.DEAD_STREAM, msg.seq)
    return item.id
