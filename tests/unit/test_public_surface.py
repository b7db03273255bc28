"""`cortado`'s public names: each one resolves, and importing the package for a handler loads no gRPC."""

from __future__ import annotations

import subprocess
import sys

import pytest

import cortado


@pytest.mark.parametrize("name", cortado.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(cortado, name) is not None
    assert name in dir(cortado)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'Clinet'"):
        _ = cortado.Clinet


def test_clients_are_the_ones_their_modules_define() -> None:
    from cortado._clientcommon import NotFound
    from cortado.client import AsyncClient, Client

    assert (cortado.Client, cortado.AsyncClient, cortado.NotFound) == (Client, AsyncClient, NotFound)


def test_what_a_handler_imports_loads_no_grpc() -> None:
    script = "import sys; from cortado import log, cancelled, Result, MetricsClient; print('grpc' in sys.modules)"
    shown = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "False"
    script = "import sys, cortado; cortado.Client; print('grpc' in sys.modules)"
    shown = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "True"
