"""cortado._tls and the scheduler's TLS settings, in process: what is accepted, and what each refusal says."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cortado._env import Env, SettingsError
from cortado._tls import TlsError, _host_port, diagnose, load_ca, load_server_pair
from cortado.mesh import free_port
from services.scheduler.config import SchedulerSettings
from tests.certificates import Authority, Server, make_authority

TOKEN = "0123456789abcdef" * 2


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return make_authority(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def server(authority: Authority) -> Server:
    return authority.sign(authority.certificate.parent, "scheduler")


def settings(**env: str) -> SchedulerSettings:
    return SchedulerSettings.from_env(Env({f"CORTADO_{k.upper()}": v for k, v in env.items()}))


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:50053", ("127.0.0.1", 50053)),
        ("scheduler.cortado.svc:50053", ("scheduler.cortado.svc", 50053)),
        ("[::1]:50053", ("::1", 50053)),
        ("dns:///scheduler:443", ("scheduler", 443)),
        ("unix:/run/scheduler.sock", None),
        ("scheduler", None),
    ],
)
def test_the_host_and_port_of_a_grpc_target(address: str, expected: tuple[str, int] | None) -> None:
    assert _host_port(address) == expected


def test_tls_is_optional_on_loopback_and_read_at_start_when_given(server: Server) -> None:
    assert settings(scheduler_address="127.0.0.1:50053").tls is None
    given = settings(
        scheduler_address="127.0.0.1:50053",
        scheduler_tls_cert=str(server.certificate),
        scheduler_tls_key=str(server.key),
    )
    assert given.tls == (server.certificate.read_bytes(), server.key.read_bytes())
    assert "BEGIN" not in repr(given), "the private key stays out of the settings' repr"


def test_beyond_loopback_the_token_is_asked_for_first_then_tls(server: Server) -> None:
    with pytest.raises(SettingsError, match="not a loopback address: set CORTADO_SCHEDULER_TOKEN"):
        settings(scheduler_address="0.0.0.0:50053")
    with pytest.raises(SettingsError, match="not a loopback address: set CORTADO_SCHEDULER_TLS_CERT and "):
        settings(scheduler_address="0.0.0.0:50053", scheduler_token=TOKEN)
    served = settings(
        scheduler_address="0.0.0.0:50053",
        scheduler_token=TOKEN,
        scheduler_tls_cert=str(server.certificate),
        scheduler_tls_key=str(server.key),
    )
    assert served.tls is not None


def test_an_encrypted_key_is_refused_with_the_way_out(server: Server, tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(
        [openssl, "pkey", "-in", str(server.key), "-aes256", "-passout", "pass:secret", "-out", str(encrypted)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    with pytest.raises(TlsError) as caught:
        load_server_pair(str(server.certificate), str(encrypted), "CERT", "KEY")
    assert str(caught.value) == (
        f"KEY {str(encrypted)!r} is encrypted with a passphrase: give the key unencrypted "
        "(`openssl pkey -in <key> -out <new key>`), in a file only the scheduler can read"
    )


def test_files_swapped_or_damaged_are_named(server: Server, tmp_path: Path) -> None:
    cert, key = str(server.certificate), str(server.key)
    with pytest.raises(TlsError, match=r"^KEY '.*scheduler\.crt' holds no PEM private key"):
        load_server_pair(cert, cert, "CERT", "KEY")
    with pytest.raises(TlsError, match=r"^CERT '.*scheduler\.key' holds no PEM certificate"):
        load_server_pair(key, key, "CERT", "KEY")
    damaged = tmp_path / "damaged.crt"
    damaged.write_text("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n")
    with pytest.raises(TlsError, match=r"^CERT '.*damaged\.crt': its certificate cannot be parsed, the PEM text is"):
        load_server_pair(str(damaged), key, "CERT", "KEY")
    with pytest.raises(TlsError, match=r"^CORTADO_SCHEDULER_CA '.*damaged\.crt': its certificate cannot be parsed"):
        load_ca(damaged)
    damaged_key = tmp_path / "damaged.key"
    damaged_key.write_text("-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n")
    with pytest.raises(TlsError, match=r"^KEY '.*damaged\.key': its private key cannot be parsed, the PEM text is dam"):
        load_server_pair(cert, str(damaged_key), "CERT", "KEY")


def test_nothing_is_said_about_tls_when_nothing_listens_or_the_target_is_not_host_and_port(
    authority: Authority,
) -> None:
    ca = authority.certificate.read_bytes()
    port = free_port()
    assert diagnose(f"127.0.0.1:{port}", None) is None
    assert diagnose(f"127.0.0.1:{port}", ca) is None
    assert diagnose("unix:/nowhere.sock", ca) is None
