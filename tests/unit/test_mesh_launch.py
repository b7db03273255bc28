"""How the local mesh launches its services: one table, each service's module from the installed packages."""

from __future__ import annotations

import importlib.util
import sys

from cortado.mesh import SERVICES
from cortado.mesh.launch import SERVICE_MODULES, service_command


def test_every_service_has_a_module_that_can_be_run() -> None:
    assert SERVICES == ("scheduler", "ingest", "results", "executor", "webhooks")
    for service in SERVICES:
        module = SERVICE_MODULES[service]
        assert importlib.util.find_spec(f"{module}.__main__") is not None, module


def test_a_service_runs_as_this_python_without_the_working_folder_on_its_path() -> None:
    assert service_command("ingest") == [sys.executable, "-P", "-m", "services.ingest"]
