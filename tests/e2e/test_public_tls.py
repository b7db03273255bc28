"""The public port serving TLS (CORTADO_HTTP_TLS_CERT / _KEY): curl, httpx, the sync and async gRPC clients and the
CLI trusting the CA reach it; a plain-text client and a client trusting another CA do not; bad settings are named."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import grpc
import httpx
import pytest

from cortado import _tls
from cortado.cli import main
from cortado.client import AsyncClient, Client, SchedulerClient
from cortado.mesh import LocalMesh, public_tls_files
from cortado.v1 import records_pb2
from tests.certificates import Authority, Server, make_authority
from tests.helpers import unique_name, write_project
from tests.meshcalls import MESH_ENV, wait_ready

pytestmark = pytest.mark.e2e

ECHO = """
class Handler:
    def handle_async(self, payload, request_id):
        return {"echo": payload}
"""


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, Server, Authority]:
    folder = tmp_path_factory.mktemp("public-tls")
    ca = make_authority(folder, "ca")
    return ca, ca.sign(folder, "envoy"), make_authority(folder, "other-ca")


@pytest.fixture(scope="module")
def secured(
    tmp_path_factory: pytest.TempPathFactory, authority: tuple[Authority, Server, Authority]
) -> Iterator[tuple[LocalMesh, str]]:
    """A mesh whose public port serves TLS, with an echo API deployed; and the API's name."""
    _, server, _ = authority
    files = (str(server.certificate), str(server.key))
    with LocalMesh(tmp_path_factory.mktemp("secured"), env=MESH_ENV, tls_files=files) as mesh:
        folder = tmp_path_factory.mktemp("project")
        name = unique_name("tls")
        write_project(folder, name, ECHO)
        with SchedulerClient(mesh.scheduler_address) as scheduler:
            scheduler.deploy(folder / name)
            wait_ready(scheduler, name)
        yield mesh, name


def test_https_with_the_ca_works_and_plain_http_or_another_ca_does_not(
    secured: tuple[LocalMesh, str], authority: tuple[Authority, Server, Authority]
) -> None:
    mesh, name = secured
    ca, _, other = authority
    assert mesh.http_url.startswith("https://")
    with httpx.Client(
        base_url=mesh.http_url, verify=ssl.create_default_context(cafile=ca.certificate), timeout=30
    ) as web:
        request_id = web.post(f"/{name}", json={"n": 1}).json()["id"]
        final = web.get(f"/{name}/{request_id}", params={"wait": 20}).json()
        assert (final["status"], final["result"]) == ("completed", {"echo": {"n": 1}})
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{mesh.http_url}/{name}", json={}, verify=ssl.create_default_context(cafile=other.certificate))
    plain = mesh.http_url.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):
        httpx.post(f"{plain}/{name}", json={}, timeout=5)
    curl = shutil.which("curl")
    if curl is not None:
        done = subprocess.run(
            [curl, "-s", "--cacert", str(ca.certificate), "-X", "POST", f"{mesh.http_url}/{name}", "-d", "{}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0 and '"id"' in done.stdout, (done.returncode, done.stdout, done.stderr)


async def test_the_grpc_clients_with_the_ca_work_over_tls(
    secured: tuple[LocalMesh, str], authority: tuple[Authority, Server, Authority]
) -> None:
    mesh, name = secured
    ca, _, other = authority
    with Client(mesh.grpc_address, ca=ca.certificate) as client:
        view = client.submit_and_wait(name, b'{"n": 2}', "application/json", wait=20)
        assert view.status == records_pb2.REQUEST_STATUS_COMPLETED
    async with AsyncClient(mesh.grpc_address, ca=str(ca.certificate)) as aio_client:
        assert (await aio_client.get(name, view.id)).status == records_pb2.REQUEST_STATUS_COMPLETED
    with Client(mesh.grpc_address, ca=other.certificate) as untrusting, pytest.raises(grpc.RpcError) as refused:
        untrusting.get(name, view.id)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(_tls.TlsError, match="cannot be read"):
        Client(mesh.grpc_address, ca="/no/such/ca.pem")


def cli(mesh: LocalMesh, ca: Path, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with (
        mock.patch.dict(os.environ, {"CORTADO_ENDPOINT_CA": str(ca)}),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        code = main([*argv, "--scheduler", mesh.scheduler_address, "--endpoint", mesh.grpc_address])
    return code, out.getvalue(), err.getvalue()


def test_the_cli_trusts_the_ca_it_is_given(
    secured: tuple[LocalMesh, str], authority: tuple[Authority, Server, Authority]
) -> None:
    mesh, name = secured
    ca, _, _ = authority
    code, out, err = cli(mesh, ca.certificate, "submit", name, "--json", '{"n": 3}')
    assert code == 0, err
    code, out, err = cli(mesh, ca.certificate, "result", name, out.strip(), "--wait", "-o", "json")
    assert code == 0, err
    assert json.loads(out)["result"] == {"echo": {"n": 3}}


def test_tls_settings_are_both_or_neither_and_must_be_a_usable_pair(
    authority: tuple[Authority, Server, Authority], tmp_path: Path
) -> None:
    ca, server, _ = authority
    assert public_tls_files({}) is None
    with pytest.raises(_tls.TlsError, match="CORTADO_HTTP_TLS_KEY is not set"):
        public_tls_files({"CORTADO_HTTP_TLS_CERT": str(server.certificate)})
    with pytest.raises(_tls.TlsError, match=r"CORTADO_HTTP_TLS_KEY .* is not the private key"):
        public_tls_files({"CORTADO_HTTP_TLS_CERT": str(server.certificate), "CORTADO_HTTP_TLS_KEY": str(ca.key)})
    files = public_tls_files(
        {"CORTADO_HTTP_TLS_CERT": str(server.certificate), "CORTADO_HTTP_TLS_KEY": str(server.key)}
    )
    assert files == (str(server.certificate.resolve()), str(server.key.resolve()))
