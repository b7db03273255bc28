"""The local mesh: developer tooling that runs NATS JetStream, Cortado's five services and Envoy as processes on
one machine, for `make run` (`python -m cortado.mesh`), `cortado up` and the test suite.

Production does not use it: there the services run under Kubernetes or Docker Compose (see deploy/), whose Envoy
configuration is rendered from the same templates (deploy/envoy/render.py).

- `cortado.mesh.local`: `LocalMesh`, the supervisor (starts each part in order, waits for it, stops in reverse);
- `cortado.mesh.launch`: the services and how each is launched (`SERVICES`, `service_command`);
- `cortado.mesh.processes`: child processes and readiness checks (`ManagedProcess`, `free_port`, `grpc_serving`);
- `cortado.mesh.envoyconf`: Envoy's configuration, rendered from the templates in cortado/mesh/envoy/;
- `cortado.mesh.natsconf`: nats-server's configuration;
- `cortado.mesh.state`: the state file and folder (`cortado_home`, `read_state`, `clear_state`);
- `cortado.mesh.cli`: `python -m cortado.mesh`.
"""

from cortado.mesh.cli import main
from cortado.mesh.envoyconf import (
    ENVOY_DIR,
    MAX_SHORT_CALLS,
    MAX_STREAMS_PER_CONNECTION,
    MAX_WAITING_CALLS,
    public_tls_files,
    render_console_config,
    render_envoy_config,
)
from cortado.mesh.launch import SERVICES
from cortado.mesh.local import LocalMesh, running_mesh
from cortado.mesh.natsconf import NATS_MAX_PAYLOAD, NATS_SYNC_INTERVAL, nats_config
from cortado.mesh.processes import (
    ManagedProcess,
    MeshError,
    envoy_process,
    envoy_ready,
    find_binary,
    free_port,
    grpc_serving,
    tcp_open,
    wait_until,
)
from cortado.mesh.state import STATE_FILE, clear_state, cortado_home, read_state

__all__ = [
    "ENVOY_DIR",
    "MAX_SHORT_CALLS",
    "MAX_STREAMS_PER_CONNECTION",
    "MAX_WAITING_CALLS",
    "NATS_MAX_PAYLOAD",
    "NATS_SYNC_INTERVAL",
    "SERVICES",
    "STATE_FILE",
    "LocalMesh",
    "ManagedProcess",
    "MeshError",
    "clear_state",
    "cortado_home",
    "envoy_process",
    "envoy_ready",
    "find_binary",
    "free_port",
    "grpc_serving",
    "main",
    "nats_config",
    "public_tls_files",
    "read_state",
    "render_console_config",
    "render_envoy_config",
    "running_mesh",
    "tcp_open",
    "wait_until",
]
