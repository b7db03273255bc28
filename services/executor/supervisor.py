"""The executor's control loop: heartbeats into the pool, and replicas kept in line with its placements."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path

from nats.aio.client import Client
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from cortado._lifecycle import wait_any
from cortado._mirror import KvMirror
from cortado.records import RecordStore, now_timestamp
from cortado.v1 import control_pb2
from services.executor.config import ExecutorSettings
from services.executor.logship import LogShipper
from services.executor.replica import Replica, ReplicaContext
from services.executor.sandbox import Sandbox, handler_environment

log = logging.getLogger(__name__)


class Supervisor:
    """Starts, replaces and drains replicas as the scheduler's placements for this executor change."""

    def __init__(
        self,
        settings: ExecutorSettings,
        gpus: list[control_pb2.GpuInfo],
        apis: KvMirror[control_pb2.ApiSpec],
        placements: KvMirror[control_pb2.ExecutorPlacements],
        executors_kv: KeyValue,
        bundles: ObjectStore,
        address: str,
        nc: Client,
        metrics_dir: Path,
        store: RecordStore,
        sandbox: Sandbox,
    ) -> None:
        self._settings = settings
        self._gpus = gpus
        self._apis = apis
        self._placements = placements
        self._executors_kv = executors_kv
        self._address = address
        self.replicas: dict[tuple[str, int], Replica] = {}
        self._changed = asyncio.Event()
        self._stopping: set[asyncio.Task[None]] = set()
        # User code sees none of the executor's own environment (NATS address and credentials, tokens).
        base_env = handler_environment(os.environ)
        if settings.egress_proxy:
            # urllib and requests read both spellings; loopback stays direct.
            for name in ("HTTP_PROXY", "http_proxy"):
                base_env[name] = settings.egress_proxy
            for name in ("NO_PROXY", "no_proxy"):
                base_env[name] = "127.0.0.1,::1"
        self._context = ReplicaContext(
            workdir=settings.workdir,
            bundles=bundles,
            base_env=base_env,
            logs=LogShipper(nc),
            js=nc.jetstream(),
            store=store,
            sandbox=sandbox,
            metrics_dir=metrics_dir,
            ack_wait_seconds=settings.ack_wait_seconds,
            grace_seconds=settings.grace_seconds,
            max_deliveries=settings.max_deliveries,
            cancel_grace_seconds=settings.cancel_grace_seconds,
            chain_secret=settings.chain_secret,
        )

    def info(self) -> control_pb2.ExecutorInfo:
        """The executor's inventory and replicas, as its heartbeat carries them."""
        return control_pb2.ExecutorInfo(
            id=self._settings.executor_id,
            hostname=socket.gethostname(),
            gpus=self._gpus,
            cpu_millis=self._settings.cpu_millis,
            mem_bytes=self._settings.mem_bytes,
            replicas=[r.status() for r in self.replicas.values()],
            updated_at=now_timestamp(),
            address=self._address,
        )

    async def heartbeat_once(self) -> None:
        """Publish the heartbeat now."""
        await self._executors_kv.put(self._settings.executor_id, self.info().SerializeToString())

    async def run(self) -> None:
        """Beat and reconcile until cancelled."""
        while True:
            try:
                await self._reconcile()
                await self.heartbeat_once()
            except Exception:
                log.exception("executor loop failed")
            await wait_any(
                (self._changed, self._placements.changed, self._apis.changed), self._settings.heartbeat_seconds
            )
            self._changed.clear()
            self._placements.changed.clear()
            self._apis.changed.clear()

    async def _reconcile(self) -> None:
        mine = self._placements.get(self._settings.executor_id)
        wanted: dict[tuple[str, int], control_pb2.ReplicaPlacement] = {
            (p.api, p.replica): p for p in (mine.replicas if mine else [])
        }
        for key, replica in list(self.replicas.items()):
            placement = wanted.get(key)
            if placement is None or placement.version != replica.spec.version:
                del self.replicas[key]
                log.info("stopping replica", extra={"api": key[0], "replica": key[1]})
                task = asyncio.create_task(replica.stop())
                self._stopping.add(task)
                task.add_done_callback(self._stopping.discard)
        for key, placement in wanted.items():
            if key in self.replicas:
                continue
            spec = self._apis.get(placement.api)
            if spec is None or spec.version != placement.version:
                continue  # The registry has not caught up yet; the next change retries.
            replica = Replica(placement, spec, self._context, self._changed)
            self.replicas[key] = replica
            log.info("starting replica", extra={"api": key[0], "replica": key[1], "version": spec.version})
            await replica.start()

    async def drain(self) -> None:
        """Drain every replica (in-flight work finishes within the grace period) and leave the pool."""
        replicas = list(self.replicas.values())
        self.replicas.clear()
        await asyncio.gather(*(r.stop() for r in replicas), return_exceptions=True)
        try:
            await self._executors_kv.delete(self._settings.executor_id)
        except Exception:
            log.warning("could not leave the pool", exc_info=True)
