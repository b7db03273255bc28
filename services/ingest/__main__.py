"""Run the ingest service: `python -m services.ingest`."""

from __future__ import annotations

import logging

from cortado import names, natsutil
from cortado.service import ServiceRunner, run_main
from cortado.telemetry import connect_observed
from cortado.v1 import public_pb2_grpc
from services.ingest.config import IngestSettings
from services.ingest.servicer import SubmissionServicer

log = logging.getLogger("cortado.ingest")


async def main() -> None:
    """Connect to NATS, load the API registry, serve Submission until SIGTERM."""
    settings = IngestSettings.from_env()
    nc = await connect_observed(settings.nats_url, "cortado-ingest", settings.metrics_address)
    js = nc.jetstream()
    apis = await natsutil.api_registry(js)
    requests = await natsutil.requests_bucket(js)
    idempotency = await natsutil.idempotency_bucket(js)
    payloads = await natsutil.object_store(js, names.PAYLOADS_STORE)

    runner = ServiceRunner("ingest", settings.address, ["cortado.v1.Submission"], settings.grace_seconds)
    public_pb2_grpc.add_SubmissionServicer_to_server(
        SubmissionServicer(js, apis, payloads, settings.inline_payload_bytes, requests, idempotency), runner.server
    )
    runner.on_stop(apis.stop)
    runner.on_stop(lambda: natsutil.drain(nc))
    await runner.start()
    await runner.run_until_stopped()


if __name__ == "__main__":
    run_main("ingest", main)
