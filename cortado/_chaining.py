"""How the mesh vouches for its own handlers' chained calls when API keys are on.

A handler calls another API at `http://api-<name>:8888/` without holding any user's key. Its executor gives the
handler process an HTTP proxy address (`HTTP_PROXY`) whose user information carries a chaining token for the
handler's API: `cc_<api>.<HMAC-SHA256(mesh secret, api)>`. HTTP clients (requests, urllib, httpx, curl) send it
to the proxy as `Proxy-Authorization: Basic ...`; Envoy hands that header on as the call's authorization; the key
gate (ingest, results) recognises the token, recomputes its MAC with the same secret, and lets the call through
when the calling API is deployed and its `chaining.allow` lists the API called (no list: every API).

The mesh secret (`CORTADO_CHAIN_SECRET_FILE`) is known to the executors and the gates, never to user code; a
token only ever names its own API, so a handler that leaks its token gives away what its API may call, nothing
more.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from cortado._env import Env

PREFIX = "cc_"
"""What every chaining token starts with (API keys start with ck_)."""

SECRET_FILE_SETTING = "CORTADO_CHAIN_SECRET_FILE"

PROXY_USER = "cortado"
"""The user name in the proxy address; the token is its password."""

_TOKEN = re.compile(r"cc_(?P<api>[a-z]([-a-z0-9]*[a-z0-9])?)\.(?P<mac>[0-9a-f]{64})")


def token_for(secret: bytes, api: str) -> str:
    """The chaining token of an API's handlers."""
    return f"{PREFIX}{api}.{_mac(secret, api)}"


def _mac(secret: bytes, api: str) -> str:
    return hmac.new(secret, f"cortado-chaining:{api}".encode(), hashlib.sha256).hexdigest()


def is_token(presented: str) -> bool:
    """Whether a presented credential is a chaining token (rather than an API key)."""
    return presented.startswith(PREFIX)


def caller(secret: bytes, presented: str) -> str | None:
    """The API whose handlers hold the presented token; None when it is malformed or its MAC is wrong."""
    match = _TOKEN.fullmatch(presented)
    if match is None or not hmac.compare_digest(match["mac"], _mac(secret, match["api"])):
        return None
    return match["api"]


def basic_password(credentials: str) -> str:
    """The password of `Basic <base64(user:password)>` credentials (empty when they do not decode)."""
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[2]


def proxy_with_token(proxy: str, token: str) -> str:
    """The proxy address `http://host:port` with `cortado:<token>` as its user information."""
    parts = urlsplit(proxy)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{PROXY_USER}:{quote(token, safe='')}@{host}"))


def load_secret(env: Env | None = None) -> bytes | None:
    """The mesh's chaining secret from the file CORTADO_CHAIN_SECRET_FILE names; None when unset."""
    path = (env or Env()).text("CHAIN_SECRET_FILE", "")
    if not path:
        return None
    return Path(path).read_bytes().strip()
