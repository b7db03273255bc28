"""Run the webhook sender: `python -m services.webhooks`."""

# ruff: noqa: E402 (two optional imports are turned off before the imports that would load them: see below)
from __future__ import annotations

import logging
import sys

# An idle sender should cost little memory. Where they are installed (a development environment), nats-py loads
# aiohttp for WebSocket connections, which Cortado never makes, and httpx loads its command line's click: about
# 10 MB between them. Both treat the module as absent when it cannot be imported.
for _unused in ("aiohttp", "click"):
    sys.modules.setdefault(_unused, None)  # type: ignore[arg-type]

from cortado import _nats
from cortado._service import ServiceRunner, run_main
from cortado._telemetry import connect_observed
from services.webhooks.config import WebhookSettings
from services.webhooks.sender import WebhookSender


async def main() -> None:
    """Connect to NATS, deliver webhook jobs until SIGTERM, then finish the attempts under way."""
    settings = WebhookSettings.from_env()
    # httpx logs each request with its URL, which may carry the receiver's token; the sender logs each attempt.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # The sender serves no gRPC API: the server answers health checks (SERVING once jobs are being pulled).
    runner = ServiceRunner("webhooks", settings.address, [], settings.grace_seconds)
    nc = await connect_observed(settings.nats_url, "cortado-webhooks", settings.metrics_address)
    runner.defer(lambda: _nats.drain(nc))
    sender = await runner.enter(WebhookSender(nc.jetstream(), settings))
    runner.on_stopping(sender.request_stop)
    await runner.start()
    await runner.run_until_stopped()


if __name__ == "__main__":
    run_main("webhooks", main)
