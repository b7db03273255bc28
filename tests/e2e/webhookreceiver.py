"""The webhook tests' receiver, a thread with http.server on loopback that records every POST it gets, and what the
tests check with it: signatures, delivery state over gRPC, the CLI in-process."""

from __future__ import annotations

import contextlib
import io
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook

from cortado.cli import main
from cortado.client import Client
from cortado.mesh import LocalMesh, free_port
from cortado.v1 import records_pb2

# The receiver -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One POST the receiver got: its path, headers (lower-case names), body, and the status it answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def id(self) -> str:
        return self.headers.get("webhook-id", "")


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1: each message id's first `failures` attempts get 500, every attempt 503
    while not `accepting`, `/gone` paths 410; otherwise 204. `down()` stops listening, `up()` listens again on the
    same port."""

    port: int = field(default_factory=free_port)
    failures: int = 0
    accepting: bool = True
    deliveries: list[Delivery] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {name.lower(): value for name, value in self.headers.items()}
                with receiver._lock:
                    earlier = sum(1 for d in receiver.deliveries if d.id == headers.get("webhook-id"))
                    if self.path.startswith("/gone"):
                        status = 410
                    elif earlier < receiver.failures:
                        status = 500
                    elif not receiver.accepting:
                        status = 503
                    else:
                        status = 204
                    receiver.deliveries.append(Delivery(self.path, headers, body, status))
                self.send_response(status)
                message = b"" if status == 204 else f"receiver says {status}".encode()
                self.send_header("content-length", str(len(message)))
                self.end_headers()
                self.wfile.write(message)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def of(self, request_id: str) -> list[Delivery]:
        """Every attempt that reached the receiver for one request, in order."""
        with self._lock:
            return [d for d in self.deliveries if d.id == request_id]

    def accepted(self, request_id: str) -> Delivery | None:
        """The attempt the receiver accepted for one request, if one came."""
        return next((d for d in self.of(request_id) if d.status == 204), None)

    def path(self, request_id: str) -> str:
        """The path the request's accepted webhook was POSTed to."""
        delivery = self.accepted(request_id)
        assert delivery is not None, f"no webhook of {request_id} accepted"
        return delivery.path


# Helpers ------------------------------------------------------------------------------------------------------------


@dataclass
class Cli:
    """`cortado ...` in-process against the session's mesh."""

    mesh: LocalMesh

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([*argv, "--scheduler", self.mesh.scheduler_address, "--endpoint", self.mesh.grpc_address])
        return code, out.getvalue(), err.getvalue()


SECRET_LINE = re.compile(r"^(?P<api>[a-z0-9-]+): webhook signing secret (?P<secret>whsec_\S+)$", re.MULTILINE)


def verify(secret: str, delivery: Delivery) -> None:
    """The delivery's signature checks out with secret (WebhookVerificationError otherwise)."""
    Webhook(secret).verify(delivery.body, delivery.headers)


def webhook_of(client: Client, api: str, request_id: str) -> records_pb2.WebhookDelivery:
    return client.get(api, request_id).webhook
