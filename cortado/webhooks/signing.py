"""Standard Webhooks signatures (https://www.standardwebhooks.com/): secrets, and the headers each webhook carries."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _secrets

from cortado.v1 import control_pb2
from cortado.webhooks.delivery import timestamp_seconds

SECRET_PREFIX = "whsec_"
"""What every signing secret starts with; base64 of the key's bytes follows."""

SECRET_BYTES = 32
"""Random bytes in a new secret (the specification asks for 24 to 64)."""


def new_secret() -> str:
    """A new random signing secret: `whsec_` and the base64 of SECRET_BYTES random bytes."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret (the base64 after `whsec_` decoded); ValueError if it is not one."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise ValueError("a webhook secret must be `whsec_` followed by base64") from None
    if not key:
        raise ValueError("a webhook secret may not be empty")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature, `v1,<base64 of HMAC-SHA256 over "<msg_id>.<timestamp>.<body>">`; ValueError on a bad secret."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_headers(secrets: list[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers of a message: `webhook-id`, `webhook-timestamp` and `webhook-signature`.

    The signature header holds one signature per secret, in order, separated by spaces: a receiver that knows
    any one of them verifies the message (that is how a rotated secret keeps working for a while). msg_id must
    stay the same on every retry of one message, so receivers can drop duplicates. Raises ValueError when there
    is no secret or one is malformed.
    """
    if not secrets:
        raise ValueError("a webhook needs at least one signing secret")
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets),
    }


def active_secrets(stored: control_pb2.WebhookSecrets, now: float) -> list[str]:
    """The secrets to sign with at now (Unix seconds): the current one, then the previous one until previous_until."""
    found = [stored.current] if stored.current else []
    if stored.previous and stored.HasField("previous_until") and timestamp_seconds(stored.previous_until) > now:
        found.append(stored.previous)
    return found
