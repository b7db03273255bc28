"""Where the `cortado` command connects, and with what: addresses, the control-plane token, the CAs, the clients."""

from __future__ import annotations

import argparse
import contextlib
import os

from cortado._tls import CA_SETTING
from cortado.client import Client, SchedulerClient
from cortado.mesh import cortado_home, read_state

TOKEN_FILE = "token"
"""The file in $CORTADO_HOME that holds the control-plane token when $CORTADO_SCHEDULER_TOKEN is unset."""

API_KEY_SETTING = "CORTADO_API_KEY"
"""The API key `submit`, `result` and `cancel` send when the front door requires one."""
ENDPOINT_CA_SETTING = "CORTADO_ENDPOINT_CA"
"""The CA (PEM file) `submit`, `result` and `cancel` trust when the public port serves TLS."""


def endpoints(options: argparse.Namespace) -> tuple[str, str]:
    """(scheduler address, public gRPC address): flags, then environment, then the running local mesh."""
    state = read_state() or {}
    scheduler = options.scheduler or os.environ.get("CORTADO_SCHEDULER") or state.get("scheduler")
    public = options.endpoint or os.environ.get("CORTADO_ENDPOINT") or state.get("grpc_address")
    return scheduler or "127.0.0.1:50053", public or "127.0.0.1:8888"


def scheduler_token() -> str:
    """The control-plane token: $CORTADO_SCHEDULER_TOKEN, else the file $CORTADO_HOME/token (empty: none)."""
    token = os.environ.get("CORTADO_SCHEDULER_TOKEN", "")
    if not token:
        with contextlib.suppress(OSError):
            token = (cortado_home() / TOKEN_FILE).read_text().strip()
    return token


def scheduler_ca(options: argparse.Namespace) -> str:
    """The CA file the scheduler's certificate must chain to: --ca, else $CORTADO_SCHEDULER_CA (empty: plain text)."""
    return str(options.ca or os.environ.get(CA_SETTING, ""))


def connect_scheduler(options: argparse.Namespace) -> SchedulerClient:
    """A client of the scheduler's control plane, with the token and CA the options and environment give."""
    return SchedulerClient(endpoints(options)[0], scheduler_token(), scheduler_ca(options))


def connect_public(options: argparse.Namespace) -> Client:
    """A client of the public gRPC port, with $CORTADO_API_KEY and $CORTADO_ENDPOINT_CA (empty when unset)."""
    return Client(endpoints(options)[1], os.environ.get(API_KEY_SETTING, ""), os.environ.get(ENDPOINT_CA_SETTING, ""))
