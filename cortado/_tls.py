"""TLS of the control plane: the scheduler's certificate and key, the CA its clients trust, and why a handshake failed.

The scheduler serves TLS when given a certificate and its key (required beyond loopback); a client connects with
TLS when given the CA certificate that signed the scheduler's. gRPC reports any failed handshake as UNAVAILABLE with
a transport message ("Socket closed", "Tls handshake failed ..."); `diagnose` tells the cases apart by trying the
handshake itself.
"""

from __future__ import annotations

import re
import socket
import ssl
from pathlib import Path

import grpc

CA_SETTING = "CORTADO_SCHEDULER_CA"
"""The client setting (and `cortado --ca`): the PEM file of the CA that signed the scheduler's certificate."""

_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"


class TlsError(Exception):
    """A certificate, key or CA file that cannot be used, or a connection whose TLS failed; the message says which."""


def _reason(exc: Exception) -> str:
    """An ssl error's message without the C source location Python appends."""
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", str(exc)) or type(exc).__name__


def _read(path: str | Path, setting: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsError(f"{setting} {str(path)!r} cannot be read: {exc.strerror}") from None


def _check_certificates(data: bytes, path: str | Path, setting: str) -> None:
    """TlsError unless data holds PEM certificates OpenSSL can parse."""
    if _CERTIFICATE not in data:
        raise TlsError(f"{setting} {str(path)!r} holds no PEM certificate ({_CERTIFICATE.decode()})")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=data.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError) as exc:
        raise TlsError(
            f"{setting} {str(path)!r}: its certificate cannot be parsed, the PEM text is damaged "
            f"(OpenSSL: {_reason(exc)})"
        ) from None


def load_ca(path: str | Path, setting: str = CA_SETTING) -> bytes:
    """The CA certificate(s) of the PEM file at path; TlsError naming setting when it cannot be read or parsed."""
    data = _read(path, setting)
    _check_certificates(data, path, setting)
    return data


def _no_password() -> bytes:
    raise TlsError("encrypted")


def load_server_pair(cert_path: str, key_path: str, cert_setting: str, key_setting: str) -> tuple[bytes, bytes]:
    """(certificate chain, private key) of a server, both PEM; TlsError naming the setting whose file is unusable.

    The certificate file may hold the chain (the server's certificate first); the key must be unencrypted and be
    the certificate's.
    """
    certificate = _read(cert_path, cert_setting)
    _check_certificates(certificate, cert_path, cert_setting)
    key = _read(key_path, key_setting)
    if b"PRIVATE KEY-----" not in key:
        raise TlsError(f"{key_setting} {key_path!r} holds no PEM private key (-----BEGIN PRIVATE KEY-----)")
    if b"ENCRYPTED" in key:
        raise TlsError(
            f"{key_setting} {key_path!r} is encrypted with a passphrase: give the key unencrypted "
            "(`openssl pkey -in <key> -out <new key>`), in a file only the scheduler can read"
        )
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_path, key_path, password=_no_password)
    except (ssl.SSLError, TlsError) as exc:
        if getattr(exc, "reason", "") == "KEY_VALUES_MISMATCH":
            raise TlsError(
                f"{key_setting} {key_path!r} is not the private key of the certificate in {cert_setting} "
                f"{cert_path!r} (the first certificate of that file must be the server's own)"
            ) from None
        raise TlsError(
            f"{key_setting} {key_path!r}: its private key cannot be parsed, the PEM text is damaged "
            f"(OpenSSL: {_reason(exc)})"
        ) from None
    except OSError as exc:
        raise TlsError(f"{cert_setting} or {key_setting} cannot be read: {exc.strerror}") from None
    return certificate, key


def server_credentials(pair: tuple[bytes, bytes]) -> grpc.ServerCredentials:
    """gRPC credentials serving TLS with (certificate chain, private key); no client certificate asked."""
    certificate, key = pair
    return grpc.ssl_server_credentials([(key, certificate)])


def channel_credentials(ca: bytes) -> grpc.ChannelCredentials:
    """gRPC credentials of a client that trusts the servers whose certificate the CA `ca` (PEM) signed."""
    return grpc.ssl_channel_credentials(root_certificates=ca)


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a gRPC target `host:port`, `[v6]:port` or `dns:///host:port`; None for other forms."""
    target = re.sub(r"^dns:(//[^/]*/)?", "", address)
    match = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]/]+):(\d+)", target)
    if match is None:
        return None
    host = match.group(1) or match.group(3)
    return host, int(match.group(2) or match.group(4))


def diagnose(address: str, ca: bytes | None, ca_name: str = "", timeout: float = 5.0) -> str | None:
    """Why a gRPC connection to the scheduler at address failed, when TLS is the reason; None otherwise.

    ca: the CA the client trusts (None: the client speaks plain text); ca_name: where it came from, for the
    message. Tries the TLS handshake that gRPC made (or would have had to make) with Python's ssl module, which
    says what went wrong in words: a certificate the CA did not sign or made out to other names, or a server
    speaking plain text where TLS was expected, or the other way round. None when the address cannot be reached
    at all, or TLS works and the failure lies elsewhere.
    """
    target = _host_port(address)
    if target is None:
        return None
    host, port = target
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cadata=ca.decode("ascii"))
    context.set_alpn_protocols(["h2"])
    try:
        connection = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None
    with connection:
        try:
            context.wrap_socket(connection, server_hostname=host).close()
        except ssl.SSLCertVerificationError as exc:
            source = f" (checked against the CA in {ca_name})" if ca_name else ""
            return f"the scheduler's certificate is not trusted: {exc.verify_message}{source}"
        except (ssl.SSLError, OSError):
            if ca is None:
                return None
            return (
                f"the scheduler at {address} does not serve TLS (it runs without CORTADO_SCHEDULER_TLS_CERT, "
                f"as on loopback): connect to it without a CA ({CA_SETTING}, --ca)"
            )
    if ca is not None:
        return None
    return (
        f"the scheduler at {address} serves TLS and this client speaks plain text: give the CA certificate "
        f"that signed the scheduler's ({CA_SETTING}, or --ca on the command line)"
    )
