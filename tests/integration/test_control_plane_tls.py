"""Beyond loopback the control plane serves TLS only: the scheduler refuses to start without its certificate and
key, clients that trust its CA deploy and list, and any other client gets an error saying what is wrong."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
import yaml
from grpc_health.v1 import health, health_pb2_grpc

from cortado import _natsauth
from cortado._tls import TlsError
from cortado.cli import main
from cortado.client import SchedulerClient
from cortado.mesh import SERVICES, LocalMesh, ManagedProcess, free_port, grpc_serving
from tests.certificates import Authority, Server, make_authority
from tests.deploy.manifests import ROOT
from tests.helpers import eventually, unique_name, write_project

TOKEN = "s3cret-token-of-32-characters-at-least"

IDLE_API = {"autoscaling": {"min_replicas": 0}}
HANDLER = """
class Handler:
    def handle_async(self, payload):
        return payload
"""


@dataclass(frozen=True)
class Certificates:
    """The scheduler's CA and certificate (made out to localhost and 127.0.0.1), and a CA that signed nothing of it."""

    ca: Authority
    server: Server
    other_ca: Authority


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    folder = tmp_path_factory.mktemp("certificates")
    ca = make_authority(folder, "ca")
    return Certificates(ca, ca.sign(folder, "scheduler"), make_authority(folder, "other-ca"))


@dataclass(frozen=True)
class TlsScheduler:
    """A scheduler listening on 0.0.0.0 (beyond loopback) with TLS and a token; reached at `address`."""

    port: int
    certificates: Certificates

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def tls_scheduler(tmp_path_factory: pytest.TempPathFactory, certificates: Certificates) -> Iterator[TlsScheduler]:
    """A NATS server of its own and one scheduler on it, serving TLS on every interface."""
    mesh = LocalMesh(tmp_path_factory.mktemp("tls") / "mesh")
    mesh.workdir.mkdir(parents=True, exist_ok=True)
    mesh.workdir.chmod(0o700)
    mesh.credentials = _natsauth.generate(mesh.credentials_dir, [*SERVICES, _natsauth.ADMIN])
    mesh.ports.update({name: free_port() for name in ("nats", "ingest", "results", "scheduler", "scheduler-metrics")})
    port = mesh.ports["scheduler"]
    env = mesh._service_env("scheduler") | {
        "CORTADO_SCHEDULER_ADDRESS": f"0.0.0.0:{port}",
        "CORTADO_METRICS_ADDRESS": mesh.address("scheduler-metrics"),
        "CORTADO_SCHEDULER_TOKEN": TOKEN,
        "CORTADO_SCHEDULER_TLS_CERT": str(certificates.server.certificate),
        "CORTADO_SCHEDULER_TLS_KEY": str(certificates.server.key),
        "CORTADO_GRACE_SECONDS": "1",
    }
    process = ManagedProcess(
        "scheduler", [sys.executable, "-m", "services.scheduler"], env, mesh.workdir / "logs" / "scheduler.log"
    )
    try:
        mesh.start_nats()
        process.start()
        deadline = time.monotonic() + 30
        while not serving(f"127.0.0.1:{port}", str(certificates.ca.certificate)):
            if not process.alive() or time.monotonic() > deadline:
                pytest.fail(f"the scheduler did not serve TLS; its log ends:\n{process.log_tail()}")
            time.sleep(0.1)
        yield TlsScheduler(port, certificates)
    finally:
        process.stop()
        mesh.stop()


def serving(address: str, ca: str) -> bool:
    """Whether the scheduler's health answers SERVING over TLS, as deploy/'s health checks ask it."""
    try:
        return grpc_serving(address, ca_file=ca)
    except grpc.RpcError:
        return False


