"""The scheduler's part of webhooks: each API's signing secrets, and how many of its webhooks wait undelivered.

An API gets its secret (`whsec_` and base64, Standard Webhooks' form) the first time it is deployed: the deploy
answers it, once. Rotating makes a new one and keeps the previous one signing beside it for a while, so receivers
can switch over (the senders sign with both: `cortado.webhooks.active_secrets`). Deleting the API deletes its
secrets and the webhooks still waiting for it (nothing could sign them any more).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from cortado import _names, webhooks
from cortado.v1 import control_pb2

log = logging.getLogger(__name__)

DEFAULT_PREVIOUS_VALID_SECONDS = 24 * 3600.0
"""How long a rotated-out secret keeps signing when the caller does not say."""

MAX_PREVIOUS_VALID_SECONDS = 30 * 24 * 3600.0
"""Longest a rotated-out secret may keep signing."""

MAX_ROTATE_TRIES = 20
"""Rotations of one API that may lose a compare-and-set race in a row before one gives up."""

API_SECONDS = 5.0
"""Longest one JetStream API request (a stream's info) may take."""

_STREAM_NOT_FOUND = 10059


class NoSecretError(Exception):
    """Rotating failed: too many concurrent writes of the API's secrets."""


class WebhookSecrets:
    """The webhook secrets bucket (key = API name) and the webhooks stream's count of waiting jobs per API."""

    def __init__(self, nc: NatsClient, kv: KeyValue) -> None:
        self._nc = nc
        self._kv = kv

    async def create(self, api: str) -> str | None:
        """Give the API a new secret if it has none; the new secret, or None when it had one already."""
        secret = webhooks.new_secret()
        try:
            await self._kv.create(api, control_pb2.WebhookSecrets(current=secret).SerializeToString())
        except KeyWrongLastSequenceError:
            return None
        log.info("webhook signing secret created", extra={"api": api})
        return secret

    async def read(self, api: str) -> control_pb2.WebhookSecrets | None:
        """The API's secrets as stored; None when it has none."""
        try:
            entry = await self._kv.get(api)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return control_pb2.WebhookSecrets.FromString(entry.value)

    async def rotate(
        self, api: str, previous_valid_seconds: float, now: float | None = None
    ) -> control_pb2.WebhookSecrets:
        """Make a new current secret; the one it replaces signs too until now + previous_valid_seconds.

        Answers the secrets as stored afterwards (previous empty when the API had no secret). Compare-and-set
        on the key: of two rotations at once, each makes its own secret and the later one keeps the earlier's
        as previous. NoSecretError when too many writes win the race in a row.
        """
        for _ in range(MAX_ROTATE_TRIES):
            revision = 0
            stored = control_pb2.WebhookSecrets()
            try:
                entry = await self._kv.get(api)
            except KeyNotFoundError:
                entry = None
            if entry is not None and entry.value:
                revision = int(entry.revision or 0)
                stored = control_pb2.WebhookSecrets.FromString(entry.value)
            rotated = control_pb2.WebhookSecrets(current=webhooks.new_secret())
            if stored.current:
                rotated.previous = stored.current
                until = (time.time() if now is None else now) + previous_valid_seconds
                rotated.previous_until.FromNanoseconds(round(until * 1e9))
            try:
                if revision:
                    await self._kv.update(api, rotated.SerializeToString(), last=revision)
                else:
                    await self._kv.create(api, rotated.SerializeToString())
            except KeyWrongLastSequenceError:
                continue
            log.info("webhook signing secret rotated", extra={"api": api, "previous_valid_s": previous_valid_seconds})
            return rotated
        raise NoSecretError(f"API {api!r}: too many concurrent changes of its webhook secret; try again")

    async def delete_secret(self, api: str) -> None:
        """Forget the API's secrets (a later create makes a new one)."""
        await self._kv.purge(api)

    async def delete(self, api: str) -> None:
        """Forget the API's secrets, and drop the webhooks still waiting to be delivered for it (logged on failure)."""
        try:
            await self.delete_secret(api)
        except Exception as exc:
            log.warning("webhook secret not deleted", extra={"api": api, "error": repr(exc)})
        request = {"filter": _names.webhook_subject(api, ">")}
        try:
            reply = await self._api(f"STREAM.PURGE.{_names.WEBHOOKS_STREAM}", request)
        except Exception as exc:
            log.warning("waiting webhooks not dropped", extra={"api": api, "error": repr(exc)})
            return
        if reply.get("purged"):
            log.info("waiting webhooks dropped with their API", extra={"api": api, "dropped": reply["purged"]})

    async def undelivered(self, api: str) -> int:
        """Webhooks of the API's requests waiting in the webhooks stream: not delivered yet, or retrying.

        Counts the stream's messages on the API's subjects (one per request), page by page; 0 without a stream.
        """
        count = 0
        offset = 0
        while True:
            request = {"subjects_filter": _names.webhook_subject(api, ">"), "offset": offset}
            reply = await self._api(f"STREAM.INFO.{_names.WEBHOOKS_STREAM}", request)
            subjects: dict[str, int] = (reply.get("state") or {}).get("subjects") or {}
            count += sum(subjects.values())
            offset += len(subjects)
            if not subjects or offset >= int(reply.get("total") or 0):
                return count

    async def _api(self, call: str, request: dict[str, Any]) -> dict[str, Any]:
        """One JetStream API request's answer; {} when the stream does not exist, RuntimeError for another error."""
        msg = await self._nc.request(f"$JS.API.{call}", json.dumps(request).encode(), timeout=API_SECONDS)
        reply: dict[str, Any] = json.loads(msg.data)
        error = reply.get("error")
        if isinstance(error, dict):
            if error.get("err_code") == _STREAM_NOT_FOUND:
                return {}
            raise RuntimeError(f"JetStream answered {call} with {error}")
        return reply
