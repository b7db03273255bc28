"""Run an executor: `python -m services.executor`."""

from __future__ import annotations

import os
import shutil

from cortado import _names, _nats
from cortado._gpu import discover_gpus, simulated_gpus
from cortado._mirror import KvMirror
from cortado._service import ServiceRunner, run_main
from cortado._telemetry import serve_metrics, watch_nats
from cortado.records import RecordStore
from cortado.v1 import control_pb2, control_pb2_grpc
from services.executor import sandbox as sandbox_module
from services.executor.config import ExecutorSettings
from services.executor.servicer import ExecutorServicer
from services.executor.supervisor import Supervisor


async def main() -> None:
    """Join the pool, run the replicas placed here, drain them on SIGTERM."""
    settings = ExecutorSettings.from_env()
    # Folders this executor creates are never writable by the users its handlers run as.
    os.umask(0o022)
    settings.workdir.mkdir(parents=True, exist_ok=True)
    runner = ServiceRunner("executor", settings.address, ["cortado.v1.Executor"], settings.grace_seconds)
    nc = await _nats.connect(settings.nats_url, f"cortado-executor-{settings.executor_id}")
    runner.defer(lambda: _nats.drain(nc))
    js = nc.jetstream()
    watch_nats(nc)
    # Handler processes write their metrics here; this endpoint serves them summed with the executor's own.
    metrics_dir = settings.workdir / f"metrics-{os.getpid()}"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    serve_metrics(settings.metrics_address, metrics_dir)
    apis = await runner.enter(await _nats.api_registry(js))
    placements = await runner.enter(
        KvMirror(
            await _nats.placements_bucket(js), control_pb2.ExecutorPlacements.FromString, keys=settings.executor_id
        )
    )
    requests = await _nats.requests_bucket(js)
    # Who runs user code: an unprivileged user per API when this executor runs as root.
    sandbox = await sandbox_module.choose(settings.workdir, settings.handler_users, settings.handler_uid_base)
    bundles = await _nats.object_store(js, _names.BUNDLES_STORE)
    executors_kv = await _nats.executors_bucket(js)

    supervisor = Supervisor(
        settings,
        simulated_gpus(settings.simulated_gpus) or discover_gpus(),
        apis,
        placements,
        executors_kv,
        bundles,
        settings.address,
        nc,
        metrics_dir,
        RecordStore(js, requests),
        sandbox,
    )
    control_pb2_grpc.add_ExecutorServicer_to_server(ExecutorServicer(supervisor), runner.server)
    runner.defer(supervisor.drain)
    runner.background(supervisor.run())
    await runner.start()
    await runner.run_until_stopped()


if __name__ == "__main__":
    run_main("executor", main)
