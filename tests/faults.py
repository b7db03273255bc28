"""Shared by the fault tests (reliability, cluster): handlers that log their runs, their processes, and clients."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from cortado.client import SchedulerClient
from tests.helpers import eventually, unique_name, write_project

ApiFiles = TypeVar("ApiFiles", bound="HandlerFiles")
Arg = TypeVar("Arg")
Result = TypeVar("Result")


@dataclass
class HandlerFiles:
    """A deployed API whose handler logs its runs to root/runs.log and touches root/pids/<pid> at start-up."""

    name: str
    root: Path

    @property
    def runs_file(self) -> Path:
        return self.root / "runs.log"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    def config(self) -> dict[str, object]:
        """The handler config naming these files ("runs" and "pids")."""
        return {"runs": str(self.runs_file), "pids": str(self.pids)}

    def logged(self, fields: int) -> list[list[str]]:
        """Every "start|end <id> <pid> ..." line of `fields` fields, split, in order; a torn line is skipped."""
        if not self.runs_file.exists():
            return []
        out = []
        for line in self.runs_file.read_text().splitlines():
            parts = line.split()
            if len(parts) == fields and parts[0] in ("start", "end") and parts[2].isdigit():
                out.append(parts)
        return out

    def handler_pids(self) -> list[int]:
        """PIDs of the handler processes started so far, oldest first (alive or not)."""
        if not self.pids.exists():
            return []
        return sorted(
            (int(p.name) for p in self.pids.iterdir()), key=lambda pid: (self.pids / str(pid)).stat().st_mtime
        )


def new_handler_files(kind: type[ApiFiles], root: Path, prefix: str) -> ApiFiles:
    """A fresh API name (prefix-...) and its files folder root/<name>-files, created empty."""
    name = unique_name(prefix)
    files = root / f"{name}-files"
    files.mkdir(parents=True)
    return kind(name, files)


def deploy_handler(
    scheduler: SchedulerClient,
    root: Path,
    files: HandlerFiles,
    source: str,
    api: dict[str, Any] | None = None,
    **config: object,
) -> None:
    """Deploy source as the API files.name (project under root), its handler config files.config() plus config.

    `api` is the rest of the API spec; a "handler" section in it is kept, its "config" replaced. Not waited for.
    """
    extra = dict(api or {})
    extra["handler"] = {**extra.get("handler", {}), "config": {**files.config(), **config}}
    scheduler.deploy(write_project(root, files.name, source, extra))


def is_handler_process(pid: int) -> bool:
    """Whether pid is a live Cortado handler process (and not a PID reused by something else)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return b"services.executor.handlerprocess" in cmdline and state != "Z"


