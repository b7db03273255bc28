"""Run the ingest service: `python -m services.ingest`."""

from __future__ import annotations

import logging

from cortado import _names, _nats, webhooks
from cortado._apikeys import KeyGate
from cortado._mirror import ApiIndex
from cortado._service import ServiceRunner, run_main
from cortado._telemetry import connect_observed
from cortado.records.cancel import Canceller
from cortado.records.follow import RecordWaiters
from cortado.records.outcomes import Outcomes
from cortado.v1 import public_pb2_grpc
from services.ingest.config import MAX_SUBMIT_MESSAGE_BYTES, IngestSettings
from services.ingest.servicer import RequestsServicer, SubmissionServicer, WaitingSubmissionServicer
from services.ingest.submitter import Submitter

log = logging.getLogger("cortado.ingest")


async def main() -> None:
    """Connect to NATS, load the API registry, serve Submission, WaitingSubmission and Requests until SIGTERM."""
    settings = IngestSettings.from_env()
    runner = ServiceRunner(
        "ingest",
        settings.address,
        ["cortado.v1.Submission", "cortado.v1.WaitingSubmission", "cortado.v1.Requests"],
        settings.grace_seconds,
        max_receive_bytes=MAX_SUBMIT_MESSAGE_BYTES,
    )
    nc = await connect_observed(settings.nats_url, "cortado-ingest", settings.metrics_address)
    runner.defer(lambda: _nats.drain(nc))
    js = nc.jetstream()
    apis = await runner.enter(await _nats.api_registry(js))
    requests = await _nats.requests_bucket(js)
    idempotency = await _nats.idempotency_bucket(js)
    payloads = await _nats.object_store(js, _names.PAYLOADS_STORE)

    submitter = Submitter(
        js, apis, payloads, settings.inline_payload_bytes, requests, idempotency, json_limits=settings.json_limits
    )
    outcomes = Outcomes(await runner.enter(RecordWaiters(nc, requests)), js, requests)
    policy = webhooks.UrlPolicy.from_env()

    def check_webhook(url: str) -> str:
        return webhooks.check_url(url, policy)

    index = ApiIndex(apis)
    gate = await runner.enter(KeyGate.from_env(js).resolving(index.lookup))
    submission = SubmissionServicer(submitter, outcomes, settings.max_wait_seconds, check_webhook, gate)
    public_pb2_grpc.add_SubmissionServicer_to_server(submission, runner.server)
    public_pb2_grpc.add_WaitingSubmissionServicer_to_server(
        WaitingSubmissionServicer(submitter, outcomes, settings.max_wait_seconds, check_webhook, gate), runner.server
    )
    public_pb2_grpc.add_RequestsServicer_to_server(
        RequestsServicer(Canceller(nc, requests, apis, payloads), gate), runner.server
    )
    # Waits end at once when the stop begins (each answers the state it reads), streams take no new item.
    runner.on_stopping(outcomes.stop_waiting)
    runner.on_stopping(submission.stop_taking_items)
    await runner.start()
    await runner.run_until_stopped()


if __name__ == "__main__":
    run_main("ingest", main)
