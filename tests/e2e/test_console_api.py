"""The web console's HTTP API: the Scheduler's console RPCs through Envoy's console listener, as the page calls them.

Each test talks to the console port of the session's mesh (loopback, no token) with the clients people use
(httpx, requests, urllib), and checks what the page relies on: the API list and its live stream, an API's recent
requests (queued, running, finished), one request's detail (body, result, traceback, log lines), cancel, pause
and resume, and the guards (the console header, loopback host names, nothing else of the control plane).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from cortado.client import SchedulerClient
from cortado.mesh import LocalMesh
from tests.e2e.cli_support import Cli
from tests.e2e.test_cancel import Held
from tests.e2e.test_dead_letters import DIES_UNTIL_FIXED
from tests.helpers import eventually
from tests.meshcalls import Deploy, result, submit

pytestmark = pytest.mark.e2e

HEADER = {"X-Cortado-Console": "1"}

FAILING = """
import logging

log = logging.getLogger("failing")


class Handler:
    def __init__(self, config):
        pass

    def handle_async(self, payload, request_id):
        log.info("looking at %s", payload["name"])
        return self.check(payload)

    def check(self, payload):
        if payload["name"] == "bad":
            raise ValueError("names may not be bad")
        return {"hello": payload["name"]}
"""


@pytest.fixture(scope="module")
def console(mesh: LocalMesh) -> Iterator[httpx.Client]:
    """An HTTP client of the console's listener, sending the console's header."""
    with httpx.Client(base_url=f"http://127.0.0.1:{mesh.ports['console']}", headers=HEADER, timeout=30) as client:
        yield client


def api_status(console: httpx.Client, name: str) -> dict[str, Any]:
    reply = console.get(f"/api/v1/apis/{name}")
    assert reply.status_code == 200, reply.text
    status: dict[str, Any] = reply.json()["api"]
    return status


def listed(console: httpx.Client, name: str, **params: str) -> list[dict[str, Any]]:
    reply = console.get(f"/api/v1/apis/{name}/requests", params=params)
    assert reply.status_code == 200, reply.text
    found: list[dict[str, Any]] = reply.json()["requests"]
    return found


def test_the_console_page_and_its_files_are_served_with_their_types(console: httpx.Client) -> None:
    page = console.get("/", headers={}, follow_redirects=True)
    assert page.status_code == 200
    assert page.url.path == "/console/index.html"
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>Cortado console</title>" in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    script = console.get("/console/app.js", headers={})
    assert script.status_code == 200
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    # Nothing is loaded from elsewhere: every file the page names is served here.
    assert "https://" not in page.text and "http://" not in page.text.replace("http://www.w3.org", "")
    missing = console.get("/console/nothing.js", headers={})
    assert missing.status_code == 404
    assert missing.json()["message"] == "the console has no file 'nothing.js'"
    assert console.get("/console/../mesh.json", headers={}).status_code == 404


def test_api_calls_without_the_console_header_are_refused(mesh: LocalMesh) -> None:
    url = f"http://127.0.0.1:{mesh.ports['console']}/api/v1/apis"
    refused = requests.get(url, timeout=10)
    assert refused.status_code == 403
    assert refused.json()["message"] == "console calls carry the X-Cortado-Console header (the console's page sends it)"
    # A form post from another site carries no such header either: nothing is paused.
    posted = requests.post(url.replace("/apis", "/apis/iris:pause"), data={"x": "1"}, timeout=10)
    assert posted.status_code == 403
    assert requests.get(url, headers=HEADER, timeout=10).status_code == 200


def test_the_console_answers_loopback_host_names_only(mesh: LocalMesh) -> None:
    port = mesh.ports["console"]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost:9000"):
        reply = httpx.get(f"http://127.0.0.1:{port}/api/v1/apis", headers={**HEADER, "Host": host}, timeout=10)
        assert reply.status_code == 200, host
    # A page whose own name resolves to 127.0.0.1 (DNS rebinding) reaches nothing.
    rebound = httpx.get(f"http://127.0.0.1:{port}/api/v1/apis", headers={**HEADER, "Host": "evil.example"})
    assert rebound.status_code == 404


def test_nothing_else_of_the_control_plane_is_reachable(console: httpx.Client) -> None:
    for path in ("/cortado.v1.Scheduler/Deploy", "/cortado.v1.Scheduler/CreateApiKey", "/api/v1/keys"):
        reply = console.post(path, json={})
        assert reply.status_code == 404, (path, reply.status_code)


def test_an_unknown_api_and_a_bad_filter_get_clear_errors(console: httpx.Client, deploy: Deploy) -> None:
    unknown = console.get("/api/v1/apis/nosuchapi/requests")
    assert unknown.status_code == 404
    assert unknown.json()["message"] == "API 'nosuchapi' is not deployed"
    name = deploy(FAILING, wait=False)
    bad = console.get(f"/api/v1/apis/{name}/requests", params={"status": "done"})
    assert bad.status_code == 400
    assert bad.json()["message"] == (
        "status 'done' is not a request state; use one of in_queue, in_progress, completed, failed, cancelled, "
        "or none for all"
    )
    missing = console.get(f"/api/v1/apis/{name}/requests/{'0' * 32}")
    assert missing.status_code == 404
    assert "not found" in missing.json()["message"]


def test_a_failed_request_shows_its_traceback_body_and_log_lines(
    console: httpx.Client, deploy: Deploy, http: httpx.Client
) -> None:
    name = deploy(FAILING)
    good = submit(http, name, json={"name": "ada"})
    bad = submit(http, name, json={"name": "bad"})
    assert result(http, name, good)["status"] == "completed"
    assert result(http, name, bad)["status"] == "failed"

    detail = console.get(f"/api/v1/apis/{name}/requests/{bad}").json()
    assert detail["summary"]["status"] == "REQUEST_STATUS_FAILED"
    assert detail["summary"]["error_type"] == "ValueError"
    assert detail["error"]["message"] == "names may not be bad"
    traceback = detail["error"]["traceback"]
    assert traceback.startswith("Traceback (most recent call last):")
    assert 'raise ValueError("names may not be bad")' in traceback
    assert "in check" in traceback
    # The record exactly as GET /<api>/<id> answers it.
    assert json.loads(detail["record_json"]) == http.get(f"/{name}/{bad}").json()
    assert detail["summary"]["started_at"] and detail["summary"]["finished_at"]

    lines = eventually(
        lambda: console.get(f"/api/v1/apis/{name}/requests/{bad}").json()["log_lines"] or None,
        what="the request's log lines",
    )
    messages = [json.loads(line)["message"] for line in lines]
    assert "looking at bad" in messages
    assert all(json.loads(line)["labels"]["request_id"] == bad for line in lines)
    # Its handler's log lines name its trace: the console links to it in Jaeger (CORTADO_CONSOLE_TRACES_URL).
    traces = {json.loads(line)["trace_id"] for line in lines}
    assert len(traces) == 1
    linked = console.get(f"/api/v1/apis/{name}/requests/{bad}").json()["trace_url"]
    assert linked == f"http://jaeger.test:16686/trace/{traces.pop()}"

    done = console.get(f"/api/v1/apis/{name}/requests/{good}").json()
    assert done["result"]["content_type"] == "application/json"
    assert json.loads(done["result"]["text"]) == {"hello": "ada"}
    assert done["error"]["traceback"] == ""
    # Its body is no longer kept once it finished.
    assert done["payload"]["retained"] is False

    failed = listed(console, name, status="failed")
    assert [r["id"] for r in failed] == [bad]
    everything = listed(console, name)
    assert {r["id"] for r in everything} == {good, bad}
    assert [r["id"] for r in everything] == [bad, good], "newest submission first"


def test_queued_requests_are_listed_with_their_body_and_cancelled_from_the_console(
    console: httpx.Client, held: Held, http: httpx.Client
) -> None:
    running = submit(http, held.name, json={"n": 0})
    eventually(lambda: running in held.called(), what="the first request running")
    waiting = [submit(http, held.name, json={"n": i, "text": "é" * 3}) for i in range(1, 4)]

    def queued_ids() -> set[str] | None:
        found = {r["id"] for r in listed(console, held.name, status="in_queue")}
        return found if set(waiting[1:]) <= found else None

    eventually(queued_ids, what="the queued requests listed")
    in_progress = listed(console, held.name, status="in_progress")
    assert [r["id"] for r in in_progress] == [running]

    target = waiting[-1]
    detail = console.get(f"/api/v1/apis/{held.name}/requests/{target}").json()
    assert detail["summary"]["status"] == "REQUEST_STATUS_IN_QUEUE"
    assert detail["payload"]["retained"] is True
    assert detail["payload"]["content_type"] == "application/json"
    assert json.loads(detail["payload"]["text"]) == {"n": 3, "text": "ééé"}

    # The page cancels with a POST of an empty JSON object, as urllib sends it here.
    call = urllib.request.Request(
        f"{str(console.base_url).rstrip('/')}/api/v1/apis/{held.name}/requests/{target}:cancel",
        data=b"{}",
        headers={**HEADER, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(call, timeout=30) as reply:
        cancelled = json.loads(reply.read())
    assert cancelled["outcome"] == "cancelled"
    assert cancelled["summary"]["status"] == "REQUEST_STATUS_CANCELLED"
    assert http.get(f"/{held.name}/{target}").json()["status"] == "cancelled"

    held.release.touch()
    assert result(http, held.name, running)["status"] == "completed"
    again = console.post(f"/api/v1/apis/{held.name}/requests/{running}:cancel", json={}).json()
    assert again["outcome"] == "finished"
    assert target not in held.called()


def test_pause_holds_the_queue_until_resume(
    console: httpx.Client, deploy: Deploy, http: httpx.Client, scheduler: SchedulerClient
) -> None:
    name = deploy(FAILING)
    paused = console.post(f"/api/v1/apis/{name}:pause", json={})
    assert paused.status_code == 200, paused.text
    assert paused.json()["api"]["paused"] is True
    ids = [submit(http, name, json={"name": f"n{i}"}) for i in range(3)]
    eventually(lambda: scheduler.describe(name).queued == 3, what="three requests waiting")
    # Nothing is dispatched while paused (the replica pulls every 2 s: give it longer than that).
    assert http.get(f"/{name}/{ids[0]}", params={"wait": 3}).json()["status"] == "in_queue"
    assert api_status(console, name)["paused"] is True

    resumed = console.post(f"/api/v1/apis/{name}:resume", json={})
    assert resumed.json()["api"]["paused"] is False
    assert [result(http, name, i)["status"] for i in ids] == ["completed"] * 3


def test_a_redeploy_keeps_the_pause_and_the_cli_pauses_and_resumes(
    cli: Cli, deploy: Deploy, http: httpx.Client, scheduler: SchedulerClient
) -> None:
    name = deploy(FAILING)
    run = cli("pause", name)
    assert run.code == 0, run.err
    assert run.out.startswith(f"{name}: dispatch paused; 0 queued requests wait")
    assert "(paused)" in cli("get").out.split(name, 1)[1].splitlines()[0]
    deploy(FAILING, name=name, api={"handler": {"config": {"v": 2}}})
    assert scheduler.describe(name).paused is True
    request = submit(http, name, json={"name": "x"})
    assert http.get(f"/{name}/{request}", params={"wait": 3}).json()["status"] == "in_queue"
    run = cli("resume", name, "-o", "json")
    assert run.code == 0, run.err
    assert json.loads(run.out)["paused"] is False
    assert result(http, name, request)["status"] == "completed"
    unknown = cli("pause", "nosuchapi")
    assert unknown.code != 0
    assert "API 'nosuchapi' is not deployed" in unknown.err


def test_the_watch_stream_sends_a_line_per_interval_and_the_activity_counts_what_finished(
    console: httpx.Client, deploy: Deploy, http: httpx.Client
) -> None:
    name = deploy(FAILING)
    for i in range(4):
        submit(http, name, json={"name": "bad" if i == 0 else f"n{i}"})

    def counted() -> dict[str, Any] | None:
        activity: dict[str, Any] = api_status(console, name)["activity"]
        return activity if (activity["completed"], activity["failed"]) == ("3", "1") else None

    activity = eventually(counted, timeout=30, what="the activity to count 3 completed and 1 failed")
    assert activity["interval"] == "10s"
    assert sum(p["completed"] for p in activity["points"]) == 3
    busy = [p for p in activity["points"] if p["completed"] or p["failed"]]
    assert all(p["mean_latency_seconds"] > 0 for p in busy)
    status = api_status(console, name)
    assert status["replicas"][0]["state"] == "REPLICA_STATE_READY"
    assert status["replicas"][0]["hostname"]

    with console.stream("GET", "/api/v1/apis:watch", params={"interval": "0.5s"}) as stream:
        assert stream.status_code == 200
        lines = []
        for line in stream.iter_lines():
            if line.strip():
                lines.append(json.loads(line.strip().lstrip("[,").rstrip("]")))
            if len(lines) == 2:
                break
    assert all(name in {api["name"] for api in answer["apis"]} for answer in lines)
    too_fast = console.get("/api/v1/apis:watch", params={"interval": "0.1s"})
    assert too_fast.status_code == 400
    assert too_fast.json()["message"] == "interval must be from 0.5 s to 60 s, got 0.1 s"


def test_a_dead_letter_shows_as_one_and_is_replayed_from_the_console(
    console: httpx.Client, deploy: Deploy, http: httpx.Client, tmp_path: Path
) -> None:
    fixed = tmp_path / "fixed"
    name = deploy(DIES_UNTIL_FIXED, api={"handler": {"max_retries": 0, "config": {"fixed": str(fixed)}}})
    doomed = submit(http, name, json={"n": 7})
    assert result(http, name, doomed)["error"]["type"] == "HandlerProcessDied"

    def lettered() -> dict[str, Any] | None:
        detail: dict[str, Any] = console.get(f"/api/v1/apis/{name}/requests/{doomed}").json()
        return detail if detail["dead_letter"] else None

    detail = eventually(lettered, what="the request shown as a dead letter")
    # Its body is kept in the dead letter.
    assert detail["payload"]["retained"] is True
    assert json.loads(detail["payload"]["text"]) == {"n": 7}
    letters = console.get(f"/api/v1/apis/{name}/dead-letters").json()["dead_letters"]
    assert [letter["id"] for letter in letters] == [doomed]

    fixed.touch()
    replayed = console.post(f"/api/v1/apis/{name}/dead-letters/{doomed}:replay", json={})
    assert replayed.status_code == 200, replayed.text
    assert result(http, name, replayed.json()["id"])["result"] == {"echo": {"n": 7}}
    again = console.post(f"/api/v1/apis/{name}/dead-letters/{doomed}:replay", json={})
    assert again.status_code == 404
    assert again.json()["message"] == (
        f"API {name!r} has no dead letter {doomed!r} (never failed that way, replayed already, or expired)"
    )


def test_console_errors_read_the_same_with_urllib(mesh: LocalMesh) -> None:
    call = urllib.request.Request(f"http://127.0.0.1:{mesh.ports['console']}/api/v1/apis/nosuchapi", headers=HEADER)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(call, timeout=10)
    assert refused.value.code == 404
    assert json.loads(refused.value.read())["message"] == "API 'nosuchapi' is not deployed"
