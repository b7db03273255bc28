"""Run the scheduler: `python -m services.scheduler`."""

from __future__ import annotations

import asyncio
import contextlib

from cortado import names, natsutil, resultobjects
from cortado.auth import TokenInterceptor
from cortado.mirror import KvMirror
from cortado.service import ServiceRunner, run_main
from cortado.telemetry import connect_observed
from cortado.tls import server_credentials
from cortado.v1 import control_pb2, control_pb2_grpc
from services.scheduler.apikeys import ApiKeyStore
from services.scheduler.config import SchedulerSettings
from services.scheduler.deadletters import ensure_dead_stream
from services.scheduler.kube import KubeServices
from services.scheduler.lease import Lease
from services.scheduler.logs import ensure_logs_stream
from services.scheduler.reconciler import Reconciler
from services.scheduler.registry import Registry
from services.scheduler.servicer import SchedulerServicer
from services.scheduler.webhooksecrets import WebhookSecrets
from services.webhooks import stream as webhooks_stream

ENVOY_SELECTOR = {"app.kubernetes.io/name": "envoy", "app.kubernetes.io/part-of": "cortado"}
"""The labels of Envoy's pods in deploy/k8s: the api-<name> Services send chained calls there."""


async def main() -> None:
    """Connect to NATS, follow the registry and the pool, serve Scheduler and reconcile until SIGTERM."""
    settings = SchedulerSettings.from_env()
    nc = await connect_observed(settings.nats_url, "cortado-scheduler", settings.metrics_address)
    js = nc.jetstream()
    apis_kv = await natsutil.apis_bucket(js)
    placements_kv = await natsutil.placements_bucket(js)
    apis = KvMirror(apis_kv, control_pb2.ApiSpec.FromString)
    executors = KvMirror(await natsutil.executors_bucket(js), control_pb2.ExecutorInfo.FromString)
    placements = KvMirror(placements_kv, control_pb2.ExecutorPlacements.FromString)
    for mirror in (apis, executors, placements):
        await mirror.start()
    await natsutil.requests_bucket(js)
    await natsutil.object_store(js, names.PAYLOADS_STORE)
    bundles = await natsutil.object_store(js, names.BUNDLES_STORE)
    results = await resultobjects.results_store(js)
    await ensure_logs_stream(js)
    await ensure_dead_stream(js)
    # The webhooks stream exists before any request finishes, whether or not a webhook sender runs yet.
    await webhooks_stream.ensure_stream(js, settings.webhooks_max_bytes)
    webhook_secrets = WebhookSecrets(nc, await natsutil.key_value(js, names.WEBHOOK_SECRETS_BUCKET, history=1))
    api_keys = ApiKeyStore(await natsutil.key_value(js, names.API_KEYS_BUCKET, history=1))
    await api_keys.start()

    registry = Registry(js, apis_kv, apis, bundles, settings.ack_wait_seconds, webhook_secrets, settings.webhook_policy)
    reconciler = Reconciler(
        apis,
        executors,
        placements,
        placements_kv,
        settings.reconcile_seconds,
        registry.queue_depth,
        settings.autoscale_seconds,
        nc=nc,
        services=KubeServices(settings.kubernetes_namespace, ENVOY_SELECTOR) if settings.kubernetes_namespace else None,
    )
    interceptors = [TokenInterceptor(settings.token)] if settings.token else []
    runner = ServiceRunner(
        "scheduler",
        settings.address,
        ["cortado.v1.Scheduler"],
        settings.grace_seconds,
        interceptors,
        credentials=server_credentials(settings.tls) if settings.tls else None,
    )
    control_pb2_grpc.add_SchedulerServicer_to_server(
        SchedulerServicer(registry, reconciler, executors, js, webhook_secrets, api_keys), runner.server
    )
    lease = Lease(js, settings.scheduler_id, settings.lease_seconds)
    lease_task = asyncio.create_task(lease.run())
    reconcile_task = asyncio.create_task(reconciler.run(lease.leading))
    sweep_task = asyncio.create_task(
        resultobjects.sweep_while_leading(results, lease.leading, settings.result_sweep_seconds)
    )

    async def stop_reconciling() -> None:
        for task in (sweep_task, reconcile_task, lease_task):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    runner.on_stop(stop_reconciling)
    runner.on_stop(lease.release)
    for mirror in (apis, executors, placements):
        runner.on_stop(mirror.stop)
    runner.on_stop(api_keys.stop)
    runner.on_stop(lambda: natsutil.drain(nc))
    await runner.start()
    await runner.run_until_stopped()


if __name__ == "__main__":
    run_main("scheduler", main)