def run_scheduler(env: dict[str, str]) -> tuple[int, str]:
    """Start `python -m services.scheduler` with env (and no other CORTADO_ setting); its exit code and last message."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CORTADO_")}
    clean |= {"CORTADO_NATS_URL": "nats://127.0.0.1:1"} | env
    run = subprocess.run(
        [sys.executable, "-m", "services.scheduler"], env=clean, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    return run.returncode, str(json.loads(run.stderr.strip().splitlines()[-1])["message"])


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """The CLI with the token in its environment and no CA unless a test gives one."""
    monkeypatch.setenv("CORTADO_HOME", str(tmp_path))
    monkeypatch.setenv("CORTADO_SCHEDULER_TOKEN", TOKEN)
    monkeypatch.delenv("CORTADO_SCHEDULER_CA", raising=False)
    return monkeypatch


# --- the scheduler's settings -------------------------------------------------------------------------------


@pytest.mark.parametrize("given", ["neither", "CORTADO_SCHEDULER_TLS_CERT", "CORTADO_SCHEDULER_TLS_KEY"])
def test_a_scheduler_beyond_loopback_without_its_certificate_and_key_refuses_to_start(
    given: str, certificates: Certificates
) -> None:
    env = {"CORTADO_SCHEDULER_ADDRESS": f"0.0.0.0:{free_port()}", "CORTADO_SCHEDULER_TOKEN": TOKEN}
    files = {
        "CORTADO_SCHEDULER_TLS_CERT": str(certificates.server.certificate),
        "CORTADO_SCHEDULER_TLS_KEY": str(certificates.server.key),
    }
    if given in files:
        env[given] = files[given]
    code, message = run_scheduler(env)
    assert code == 2
    if given == "neither":
        assert message == (
            f"invalid setting: the scheduler listens on {env['CORTADO_SCHEDULER_ADDRESS']}, not a loopback address: "
            "set CORTADO_SCHEDULER_TLS_CERT and CORTADO_SCHEDULER_TLS_KEY (PEM files: its certificate and private "
            "key), so that it serves TLS and neither the token nor the code deployed crosses the network in clear"
        )
    else:
        [missing] = set(files) - {given}
        assert message == (
            f"invalid setting: {given} is set but {missing} is not: the scheduler serves TLS with both or neither"
        )


def test_a_certificate_that_cannot_be_read_or_parsed_stops_the_scheduler_even_on_loopback(
    certificates: Certificates, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    loopback = {"CORTADO_SCHEDULER_ADDRESS": f"127.0.0.1:{free_port()}"}
    cert, key = str(certificates.server.certificate), str(certificates.server.key)
    cases = [
        (
            {"CORTADO_SCHEDULER_TLS_CERT": str(tmp_path / "missing.crt"), "CORTADO_SCHEDULER_TLS_KEY": key},
            f"CORTADO_SCHEDULER_TLS_CERT {str(tmp_path / 'missing.crt')!r} cannot be read: No such file or directory",
        ),
        (
            {"CORTADO_SCHEDULER_TLS_CERT": str(garbage), "CORTADO_SCHEDULER_TLS_KEY": key},
            f"CORTADO_SCHEDULER_TLS_CERT {str(garbage)!r} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ),
        (
            {"CORTADO_SCHEDULER_TLS_CERT": cert, "CORTADO_SCHEDULER_TLS_KEY": str(certificates.other_ca.key)},
            f"CORTADO_SCHEDULER_TLS_KEY {str(certificates.other_ca.key)!r} is not the private key of the certificate "
            f"in CORTADO_SCHEDULER_TLS_CERT {cert!r}",
        ),
    ]
    for env, expected in cases:
        code, message = run_scheduler(loopback | env)
        assert code == 2, message
        assert message.startswith(f"invalid setting: {expected}"), message


# --- clients ------------------------------------------------------------------------------------------------


def test_the_cli_with_the_ca_deploys_and_lists(
    tls_scheduler: TlsScheduler, cli_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = unique_name("tls")
    project = write_project(tmp_path, name, HANDLER, IDLE_API)
    ca = str(tls_scheduler.certificates.ca.certificate)
    assert main(["deploy", str(project), "--scheduler", tls_scheduler.address, "--ca", ca]) == 0
    assert f"{name}: idle" in capsys.readouterr().out
    # The CA from the environment serves the same.
    cli_env.setenv("CORTADO_SCHEDULER_CA", ca)
    assert main(["get", "-o", "json", "--scheduler", tls_scheduler.address]) == 0
    assert [api["name"] for api in json.loads(capsys.readouterr().out)] == [name]


def test_the_cli_without_the_ca_is_told_the_scheduler_serves_tls(
    tls_scheduler: TlsScheduler, cli_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["get", "--scheduler", tls_scheduler.address]) == 1
    assert capsys.readouterr().err == (
        f"error: the scheduler at {tls_scheduler.address} serves TLS and this client speaks plain text: give the CA "
        "certificate that signed the scheduler's (CORTADO_SCHEDULER_CA, or --ca on the command line)\n"
    )


def test_the_cli_with_another_ca_is_told_the_certificate_is_not_trusted(
    tls_scheduler: TlsScheduler, cli_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    other = str(tls_scheduler.certificates.other_ca.certificate)
    cli_env.setenv("CORTADO_SCHEDULER_CA", other)
    assert main(["get", "--scheduler", tls_scheduler.address]) == 1
    assert capsys.readouterr().err == (
        "error: the scheduler's certificate is not trusted: unable to get local issuer certificate "
        f"(checked against the CA in {other})\n"
    )


def test_a_name_the_certificate_is_not_made_out_to_is_not_trusted(
    tls_scheduler: TlsScheduler, cli_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The scheduler listens on every interface; 127.0.0.2 reaches it too, but its certificate does not name it.
    address = f"127.0.0.2:{tls_scheduler.port}"
    assert main(["get", "--scheduler", address, "--ca", str(tls_scheduler.certificates.ca.certificate)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the scheduler's certificate is not trusted: IP address mismatch"), err
    # localhost is one of its names.
    address = f"localhost:{tls_scheduler.port}"
    assert main(["get", "--scheduler", address, "--ca", str(tls_scheduler.certificates.ca.certificate)]) == 0


def test_a_ca_file_that_cannot_be_read_is_named(
    tls_scheduler: TlsScheduler, cli_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "ca.crt"
    assert main(["get", "--scheduler", tls_scheduler.address, "--ca", str(missing)]) == 1
    assert capsys.readouterr().err == (
        f"error: CORTADO_SCHEDULER_CA {str(missing)!r} cannot be read: No such file or directory\n"
    )


def test_the_token_is_still_required_over_tls(
    tls_scheduler: TlsScheduler, cli_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_env.delenv("CORTADO_SCHEDULER_TOKEN")
    ca = str(tls_scheduler.certificates.ca.certificate)
    assert main(["get", "--scheduler", tls_scheduler.address, "--ca", ca]) == 1
    assert "error: a valid scheduler token is required" in capsys.readouterr().err


def test_a_plain_text_scheduler_client_raises_a_clear_tls_error(tls_scheduler: TlsScheduler) -> None:
    with SchedulerClient(tls_scheduler.address, TOKEN) as client, pytest.raises(TlsError) as caught:
        client.list()
    assert str(caught.value).startswith(f"the scheduler at {tls_scheduler.address} serves TLS")
    # Health checks (grpc_serving, as deploy/ runs them) need the CA as well.
    with pytest.raises(grpc.RpcError):
        grpc_serving(tls_scheduler.address)
    assert grpc_serving(tls_scheduler.address, ca_file=str(tls_scheduler.certificates.ca.certificate))


def deploy_health_checks() -> dict[str, list[str]]:
    """The commands Compose's health check and the Kubernetes probes run in the scheduler's container."""
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yaml").read_text())
    [deployment] = [
        d
        for d in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "base" / "scheduler.yaml").read_text())
        if d["kind"] == "Deployment"
    ]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {
        "compose": compose["services"]["scheduler"]["healthcheck"]["test"][1:],
        "readiness": container["readinessProbe"]["exec"]["command"],
        "liveness": container["livenessProbe"]["exec"]["command"],
    }


@pytest.mark.parametrize("check", ["compose", "readiness", "liveness"])
def test_the_health_checks_of_deploy_pass_against_a_scheduler_serving_tls(
    check: str, tls_scheduler: TlsScheduler
) -> None:
    """Each command run as deploy/ runs it, with this scheduler's port and CA for the container's."""
    python, flag, code = deploy_health_checks()[check]
    assert (python, flag) == ("python", "-c")
    [ca] = re.findall(r"ca_file='([^']+)'", code)
    certificates = tls_scheduler.certificates
    for trusted, expected in ((certificates.ca, 0), (certificates.other_ca, 1)):
        here = code.replace("127.0.0.1:50053", tls_scheduler.address).replace(ca, str(trusted.certificate))
        done = subprocess.run([sys.executable, "-c", here], cwd=ROOT, capture_output=True, timeout=30, check=False)
        assert done.returncode == expected, done.stderr


def test_a_tls_client_of_a_plain_text_scheduler_is_told_so(certificates: Certificates) -> None:
    # What a scheduler on loopback without a certificate (the local mesh's) serves: plain text.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        address = f"127.0.0.1:{port}"
        with SchedulerClient(address, TOKEN, certificates.ca.certificate) as client, pytest.raises(TlsError) as caught:
            client.list()
        assert str(caught.value) == (
            f"the scheduler at {address} does not serve TLS (it runs without CORTADO_SCHEDULER_TLS_CERT, as on "
            "loopback): connect to it without a CA (CORTADO_SCHEDULER_CA, --ca)"
        )
    finally:
        server.stop(None)


def stop(process: subprocess.Popen[str]) -> None:
    """Stop `cortado console` as a service manager would (SIGTERM): it exits 0; killed if it does not."""
    process.send_signal(signal.SIGTERM)
    try:
        process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
    assert process.returncode == 0


def test_cortado_console_serves_the_console_for_a_scheduler_that_serves_tls(
    tls_scheduler: TlsScheduler, tmp_path: Path
) -> None:
    def console(ca: Path) -> tuple[subprocess.Popen[str], str]:
        port = free_port()
        argv = [sys.executable, "-m", "cortado.cli", "console", "--scheduler", tls_scheduler.address]
        process = subprocess.Popen(
            [*argv, "--ca", str(ca), "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "CORTADO_HOME": str(tmp_path)},
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        expected = f"The web console is at http://localhost:{port}/ (scheduler {tls_scheduler.address}); "
        assert line == expected + "Ctrl-C stops it\n", line
        return process, f"http://127.0.0.1:{port}"

    header = {"X-Cortado-Console": "1"}
    process, url = console(tls_scheduler.certificates.ca.certificate)
    try:
        # Envoy's health check must find the scheduler over TLS before it sends calls there.
        allowed = eventually(
            lambda: (
                (
                    reply := httpx.get(f"{url}/api/v1/apis", headers={**header, "Authorization": f"Bearer {TOKEN}"})
                ).status_code
                == 200
                and reply
            ),
            what="the console reaching the scheduler over TLS",
        )
        with SchedulerClient(tls_scheduler.address, TOKEN, tls_scheduler.certificates.ca.certificate) as client:
            assert [api["name"] for api in allowed.json()["apis"]] == [status.name for status in client.list()]
        refused = httpx.get(f"{url}/api/v1/apis", headers=header)
        assert refused.status_code == 401
        assert refused.json()["message"] == "a valid scheduler token is required"
        assert httpx.get(f"{url}/", follow_redirects=True).status_code == 200
    finally:
        stop(process)

    # A CA that did not sign the scheduler's certificate: the console never reaches it.
    process, url = console(tls_scheduler.certificates.other_ca.certificate)
    try:
        time.sleep(2)
        unreached = httpx.get(f"{url}/api/v1/apis", headers={**header, "Authorization": f"Bearer {TOKEN}"})
        assert unreached.status_code == 503
    finally:
        stop(process)
