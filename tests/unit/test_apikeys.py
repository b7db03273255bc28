"""API keys: their form, and every reason a presented key is refused (pure logic, no processes)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import grpc

from cortado import _apikeys
from cortado.v1 import control_pb2

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


def made(apis: list[str], expires_at: datetime | None = None, name: str = "ci") -> tuple[str, control_pb2.ApiKey]:
    return _apikeys.new_key(name, apis, NOW - timedelta(hours=1), expires_at)


def test_a_new_key_is_shown_once_and_only_its_hash_is_kept() -> None:
    key, record = made(["iris", "iris", "sentiment"])
    assert key.startswith(f"ck_{record.id}_") and len(record.id) == 12
    secret = key.split("_", 2)[2]
    assert record.secret_sha256 == hashlib.sha256(secret.encode()).digest()
    assert secret not in str(record) and key not in record.SerializeToString().decode("latin-1")
    assert list(record.apis) == ["iris", "sentiment"]
    assert made(["iris"])[0] != key  # random every time
    _, unnamed = _apikeys.new_key("", ["iris"], NOW, None)
    assert unnamed.name == unnamed.id


def test_a_valid_key_in_scope_passes() -> None:
    key, record = made(["iris"], expires_at=NOW + timedelta(seconds=1))
    assert _apikeys.judge(key, {record.id: record}, "iris", NOW) is None


def test_every_refusal_names_its_reason() -> None:
    key, record = made(["iris", "onnx"])
    keys = {record.id: record}
    missing = _apikeys.judge(None, keys, "iris", NOW)
    assert missing == _apikeys.Refusal(
        UNAUTHENTICATED, "an API key is required: send it in the header Authorization, as Bearer followed by the key"
    )
    malformed = _apikeys.judge("let-me-in", keys, "iris", NOW)
    assert malformed is not None and malformed.code == UNAUTHENTICATED and "malformed" in malformed.message
    wrong_secret = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    unknown = _apikeys.judge(wrong_secret, keys, "iris", NOW)
    assert unknown == _apikeys.Refusal(UNAUTHENTICATED, "the API key is not valid (unknown, or deleted)")
    assert _apikeys.judge(key, {}, "iris", NOW) == unknown
    out_of_scope = _apikeys.judge(key, keys, "sentiment", NOW)
    assert out_of_scope == _apikeys.Refusal(
        grpc.StatusCode.PERMISSION_DENIED, "the API key 'ci' may not call API 'sentiment' (it may call: iris, onnx)"
    )


def test_expired_and_revoked_keys_are_refused_saying_when() -> None:
    key, record = made(["iris"], expires_at=NOW)
    expired = _apikeys.judge(key, {record.id: record}, "iris", NOW)
    assert expired == _apikeys.Refusal(UNAUTHENTICATED, "the API key 'ci' expired at 2026-12-05T12:00:00Z")
    key, record = made(["iris"])
    record.revoked_at.FromDatetime(NOW - timedelta(minutes=5))
    revoked = _apikeys.judge(key, {record.id: record}, "iris", NOW)
    assert revoked == _apikeys.Refusal(UNAUTHENTICATED, "the API key 'ci' was revoked at 2026-12-05T11:55:00Z")


def test_the_key_is_read_from_a_bearer_authorization_entry() -> None:
    assert _apikeys.presented_key([("authorization", "Bearer ck_x")]) == "ck_x"
    assert _apikeys.presented_key([("Authorization", b"bearer  ck_y ")]) == "ck_y"
    assert _apikeys.presented_key([("authorization", "Basic dXNlcg==")]) == ""
    assert _apikeys.presented_key([("x-other", "Bearer ck_z")]) is None
    assert _apikeys.presented_key(None) is None


def test_a_gate_that_is_off_lets_everything_through() -> None:
    assert _apikeys.KeyGate(required=False).refusal(None, "iris") is None


def test_a_token_bucket_lets_a_burst_through_then_the_rate() -> None:
    bucket = _apikeys.TokenBucket(rate=2.0, burst=3.0, tokens=3.0, at=100.0)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(100.0) == 0.5  # the next token in half a second; none taken
    assert bucket.take(100.25) == 0.25
    assert bucket.take(100.5) == 0.0
    assert bucket.take(110.0) == 0.0 and bucket.tokens == 2.0  # refilled to the burst, never past it


def test_a_rate_without_a_burst_gets_the_rate_rounded_up() -> None:
    assert _apikeys.new_key("", ["iris"], NOW, None, 2.5)[1].burst == 3
    assert _apikeys.new_key("", ["iris"], NOW, None, 0.2)[1].burst == 1
    assert _apikeys.new_key("", ["iris"], NOW, None, 5, 20)[1].burst == 20
    assert _apikeys.new_key("", ["iris"], NOW, None)[1].burst == 0
