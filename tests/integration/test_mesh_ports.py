"""The local mesh picks free ports and starts its processes on them; a port taken in between (by anything on the
machine) makes the service move to another, once, instead of failing the start."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from cortado.mesh import LocalMesh
from tests.meshcalls import MESH_ENV

pytestmark = pytest.mark.integration


def test_a_service_whose_port_was_taken_moves_to_another(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        # Ingest (a grpc.aio server) and the executor's metrics (prometheus_client) each find theirs taken.
        mesh = LocalMesh(tmp_path / "mesh", env=MESH_ENV, ports={"ingest": taken, "executor-metrics": taken})
        with mesh:
            assert mesh.ports["ingest"] != taken and mesh.ports["executor-metrics"] != taken
            assert all(process.alive() for process in mesh.processes.values())
