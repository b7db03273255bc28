"""The scheduler's side of API keys: making, listing and revoking them in the API keys bucket.

Only the scheduler writes the bucket; ingest and results mirror it (`cortado._apikeys.KeyGate`). A key is shown
once, when made; the bucket keeps the SHA-256 of its secret. A revoked key's record stays (so a refusal can say
it was revoked) with `revoked_at` set.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from nats.js.kv import KeyValue

from cortado import _apikeys
from cortado._mirror import KvMirror
from cortado.v1 import control_pb2

MAX_EXPIRES_DAYS = 3650
"""Longest `expires_in` a key may be made with."""

MAX_RATE = 1_000_000.0
"""Highest rate (requests a second) and burst a key may be given."""


class ApiKeyError(ValueError):
    """A request about keys that cannot be carried out; the message says why."""


class NoSuchKeyError(LookupError):
    """No key has that id or name."""


def shown(record: control_pb2.ApiKey) -> control_pb2.ApiKey:
    """The record as answered to clients: without the hash."""
    copy = control_pb2.ApiKey()
    copy.CopyFrom(record)
    copy.ClearField("secret_sha256")
    return copy


class ApiKeyStore:
    """Makes, lists and revokes API keys."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self._keys: KvMirror[control_pb2.ApiKey] = KvMirror(kv, control_pb2.ApiKey.FromString)

    async def start(self) -> None:
        """Load the keys and follow them."""
        await self._keys.start()

    async def stop(self) -> None:
        """Stop following the keys."""
        await self._keys.stop()

    def records(self) -> list[control_pb2.ApiKey]:
        """Every key's record, oldest first."""
        return sorted((record for _, record in self._keys.items()), key=lambda r: (r.created_at.ToNanoseconds(), r.id))

    async def create(
        self,
        name: str,
        apis: list[str],
        expires_in: timedelta | None,
        rate_per_second: float = 0.0,
        burst: int = 0,
    ) -> tuple[str, control_pb2.ApiKey]:
        """A new key for apis (already checked to be deployed) and its record; ApiKeyError for a bad request."""
        if not apis:
            raise ApiKeyError("a key needs at least one API it may call (--api NAME)")
        if expires_in is not None and not timedelta(0) < expires_in <= timedelta(days=MAX_EXPIRES_DAYS):
            raise ApiKeyError(f"a key's expiry must be more than 0 and at most {MAX_EXPIRES_DAYS} days")
        if not (math.isfinite(rate_per_second) and 0 <= rate_per_second <= MAX_RATE):
            raise ApiKeyError(f"a key's rate must be from 0 (no limit) to {MAX_RATE:g} requests a second")
        if burst and rate_per_second == 0:
            raise ApiKeyError("a burst needs a rate (--rate)")
        if burst > MAX_RATE:
            raise ApiKeyError(f"a key's burst must be at most {MAX_RATE:g}")
        if name and any(r.name == name and not r.HasField("revoked_at") for r in self.records()):
            raise ApiKeyError(f"a key named {name!r} exists already: revoke it first, or choose another name")
        now = datetime.now(UTC)
        expires_at = None if expires_in is None else now + expires_in
        key, record = _apikeys.new_key(name, apis, now, expires_at, rate_per_second, burst)
        await self._kv.create(record.id, record.SerializeToString())
        await self._keys.wait_for(record.id, lambda value: value is not None)
        return key, record

    async def revoke(self, key: str) -> control_pb2.ApiKey:
        """Revoke the key with this id (or name; a full key works too); its record. NoSuchKeyError when none."""
        wanted = key.removeprefix(_apikeys.PREFIX).split("_", 1)[0] if key.startswith(_apikeys.PREFIX) else key
        matches = [r for r in self.records() if wanted in (r.id, r.name)]
        live = [r for r in matches if not r.HasField("revoked_at")]
        if not matches:
            raise NoSuchKeyError(f"no API key has the id or name {key!r}")
        record = control_pb2.ApiKey()
        record.CopyFrom((live or matches)[0])
        if not record.HasField("revoked_at"):
            record.revoked_at.FromDatetime(datetime.now(UTC))
            await self._kv.put(record.id, record.SerializeToString())
            await self._keys.wait_for(record.id, lambda value: value is not None and value.HasField("revoked_at"))
        return record
