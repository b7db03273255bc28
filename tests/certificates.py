"""Certificates for tests, made with the `openssl` command as docs/production.md does: a CA, and servers it signs."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        pytest.skip("the openssl command is not installed")
    done = subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


@dataclass(frozen=True)
class Authority:
    """A CA: its certificate (what clients trust) and its key (what signs servers' certificates)."""

    certificate: Path
    key: Path

    def sign(self, folder: Path, name: str, names: str = "DNS:localhost,IP:127.0.0.1", days: int = 30) -> Server:
        """A server key and a certificate made out to names (subjectAltName), valid for days, in folder."""
        key, request, certificate = (folder / f"{name}.{suffix}" for suffix in ("key", "csr", "crt"))
        _openssl("req", *EC_KEY, "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(request), cwd=folder)
        extensions = folder / f"{name}.ext"
        extensions.write_text(
            f"subjectAltName={names}\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n"
            "basicConstraints=CA:FALSE\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
        )
        _openssl(
            "x509", "-req", "-in", str(request), "-CA", str(self.certificate), "-CAkey", str(self.key),
            "-CAcreateserial", "-days", str(days), "-extfile", str(extensions), "-out", str(certificate),
            cwd=folder,
        )  # fmt: skip
        return Server(certificate, key)


@dataclass(frozen=True)
class Server:
    """A server's certificate and private key (PEM files)."""

    certificate: Path
    key: Path


def make_authority(folder: Path, name: str = "ca") -> Authority:
    """A new self-signed CA in folder (`<name>.crt`, `<name>.key`)."""
    folder.mkdir(parents=True, exist_ok=True)
    certificate, key = folder / f"{name}.crt", folder / f"{name}.key"
    _openssl(
        "req", "-x509", *EC_KEY, "-days", "30", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", str(key), "-out", str(certificate),
        cwd=folder,
    )  # fmt: skip
    return Authority(certificate, key)
