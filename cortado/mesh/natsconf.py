"""nats-server's configuration for the local mesh: JetStream's storage, Cortado's message limit, the service users,
and (for a cluster of servers on loopback) the routes between them."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from cortado import _natsauth
from cortado.mesh.processes import MeshError

NATS_MAX_PAYLOAD = "8MB"
"""NATS's message limit in Cortado's deployments: log lines up to 5 MB and results up to ~8 MB travel whole."""


NATS_SYNC_INTERVAL = "2m"
"""How often the local NATS server fsyncs JetStream's files (`CORTADO_NATS_SYNC_INTERVAL`; nats-server's default).

Every write reaches the operating system before JetStream acknowledges it, so a killed nats-server (even
SIGKILL) loses nothing acknowledged: tests/reliability/test_restarts.py kills it mid-load and counts one final
record per accepted request. Only a crash of the machine itself can lose the writes of the last interval;
`always` closes that too, at a quarter to a tenth of the writes per second (docs/decisions.md)."""


def nats_config(
    port: int,
    store: Path,
    listen: str = "127.0.0.1",
    monitor_port: int = 0,
    credentials: Mapping[str, _natsauth.NatsCredentials] | None = None,
    sync_interval: str = NATS_SYNC_INTERVAL,
    max_file_store: str = "",
) -> str:
    """nats-server configuration: JetStream on file storage (fsynced every sync_interval, or `always`; at most
    max_file_store bytes when given, such as `4GB`), Cortado's message limit, the service users and their
    permissions (when credentials are given), and (when a port is given) the HTTP monitoring endpoint (`/varz`,
    `/jsz`) on loopback. MeshError naming the setting when sync_interval or max_file_store is malformed."""
    if not re.fullmatch(r"always|[1-9][0-9]*(ms|s|m|h)", sync_interval):
        raise MeshError(f"CORTADO_NATS_SYNC_INTERVAL must be `always` or a duration such as 2m, got {sync_interval!r}")
    if max_file_store and not re.fullmatch(r"[1-9][0-9]*(KB|MB|GB|TB)?", max_file_store):
        raise MeshError(f"CORTADO_NATS_MAX_FILE_STORE must be a size such as 4GB, got {max_file_store!r}")
    limit = f"  max_file_store: {max_file_store}\n" if max_file_store else ""
    text = (
        f"listen: {listen}:{port}\n"
        f"max_payload: {NATS_MAX_PAYLOAD}\n"
        f"jetstream {{\n  store_dir: {json.dumps(str(store))}\n  sync_interval: {json.dumps(sync_interval)}\n"
        f"{limit}}}\n"
    )
    if credentials:
        text += _natsauth.authorization_config(credentials)
    if monitor_port:
        text += f"http: 127.0.0.1:{monitor_port}\n"
    return text


def cluster_config(name: str, cluster_port: int, route: _natsauth.NatsCredentials, route_ports: list[int]) -> str:
    """The lines that make a loopback nats-server named name one of a cluster: it takes routes on cluster_port
    from the route user, and connects to every cluster port in route_ports (its own included) as that user."""
    routes = ", ".join(f"nats-route://{route.user}:{route.password}@127.0.0.1:{p}" for p in route_ports)
    return (
        f"server_name: {name}\n"
        f"cluster {{\n  name: cortado\n  listen: 127.0.0.1:{cluster_port}\n"
        f"  authorization {{ user: {route.user}, password: {json.dumps(route.password)} }}\n"
        f"  routes: [{routes}]\n}}\n"
    )
