"""The HTTP API's test handler and what its tests read back: the deployed API, GETs, errors and timestamps."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from cortado.client import SchedulerClient
from tests.helpers import eventually

# Echoes, holds, fails or hashes as the payload asks, and appends each call's request id to a file.
HANDLER = """
    import hashlib
    import time
    from pathlib import Path


    class Handler:
        def __init__(self, config):
            self.calls = Path(config["calls"])

        def handle_async(self, payload, request_id):
            with self.calls.open("a") as log:
                log.write(request_id + "\\n")
            if isinstance(payload, bytes):
                return {"sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload)}
            if isinstance(payload, str):
                return {"text": payload}
            if not isinstance(payload, dict):
                return {"echo": payload}
            action = payload.get("do")
            if action == "fail":
                raise ValueError(payload.get("message", "asked to fail"))
            if action == "nan":
                return {"ok": 1, "x": float("nan")}
            if action == "exact":
                return {"z": 1, "a": [2, 3.5], "big": 2**100 + 1, "neg": -(10**40), "m": {"y": None, "b": True}}
            if action == "hold":
                release = Path(payload["release"])
                deadline = time.monotonic() + payload.get("seconds", 60)
                while not release.exists() and time.monotonic() < deadline:
                    time.sleep(0.02)
            return {"echo": payload}
"""


HEX = set("0123456789abcdef")


MIB = 1024 * 1024


@dataclass
class Api:
    """A deployed test API: its name, the file its handler logs call ids to, and where release files go."""

    name: str
    calls: Path
    releases: Path
    held: list[Path] = field(default_factory=list)

    def called(self) -> list[str]:
        """The request ids the handler was called with, in order."""
        return self.calls.read_text().split() if self.calls.exists() else []

    def hold(self, seconds: float = 60) -> dict[str, Any]:
        """A payload whose request holds its handler until release_all() (or `seconds` pass)."""
        release = self.releases / uuid.uuid4().hex
        self.held.append(release)
        return {"do": "hold", "release": str(release), "seconds": seconds}

    def release_all(self) -> None:
        """Let every held request finish."""
        for release in self.held:
            release.touch()
        self.held.clear()


def get(http: httpx.Client, api: str, request_id: str, **params: Any) -> httpx.Response:
    return http.get(f"/{api}/{request_id}", params=params)


def status_becomes(http: httpx.Client, api: str, request_id: str, status: str) -> dict[str, Any]:
    """Poll GET until the request reads `status`; its body."""

    def check() -> dict[str, Any] | None:
        reply = get(http, api, request_id)
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        return body if body["status"] == status else None

    return eventually(check, timeout=30, what=f"request {request_id} {status}")


def assert_error(reply: httpx.Response, code: int, *words: str) -> dict[str, Any]:
    """The answer is `code` with a JSON object whose human-readable message mentions each of words."""
    assert reply.status_code == code, (reply.status_code, reply.text)
    assert reply.headers["content-type"].startswith("application/json"), reply.headers
    body = reply.json()
    assert isinstance(body, dict), body
    message = body.get("message")
    assert isinstance(message, str), body
    assert len(message) > 10 and " " in message, body
    for word in words:
        assert word.lower() in message.lower(), (word, body)
    return body


def assert_recent_rfc3339_utc(timestamp: str) -> None:
    assert timestamp.endswith("Z"), timestamp
    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    assert moment.tzinfo is not None
    assert moment.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - moment) < timedelta(minutes=1), timestamp


def idle(scheduler: SchedulerClient, api: Api) -> None:
    """Wait until nothing is queued or in flight for the API."""

    def check() -> bool:
        status = scheduler.describe(api.name)
        return status.queued == 0 and status.in_flight == 0

    eventually(check, timeout=30, what=f"{api.name} idle")
