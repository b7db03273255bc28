"""Settings of the results service, read once from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from cortado._env import Env, ServiceSettings
from cortado._waiting import max_wait_seconds, max_watch_seconds


@dataclass(frozen=True)
class ResultsSettings(ServiceSettings):
    """What the results service needs to run."""

    max_wait_seconds: float
    max_watch_seconds: float

    @classmethod
    def from_env(cls, env: Env | None = None) -> ResultsSettings:
        """Read `CORTADO_*` variables; SettingsError names a malformed one."""
        env = env or Env()
        return cls(
            **cls.common(env, "results"),
            max_wait_seconds=max_wait_seconds(env),
            max_watch_seconds=max_watch_seconds(env),
        )
