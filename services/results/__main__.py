"""Run the results service: `python -m services.results`."""

from __future__ import annotations

from cortado import _nats
from cortado._apikeys import KeyGate
from cortado._service import ServiceRunner, run_main
from cortado._telemetry import connect_observed
from cortado.records.follow import RecordWaiters
from cortado.v1 import public_pb2_grpc
from services.results.config import ResultsSettings
from services.results.servicer import ResultsServicer


async def main() -> None:
    """Connect to NATS, follow the registry and the request writes, serve Results until SIGTERM."""
    settings = ResultsSettings.from_env()
    runner = ServiceRunner("results", settings.address, ["cortado.v1.Results"], settings.grace_seconds)
    nc = await connect_observed(settings.nats_url, "cortado-results", settings.metrics_address)
    runner.defer(lambda: _nats.drain(nc))
    js = nc.jetstream()
    apis = await runner.enter(await _nats.api_registry(js))
    requests = await _nats.requests_bucket(js)
    waiters = await runner.enter(RecordWaiters(nc, requests))
    gate = await runner.enter(KeyGate.from_env(js))
    servicer = ResultsServicer(js, requests, apis, waiters, settings.max_wait_seconds, gate)
    servicer.max_watch_seconds = settings.max_watch_seconds
    public_pb2_grpc.add_ResultsServicer_to_server(servicer, runner.server)
    await runner.start()
    await runner.run_until_stopped()


if __name__ == "__main__":
    run_main("results", main)
