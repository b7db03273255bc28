"""Settings of the ingest service, read once from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from cortado._env import Env, ServiceSettings
from cortado._waiting import max_wait_seconds
from cortado.runtime import DEFAULT_JSON_DEPTH, DEFAULT_JSON_VALUES, MAX_BODY_BYTES, MAX_JSON_DEPTH, JsonLimits

MAX_SUBMIT_MESSAGE_BYTES = MAX_BODY_BYTES + 1024 * 1024
"""Largest Submit message (or SubmitStream item) ingest reads: a body at the limit and room for the rest of the
message. A body past the limit in a message under this is refused by ingest, naming the limit (INVALID_ARGUMENT);
a larger message is refused by gRPC before ingest sees it (RESOURCE_EXHAUSTED), so none costs more memory."""


@dataclass(frozen=True)
class IngestSettings(ServiceSettings):
    """What the ingest service needs to run."""

    inline_payload_bytes: int
    max_wait_seconds: float
    json_limits: JsonLimits

    @classmethod
    def from_env(cls, env: Env | None = None) -> IngestSettings:
        """Read `CORTADO_*` variables; SettingsError names a malformed one."""
        env = env or Env()
        return cls(
            **cls.common(env, "ingest"),
            # NATS refuses messages over its max_payload (1 MB by default): larger bodies go
            # through the Object Store and the work item carries their name.
            inline_payload_bytes=env.integer("INLINE_PAYLOAD_BYTES", 512 * 1024, minimum=0),
            # Cap of a waiting submit (`POST /<api>?wait=`, Submit's wait): the same setting as GET's.
            max_wait_seconds=max_wait_seconds(env),
            # What an application/json body may hold; past either, the submit is refused (400) naming the limit.
            json_limits=JsonLimits(
                max_depth=env.integer("MAX_JSON_DEPTH", DEFAULT_JSON_DEPTH, minimum=1, maximum=MAX_JSON_DEPTH),
                max_values=env.integer("MAX_JSON_VALUES", DEFAULT_JSON_VALUES, minimum=1),
            ),
        )
