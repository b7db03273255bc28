"""Settings of the executor, read once from the environment."""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cortado import _chaining
from cortado._env import Env, ServiceSettings


@dataclass(frozen=True)
class ExecutorSettings(ServiceSettings):
    """What the executor needs to run."""

    executor_id: str
    workdir: Path
    cpu_millis: int
    mem_bytes: int
    heartbeat_seconds: float
    egress_proxy: str
    simulated_gpus: int
    ack_wait_seconds: float
    handler_users: str
    handler_uid_base: int
    max_deliveries: int
    cancel_grace_seconds: float
    chain_secret: bytes | None = field(default=None, repr=False)
    """The mesh's chaining secret (CORTADO_CHAIN_SECRET_FILE): each handler's proxy address then carries its API's
    chaining token (cortado._chaining). None: chained calls carry no credential."""

    @classmethod
    def from_env(cls, env: Env | None = None) -> ExecutorSettings:
        """Read `CORTADO_*` variables; SettingsError names a malformed one."""
        env = env or Env()
        hostname = socket.gethostname()
        page_size = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        physical = os.sysconf("SC_PHYS_PAGES") * page_size if hasattr(os, "sysconf") else 0
        return cls(
            **cls.common(env, "executor"),
            executor_id=env.text("EXECUTOR_ID", f"{hostname}-{os.getpid()}"),
            workdir=Path(env.text("EXECUTOR_WORKDIR", str(Path(tempfile.gettempdir()) / "cortado-executor"))),
            cpu_millis=env.integer("EXECUTOR_CPU_MILLIS", (os.cpu_count() or 1) * 1000, minimum=1),
            mem_bytes=env.integer("EXECUTOR_MEM_BYTES", physical, minimum=0),
            heartbeat_seconds=env.number("HEARTBEAT_SECONDS", 2.0, minimum=0.1),
            # HTTP proxy for handlers (Envoy's egress listener), so http://api-<name>:8888/ reaches the API
            # without DNS; empty where DNS already resolves api-<name> (a Service per API in Kubernetes).
            egress_proxy=env.text("EGRESS_PROXY", ""),
            # Testing placement without GPUs: report this many simulated GPUs instead of NVML's (0: real ones).
            simulated_gpus=env.integer("EXECUTOR_SIMULATED_GPUS", 0, minimum=0),
            # JetStream's ack wait for work consumers (the scheduler creates them with the same setting):
            # held requests get an in_progress heartbeat every third of it.
            ack_wait_seconds=env.number("ACK_WAIT_SECONDS", 30.0, minimum=1),
            # Who runs user code: `auto` (an unprivileged user per API when the executor runs as root), `on`, `off`.
            handler_users=env.choice("HANDLER_USERS", "auto", ("auto", "on", "off")),
            # First uid (and gid) given to an API's user code; each API gets the next free one.
            handler_uid_base=env.integer("HANDLER_UID_BASE", 70000, minimum=1000),
            # A request delivered this often without an outcome being recorded fails (DeliveryLimitExceeded).
            max_deliveries=env.integer("MAX_DELIVERIES", 20, minimum=2),
            # How long a cancelled request's handler has to stop before its process is stopped and restarted
            # (a plain handler cannot be interrupted; it may poll `cortado.cancelled(request_id)`).
            cancel_grace_seconds=env.number("CANCEL_GRACE_SECONDS", 10.0, minimum=0),
            chain_secret=_chaining.load_secret(env),
        )