def kill_handler_processes(apis: Iterable[HandlerFiles]) -> None:
    """SIGKILL what is left of these APIs' handler processes (orphans of a killed executor outlive the mesh)."""
    for api in apis:
        for pid in api.handler_pids():
            if is_handler_process(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def final(http: httpx.Client, api: str, request_id: str, timeout: float = 60) -> dict[str, Any]:
    """The request's final state (completed or failed), waiting with ?wait= and retrying while services restart.

    A connection error or a 503 is retried as a client may; any other answer than 200 fails at once.
    """

    def check() -> dict[str, Any] | None:
        try:
            reply = http.get(f"/{api}/{request_id}", params={"wait": 10})
        except httpx.TransportError:
            return None
        if reply.status_code == 503:
            return None
        assert reply.status_code == 200, (reply.status_code, reply.text)
        body: dict[str, Any] = reply.json()
        return body if body["status"] in ("completed", "failed") else None

    return eventually(check, timeout=timeout, interval=0.1, what=f"request {request_id} of {api} finished")


def assert_all_completed(http: httpx.Client, api: str, accepted: dict[str, int]) -> None:
    """Every accepted request (id -> n) ends completed with its own result {"n": n}."""
    wrong = {}
    for request_id, n in list(accepted.items()):
        body = final(http, api, request_id)
        if body["status"] != "completed" or body.get("result") != {"n": n}:
            wrong[request_id] = body
    assert not wrong, f"{len(wrong)} of {len(accepted)} accepted requests did not complete right: {wrong}"


@dataclass(frozen=True)
class Failure:
    """A refused or failed attempt: which call, when it began (monotonic), and what came back."""

    call: str
    """"post" or "get"."""
    began: float
    what: str
    """The exception's type name, or the status code, a space and the start of the answer."""


class ClientLoop:
    """Threads that POST {"n": i} to an API through Envoy until stopped, retrying refused submissions as a client may.

    A 503, 429 or connection error is retried with the same payload (no id came back) and kept in `failures`; any
    other answer than 200 is kept in `unexpected` and retried too. With fetch, each thread then reads its request
    through Envoy (GET ?wait=) until it is completed or failed, retrying the same way, and keeps the body in
    `fetched`. `accepted` maps every id answered 200 to its n. A thread's exception fails reach() and stop().
    """

    def __init__(self, base_url: str, api: str, threads: int = 3, fetch: bool = False) -> None:
        self._base_url = base_url
        self._api = api
        self._fetch = fetch
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._next = 0
        self.accepted: dict[str, int] = {}
        self.fetched: dict[str, dict[str, Any]] = {}
        self.failures: list[Failure] = []
        self.answered: list[tuple[str, float]] = []
        """(call, when it began) of every attempt answered 200."""
        self.unexpected: list[tuple[str, int, str]] = []
        """(call, status code, body) of every answer other than 200, 429 and 503."""
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self._errors: list[BaseException] = []

    def __enter__(self) -> ClientLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the threads (each finishes the attempt it is in) and fail if one of them raised."""
        self._stop.set()
        for thread in self._threads:
            thread.join(120)
        assert not self._errors, self._errors

    def count(self) -> int:
        """How many submissions were accepted so far."""
        with self._lock:
            return len(self.accepted)

    def reach(self, accepted: int, timeout: float = 60) -> None:
        """Wait until at least `accepted` submissions were accepted in all."""
        assert not self._errors, self._errors
        eventually(lambda: self.count() >= accepted, timeout, what=f"{accepted} requests accepted")

    @property
    def retried(self) -> Counter[str]:
        """How many attempts were retried, by what came back: an exception's type name or a status code."""
        with self._lock:
            kinds = [f.what.split(" ", 1)[0] for f in self.failures]
            kinds += [str(status) for _, status, _ in self.unexpected]
        return Counter(kinds)

    def succeeded(self, call: str, after: float) -> int:
        """How many attempts of one call that began after a (monotonic) time were answered 200."""
        with self._lock:
            return sum(1 for c, began in self.answered if c == call and began > after)

    def failed(self, call: str, after: float = 0.0) -> list[Failure]:
        """The failed attempts of one call that began after a (monotonic) time."""
        with self._lock:
            return [f for f in self.failures if f.call == call and f.began > after]

    def _run(self) -> None:
        try:
            with httpx.Client(base_url=self._base_url, timeout=60) as http:
                while not self._stop.is_set():
                    with self._lock:
                        self._next += 1
                        n = self._next
                    request_id = self._retrying(self._post, http, n)
                    if request_id is None or not self._fetch:
                        continue
                    body = self._retrying(self._get, http, request_id)
                    if body is not None:
                        with self._lock:
                            self.fetched[request_id] = body
        except BaseException as exc:  # reported by reach() and stop()
            self._errors.append(exc)

    def _retrying(
        self, attempt: Callable[[httpx.Client, Arg], Result | None], http: httpx.Client, arg: Arg
    ) -> Result | None:
        """attempt(http, arg) again after a back-off until it gives something; None once stopped."""
        while not self._stop.is_set():
            value = attempt(http, arg)
            if value is not None:
                return value
            self._stop.wait(0.05)  # a client's back-off before it retries
        return None

    def _call(self, http: httpx.Client, call: str, method: str, url: str, **kwargs: Any) -> httpx.Response | None:
        began = time.monotonic()
        try:
            reply = http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            with self._lock:
                self.failures.append(Failure(call, began, type(exc).__name__))
            return None
        if reply.status_code in (429, 503):
            with self._lock:
                self.failures.append(Failure(call, began, f"{reply.status_code} {reply.text[:200]}"))
            return None
        if reply.status_code != 200:
            with self._lock:
                self.unexpected.append((call, reply.status_code, reply.text))
            return None
        with self._lock:
            self.answered.append((call, began))
        return reply

    def _post(self, http: httpx.Client, n: int) -> str | None:
        reply = self._call(http, "post", "POST", f"/{self._api}", json={"n": n})
        if reply is None:
            return None
        request_id = str(reply.json()["id"])
        with self._lock:
            self.accepted[request_id] = n
        return request_id

    def _get(self, http: httpx.Client, request_id: str) -> dict[str, Any] | None:
        reply = self._call(http, "get", "GET", f"/{self._api}/{request_id}", params={"wait": 10})
        if reply is None:
            return None
        body: dict[str, Any] = reply.json()
        return body if body["status"] in ("completed", "failed") else None
