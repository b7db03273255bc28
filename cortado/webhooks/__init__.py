"""Webhooks: Standard Webhooks signatures, the policy on where they may go, retry back-off and delivery state.

Pure logic, no I/O: the webhook sender (`services.webhooks`), ingest (which checks a request's own URL at
submit) and the scheduler (which checks an API's `webhook.url` at deploy) share it. A webhook is the request's
final JSON, POSTed with the headers of the Standard Webhooks specification (https://www.standardwebhooks.com/):
`webhook-id` (the request id, the same on every retry), `webhook-timestamp` and `webhook-signature`.

| module | holds |
|---|---|
| `signing` | secrets (`whsec_...`), signatures and their headers, the secrets active during a rotation |
| `urls` | `UrlPolicy` and `check_url`/`check_resolved`: where a webhook may go |
| `delivery` | retry back-off, delivery states and outcomes, `apply_attempt` |
"""

from cortado.webhooks.delivery import (
    DELIVERED,
    FAILED,
    FINISHED_STATES,
    FIRST_RETRY_SECONDS,
    GAVE_UP,
    GONE,
    MAX_RETRY_SECONDS,
    OUTCOMES,
    REFUSED,
    STATE_NAMES,
    Attempt,
    apply_attempt,
    retry_delay,
)
from cortado.webhooks.signing import SECRET_PREFIX, active_secrets, new_secret, secret_key, sign, signature_headers
from cortado.webhooks.urls import UrlPolicy, WebhookUrlError, check_resolved, check_url

__all__ = [
    "DELIVERED",
    "FAILED",
    "FINISHED_STATES",
    "FIRST_RETRY_SECONDS",
    "GAVE_UP",
    "GONE",
    "MAX_RETRY_SECONDS",
    "OUTCOMES",
    "REFUSED",
    "SECRET_PREFIX",
    "STATE_NAMES",
    "Attempt",
    "UrlPolicy",
    "WebhookUrlError",
    "active_secrets",
    "apply_attempt",
    "check_resolved",
    "check_url",
    "new_secret",
    "retry_delay",
    "secret_key",
    "sign",
    "signature_headers",
]
