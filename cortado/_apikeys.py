"""API keys on the front door: their form, how a presented key is judged, and the gate ingest and results keep.

A key is `ck_<id>_<secret>`: `id` (12 hex digits) names its record in the API keys bucket, `secret` (43 base64url
characters, 32 random bytes) is known only to its holder; the record keeps the secret's SHA-256. Clients send
`Authorization: Bearer <key>`. The services that already handle a request (ingest for submit and cancel, results
for reads) judge the key against a mirror of the bucket, so a check costs no hop; a revocation reaches them as
fast as the bucket's watch does (well under a second).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext

from cortado import _chaining, _names, _nats
from cortado._env import Env
from cortado._mirror import KvMirror
from cortado._service import abort
from cortado.v1 import control_pb2

PREFIX = "ck_"
"""What every key starts with."""

SETTING = "CORTADO_API_KEYS"
"""`on`: ingest and results require a key on every call; `off` (the local default): they require none."""

Metadata = Iterable[tuple[str, str | bytes]]
"""A call's metadata, as grpc hands it over: (name, value) pairs."""

_KEY = re.compile(r"ck_(?P<id>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class Refusal:
    """Why a call is refused: UNAUTHENTICATED (HTTP 401), PERMISSION_DENIED (403) or RESOURCE_EXHAUSTED (429, with
    the whole seconds to wait in `retry_after`), and the message."""

    code: grpc.StatusCode
    message: str
    retry_after: int | None = None


@dataclass
class TokenBucket:
    """A key's rate limit: `rate` tokens a second, at most `burst` kept; each submission takes one."""

    rate: float
    burst: float
    tokens: float
    at: float

    def take(self, now: float) -> float:
        """0 when a token was taken; otherwise the seconds until one is there (none taken)."""
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


def new_key(
    name: str,
    apis: Iterable[str],
    now: datetime,
    expires_at: datetime | None,
    rate_per_second: float = 0.0,
    burst: int = 0,
) -> tuple[str, control_pb2.ApiKey]:
    """A new key and its record (the record holds the secret's hash, never the secret).

    With a rate, burst 0 means the rate rounded up (at least 1).
    """
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    record = control_pb2.ApiKey(
        id=key_id,
        name=name or key_id,
        secret_sha256=hashlib.sha256(secret.encode()).digest(),
        apis=sorted(set(apis)),
        rate_per_second=rate_per_second,
        burst=(burst or max(1, math.ceil(rate_per_second))) if rate_per_second > 0 else 0,
    )
    record.created_at.FromDatetime(now)
    if expires_at is not None:
        record.expires_at.FromDatetime(expires_at)
    return f"{PREFIX}{key_id}_{secret}", record


def presented_key(metadata: Metadata | None) -> str | None:
    """The key in the call's `authorization` metadata; None when there is none.

    `Bearer <key>`, or `Basic` credentials whose password is the key (what HTTP clients send for a proxy address
    with a user and password: how handlers' chained calls carry their chaining token).
    """
    for name, value in metadata or ():
        if name.lower() == "authorization":
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() == "basic":
                return _chaining.basic_password(token)
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


def _requests(rate: float) -> str:
    """`1 request`, `0.5 requests`, `10 requests`."""
    return f"{rate:g} request" + ("" if rate == 1 else "s")


def _when(ts: Timestamp) -> str:
    return ts.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def judge(
    presented: str | None,
    record_of: dict[str, control_pb2.ApiKey] | KvMirror[control_pb2.ApiKey],
    api: str,
    now: datetime,
) -> Refusal | None:
    """None when the key presented may call `api` now; otherwise why not.

    Missing, malformed, unknown, revoked and expired keys are UNAUTHENTICATED; a valid key for other APIs is
    PERMISSION_DENIED, naming the APIs it may call.
    """
    unauthenticated = grpc.StatusCode.UNAUTHENTICATED
    if presented is None:
        return Refusal(
            unauthenticated,
            "an API key is required: send it in the header Authorization, as Bearer followed by the key",
        )
    match = _KEY.fullmatch(presented)
    if match is None:
        return Refusal(
            unauthenticated, "the API key is malformed: a key is ck_, 12 hex digits, _ and 43 more characters"
        )
    record = record_of.get(match["id"])
    digest = hashlib.sha256(match["secret"].encode()).digest()
    if record is None or not hmac.compare_digest(digest, record.secret_sha256):
        return Refusal(unauthenticated, "the API key is not valid (unknown, or deleted)")
    if record.HasField("revoked_at"):
        return Refusal(unauthenticated, f"the API key {record.name!r} was revoked at {_when(record.revoked_at)}")
    if record.HasField("expires_at") and record.expires_at.ToDatetime(tzinfo=UTC) <= now:
        return Refusal(unauthenticated, f"the API key {record.name!r} expired at {_when(record.expires_at)}")
    if api not in record.apis:
        allowed = ", ".join(record.apis)
        return Refusal(
            grpc.StatusCode.PERMISSION_DENIED,
            f"the API key {record.name!r} may not call API {api!r} (it may call: {allowed})",
        )
    return None


def judge_chained(
    secret: bytes | None, presented: str, api: str, lookup: Callable[[str], control_pb2.ApiSpec | None]
) -> Refusal | None:
    """None when the chaining token presented may call `api`; otherwise why not (see cortado._chaining).

    A token whose MAC is wrong, or whose API is not deployed, is UNAUTHENTICATED; a caller whose `_chaining.allow`
    does not list `api` is PERMISSION_DENIED, naming what it lists.
    """
    caller = _chaining.caller(secret, presented) if secret else None
    if caller is None:
        return Refusal(grpc.StatusCode.UNAUTHENTICATED, "the chaining token is not valid")
    spec = lookup(caller)
    if spec is None:
        return Refusal(grpc.StatusCode.UNAUTHENTICATED, f"the calling API {caller!r} is not deployed")
    if spec.chain_allow and api not in spec.chain_allow:
        allowed = ", ".join(spec.chain_allow)
        return Refusal(
            grpc.StatusCode.PERMISSION_DENIED,
            f"API {caller!r} may not call API {api!r}: its _chaining.allow lists {allowed}",
        )
    return None


def _no_apis(name: str) -> control_pb2.ApiSpec | None:
    return None


class KeyGate:
    """What ingest and results ask before serving a call: `refusal(metadata, api)` (None: go on).

    Off, it lets every call through. On, it mirrors the API keys bucket and judges each call's key against the
    API the call names, found by `lookup` (by name or endpoint); a handler's chained call presents its API's
    chaining token instead, judged with `chain_secret` against its API's `_chaining.allow`.
    """

    def __init__(
        self,
        required: bool,
        lookup: Callable[[str], control_pb2.ApiSpec | None] = _no_apis,
        chain_secret: bytes | None = None,
        js: JetStreamContext | None = None,
    ) -> None:
        self.required = required
        self._lookup = lookup
        self._chain_secret = chain_secret
        self._js = js
        self._keys: KvMirror[control_pb2.ApiKey] | None = None
        self._buckets: dict[str, TokenBucket] = {}

    def resolving(self, lookup: Callable[[str], control_pb2.ApiSpec | None]) -> KeyGate:
        """This gate, finding APIs (by name or endpoint) with lookup."""
        self._lookup = lookup
        return self

    def _resolve(self, requested: str) -> str:
        spec = self._lookup(requested)
        return str(spec.name) if spec is not None else requested

    @classmethod
    def from_env(cls, js: JetStreamContext) -> KeyGate:
        """The gate CORTADO_API_KEYS asks for (`on` or `off`, default off), with the chaining secret of
        CORTADO_CHAIN_SECRET_FILE (none: handlers' chained calls need keys of their own); js: where the keys are."""
        env = Env()
        required = env.choice("API_KEYS", "off", ("off", "on")) == "on"
        return cls(required, chain_secret=_chaining.load_secret(env), js=js)

    async def start(self) -> None:
        """Load the keys (when required) and follow their changes."""
        if self.required:
            assert self._js is not None, "a gate that requires keys reads them from JetStream"
            kv = await _nats.key_value(self._js, _names.API_KEYS_BUCKET, history=1)
            self._keys = KvMirror(kv, control_pb2.ApiKey.FromString)
            await self._keys.start()

    async def stop(self) -> None:
        """Stop following the keys."""
        if self._keys is not None:
            await self._keys.stop()

    def refusal(self, metadata: Metadata | None, api: str, limited: bool = False) -> Refusal | None:
        """None when the call may go on; otherwise why it is refused.

        limited: the call counts against the key's rate limit (submissions and cancels do, reads do not).
        """
        if not self.required:
            return None
        assert self._keys is not None, "KeyGate.start() first"
        presented = presented_key(metadata)
        if presented is not None and _chaining.is_token(presented):
            return judge_chained(self._chain_secret, presented, self._resolve(api), self._lookup)
        refusal = judge(presented, self._keys, self._resolve(api), datetime.now(UTC))
        if refusal is not None or not limited or presented is None:
            return refusal
        match = _KEY.fullmatch(presented)  # judge passed it, so it matches and its record is there
        record = self._keys.get(match["id"]) if match else None
        return None if record is None else self._limit(record)

    def _limit(self, record: control_pb2.ApiKey) -> Refusal | None:
        """None when the key's rate limit lets one more call through; otherwise a RESOURCE_EXHAUSTED refusal."""
        if record.rate_per_second <= 0:
            return None
        now = time.monotonic()
        bucket = self._buckets.get(record.id)
        if bucket is None or (bucket.rate, bucket.burst) != (record.rate_per_second, float(record.burst)):
            bucket = TokenBucket(record.rate_per_second, float(record.burst), float(record.burst), now)
            self._buckets[record.id] = bucket
        wait = bucket.take(now)
        if wait == 0:
            return None
        retry_after = max(1, math.ceil(wait))
        return Refusal(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"the API key {record.name!r} may make {_requests(record.rate_per_second)} a second "
            f"(burst {record.burst}): retry after {retry_after}s",
            retry_after,
        )

    async def admit(self, context: grpc.aio.ServicerContext, api: str, limited: bool = False) -> None:
        """Return when the call may go on; otherwise end it with the refusal's code and message (and a
        `retry-after` in the initial metadata for a rate limit, which Envoy answers as the Retry-After header)."""
        refusal = self.refusal(context.invocation_metadata(), api, limited)
        if refusal is not None:
            if refusal.retry_after is not None:
                await context.send_initial_metadata((("retry-after", str(refusal.retry_after)),))
            await abort(context, refusal.code, refusal.message)
