"""NATS authentication: one user per trusted service, each allowed only the subjects it needs.

User code never connects to NATS (its executor feeds it over a local channel), and NATS refuses
a connection without credentials. A service reads its user from `CORTADO_NATS_USER` and its
password from the file `CORTADO_NATS_PASSWORD_FILE` (never from the environment itself), or from
a URL that carries them (`nats://user:password@host:4222`).

JetStream's own API (`$JS.API.>`) is open to every service user: its subjects name streams and
consumers, not tenants. What the users differ in is where they may write: only ingest enqueues
work, stores payloads and announces cancellations (which only executors hear), only executors write
outcomes (large results included), logs and their heartbeats, ingest and executors queue webhook
deliveries, only the webhook sender (besides them) writes a record's delivery state, only the
scheduler writes the registry, bundles, webhook secrets, placements and leases.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cortado._env import Env

ADMIN = "admin"
"""The operator's user (the CLI's tools, tests, `nats` command line): every subject."""

# Subjects every service needs: replies to its own requests, JetStream's API and its flow-control replies.
_COMMON_PUBLISH = ["$JS.API.>", "$JS.FC.>", "_INBOX.>"]
_COMMON_SUBSCRIBE = ["_INBOX.>"]

PERMISSIONS: Mapping[str, Mapping[str, list[str]]] = {
    "ingest": {
        "publish": [
            *_COMMON_PUBLISH,
            "cortado.work.>",
            "cortado.cancel.>",
            "cortado.webhooks.>",
            "$KV.cortado_requests.>",
            "$KV.cortado_idempotency.>",
            "$O.cortado_payloads.>",
        ],
        "subscribe": [*_COMMON_SUBSCRIBE, "$KV.cortado_requests.>"],
    },
    "results": {
        "publish": _COMMON_PUBLISH,
        "subscribe": [*_COMMON_SUBSCRIBE, "$KV.cortado_requests.>"],
    },
    "executor": {
        "publish": [
            *_COMMON_PUBLISH,
            "$JS.ACK.>",
            "$KV.cortado_requests.>",
            "$KV.cortado_executors.>",
            "$O.cortado_payloads.>",
            "$O.cortado_results.>",
            "cortado.logs.>",
            "cortado.dead.>",
            "cortado.webhooks.>",
        ],
        "subscribe": [*_COMMON_SUBSCRIBE, "cortado.cancel.>"],
    },
    "webhooks": {
        "publish": [*_COMMON_PUBLISH, "$JS.ACK.>", "$KV.cortado_requests.>"],
        "subscribe": _COMMON_SUBSCRIBE,
    },
    "scheduler": {"publish": [">"], "subscribe": [">"]},
    ADMIN: {"publish": [">"], "subscribe": [">"]},
}
"""Per user: the subjects it may publish to and subscribe to."""

ROUTE_USER = "route"
"""The user NATS servers of one cluster authenticate each other with."""


@dataclass(frozen=True)
class NatsCredentials:
    """A user and its password."""

    user: str
    password: str

    @classmethod
    def from_env(cls, env: Env | None = None) -> NatsCredentials | None:
        """`CORTADO_NATS_USER` with the password read from `CORTADO_NATS_PASSWORD_FILE`; None when unset."""
        env = env or Env()
        user = env.text("NATS_USER", "")
        path = env.text("NATS_PASSWORD_FILE", "")
        if not user or not path:
            return None
        return cls(user, Path(path).read_text(encoding="utf-8").strip())


def generate(folder: Path, users: list[str]) -> dict[str, NatsCredentials]:
    """New random passwords for users (and the cluster's route user), one file each in folder, readable by us only."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    made: dict[str, NatsCredentials] = {}
    for user in [*users, ROUTE_USER]:
        password = secrets.token_urlsafe(32)
        path = password_file(folder, user)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(password + "\n")
        made[user] = NatsCredentials(user, password)
    return made


def password_file(folder: Path, user: str) -> Path:
    """Where generate() keeps a user's password."""
    return folder / f"{user}.password"


def authorization_config(credentials: Mapping[str, NatsCredentials]) -> str:
    """The `authorization` block of nats-server's configuration: each user with its permissions."""
    lines = ["authorization {", "  users: ["]
    for user, creds in credentials.items():
        if user == ROUTE_USER:
            continue
        allowed = PERMISSIONS[user]
        permissions = {
            "publish": {"allow": allowed["publish"]},
            "subscribe": {"allow": allowed["subscribe"]},
        }
        lines.append(
            f"    {{user: {json.dumps(user)}, password: {json.dumps(creds.password)}, "
            f"permissions: {json.dumps(permissions)}}}"
        )
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def with_credentials(url: str, creds: NatsCredentials) -> str:
    """url (comma-separated servers) with the user and password in each server's address."""
    servers = []
    for server in url.split(","):
        scheme, _, rest = server.partition("://")
        servers.append(f"{scheme}://{creds.user}:{creds.password}@{rest.rpartition('@')[2]}")
    return ",".join(servers)
