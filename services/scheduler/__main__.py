"""Run the scheduler: `python -m services.scheduler`."""

from __future__ import annotations

import asyncio
import time

from cortado import _names, _nats, _resultobjects
from cortado._auth import TokenInterceptor
from cortado._mirror import KvMirror
from cortado._service import ServiceRunner, run_main
from cortado._telemetry import connect_observed
from cortado._tls import server_credentials
from cortado.records.cancel import Canceller
from cortado.v1 import control_pb2, control_pb2_grpc
from services.scheduler.activity import SAMPLE_SECONDS, Activity
from services.scheduler.apikeys import ApiKeyStore
from services.scheduler.config import SchedulerSettings
from services.scheduler.deadletters import ensure_dead_stream
from services.scheduler.kube import KubeServices
from services.scheduler.lease import Lease
from services.scheduler.logs import ensure_logs_stream
from services.scheduler.reconciler import Reconciler
from services.scheduler.registry import Registry
from services.scheduler.requestdetail import RequestDetails
from services.scheduler.servicer import SchedulerServicer
from services.scheduler.webhooksecrets import WebhookSecrets
from services.webhooks import stream as webhooks_stream

ENVOY_SELECTOR = {"app.kubernetes.io/name": "envoy", "app.kubernetes.io/part-of": "cortado"}
"""The labels of Envoy's pods in deploy/k8s: the api-<name> Services send chained calls there."""


async def sample_activity(
    activity: Activity, executors: KvMirror[control_pb2.ExecutorInfo], every_seconds: float
) -> None:
    """Feed the console's charts: sample the executors' counters every `every_seconds` (every scheduler does, so
    whichever one answers the console has them)."""
    while True:
        activity.sample([info for _, info in executors.items()], time.time())
        await asyncio.sleep(every_seconds)


async def main() -> None:
    """Connect to NATS, follow the registry and the pool, serve Scheduler and reconcile until SIGTERM."""
    settings = SchedulerSettings.from_env()
    interceptors = [TokenInterceptor(settings.token)] if settings.token else []
    runner = ServiceRunner(
        "scheduler",
        settings.address,
        ["cortado.v1.Scheduler"],
        settings.grace_seconds,
        interceptors,
        credentials=server_credentials(settings.tls) if settings.tls else None,
    )
    nc = await connect_observed(settings.nats_url, "cortado-scheduler", settings.metrics_address)
    runner.defer(lambda: _nats.drain(nc))
    js = nc.jetstream()
    apis_kv = await _nats.apis_bucket(js)
    placements_kv = await _nats.placements_bucket(js)
    apis = await runner.enter(KvMirror(apis_kv, control_pb2.ApiSpec.FromString))
    executors = await runner.enter(KvMirror(await _nats.executors_bucket(js), control_pb2.ExecutorInfo.FromString))
    placements = await runner.enter(KvMirror(placements_kv, control_pb2.ExecutorPlacements.FromString))
    requests_kv = await _nats.requests_bucket(js)
    payloads = await _nats.object_store(js, _names.PAYLOADS_STORE)
    bundles = await _nats.object_store(js, _names.BUNDLES_STORE)
    results = await _resultobjects.results_store(js)
    await ensure_logs_stream(js)
    await ensure_dead_stream(js)
    # The webhooks stream exists before any request finishes, whether or not a webhook sender runs yet.
    await webhooks_stream.ensure_stream(js, settings.webhooks_max_bytes)
    webhook_secrets = WebhookSecrets(nc, await _nats.key_value(js, _names.WEBHOOK_SECRETS_BUCKET, history=1))
    api_keys = await runner.enter(ApiKeyStore(await _nats.key_value(js, _names.API_KEYS_BUCKET, history=1)))

    registry = Registry(js, apis_kv, apis, bundles, settings.ack_wait_seconds, webhook_secrets, settings.webhook_policy)
    reconciler = Reconciler(
        apis,
        executors,
        placements,
        placements_kv,
        settings.reconcile_seconds,
        registry.dispatchable_depth,
        settings.autoscale_seconds,
        nc=nc,
        services=KubeServices(settings.kubernetes_namespace, ENVOY_SELECTOR) if settings.kubernetes_namespace else None,
    )
    activity = Activity()
    servicer = SchedulerServicer(
        registry,
        reconciler,
        executors,
        js,
        webhook_secrets,
        api_keys,
        activity=activity,
        details=RequestDetails(js, requests_kv, payloads, settings.traces_url),
        canceller=Canceller(nc, requests_kv, apis, payloads),
    )
    control_pb2_grpc.add_SchedulerServicer_to_server(servicer, runner.server)
    lease = Lease(js, settings.scheduler_id, settings.lease_seconds)
    runner.defer(lease.release)
    runner.background(lease.run())
    runner.background(reconciler.run(lease.leading))
    runner.background(_resultobjects.sweep_while_leading(results, lease.leading, settings.result_sweep_seconds))
    runner.background(sample_activity(activity, executors, SAMPLE_SECONDS))
    runner.on_stopping(servicer.close_streams)
    await runner.start()
    await runner.run_until_stopped()


if __name__ == "__main__":
    run_main("scheduler", main)
