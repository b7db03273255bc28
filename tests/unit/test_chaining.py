"""Chaining tokens (cortado._chaining) and how the key gate judges them, without processes."""

from __future__ import annotations

import base64

import grpc

from cortado import _apikeys, _chaining
from cortado.v1 import control_pb2

SECRET = b"mesh secret"


def lookup(name: str) -> control_pb2.ApiSpec | None:
    specs = {"a": control_pb2.ApiSpec(name="a", chain_allow=["b"]), "open": control_pb2.ApiSpec(name="open")}
    return specs.get(name)


def test_a_token_names_its_api_and_only_the_secret_makes_it() -> None:
    token = _chaining.token_for(SECRET, "a")
    assert token.startswith("cc_a.") and _chaining.is_token(token)
    assert _chaining.caller(SECRET, token) == "a"
    assert _chaining.caller(b"other secret", token) is None
    assert _chaining.caller(SECRET, token.replace("cc_a.", "cc_b.")) is None
    assert _chaining.caller(SECRET, "cc_a") is None


def test_the_proxy_address_carries_the_token_as_its_password() -> None:
    token = _chaining.token_for(SECRET, "a")
    assert _chaining.proxy_with_token("http://127.0.0.1:9000", token) == f"http://cortado:{token}@127.0.0.1:9000"
    assert _chaining.proxy_with_token("http://old:pw@egress:9000", "cc_x.1") == "http://cortado:cc_x.1@egress:9000"


def test_basic_credentials_present_their_password() -> None:
    basic = base64.b64encode(b"cortado:cc_a.123").decode()
    assert _apikeys.presented_key([("authorization", f"Basic {basic}")]) == "cc_a.123"
    assert _apikeys.presented_key([("authorization", "Basic not-base64!")]) == ""


def test_the_gate_judges_a_token_by_its_apis_list() -> None:
    token = _chaining.token_for(SECRET, "a")
    assert _apikeys.judge_chained(SECRET, token, "b", lookup) is None
    refusal = _apikeys.judge_chained(SECRET, token, "c", lookup)
    assert refusal is not None and refusal.code == grpc.StatusCode.PERMISSION_DENIED
    assert refusal.message == "API 'a' may not call API 'c': its _chaining.allow lists b"
    assert _apikeys.judge_chained(SECRET, _chaining.token_for(SECRET, "open"), "c", lookup) is None
    ghost = _apikeys.judge_chained(SECRET, _chaining.token_for(SECRET, "ghost"), "b", lookup)
    assert ghost is not None and ghost.message == "the calling API 'ghost' is not deployed"
    unchecked = _apikeys.judge_chained(None, token, "b", lookup)
    assert unchecked is not None and unchecked.code == grpc.StatusCode.UNAUTHENTICATED
