"""Run the results service: `python -m services.results`."""

from __future__ import annotations

from cortado import natsutil
from cortado.mirror import KvMirror
from cortado.service import ServiceRunner, run_main
from cortado.telemetry import serve_metrics, watch_nats
from cortado.v1 import control_pb2, public_pb2_grpc
from services.results.config import ResultsSettings
from services.results.servicer import ResultsServicer
from services.results.waiters import RecordWaiters


async def main() -> None:
    """Connect to NATS, follow the registry and the request writes, serve Results until SIGTERM."""
    settings = ResultsSettings.from_env()
    nc = await natsutil.connect(settings.nats_url, "cortado-results")
    js = nc.jetstream()
    watch_nats(nc)
    serve_metrics(settings.metrics_address)
    apis = KvMirror(await natsutil.apis_bucket(js), control_pb2.ApiSpec.FromString)
    await apis.start()
    requests = await natsutil.requests_bucket(js)
    waiters = RecordWaiters(nc)
    await waiters.start()

    runner = ServiceRunner("results", settings.address, ["cortado.v1.Results"], settings.grace_seconds)
    public_pb2_grpc.add_ResultsServicer_to_server(
        ResultsServicer(requests, apis, waiters, settings.max_wait_seconds), runner.server
    )
    runner.on_stop(waiters.stop)
    runner.on_stop(apis.stop)
    runner.on_stop(lambda: natsutil.drain(nc))
    await runner.start()
    await runner.run_until_stopped()


if __name__ == "__main__":
    run_main("results", main)
