"""Redeploying a changed project rolls the API onto the new code without losing queued requests."""

from __future__ import annotations

from pathlib import Path

import httpx

from cortado.client import SchedulerClient
from tests.helpers import eventually, unique_name, write_project
from tests.meshcalls import result, submit, wait_ready

VERSIONED = """
import time


class Handler:
    def handle_async(self, payload):
        time.sleep(0.2)
        return {"version": VERSION}


VERSION = {version}
"""


def test_a_changed_project_takes_over_and_every_queued_request_completes(
    scheduler: SchedulerClient, http: httpx.Client, tmp_path: Path
) -> None:
    name = unique_name("roll")
    scheduler.deploy(write_project(tmp_path / "v1", name, VERSIONED.replace("{version}", "1")))
    try:
        wait_ready(scheduler, name)
        queued = [submit(http, name, json={}) for _ in range(10)]
        reply = scheduler.deploy(write_project(tmp_path / "v2", name, VERSIONED.replace("{version}", "2")))
        assert [a.version for a in reply.apis] == [2]
        later = [submit(http, name, json={}) for _ in range(3)]
        bodies = [result(http, name, request_id) for request_id in queued + later]
        assert all(b["status"] == "completed" for b in bodies), bodies
        # Requests already handled by version 1 stay as they were; the rest run on version 2.
        assert {b["result"]["version"] for b in bodies} <= {1, 2}
        eventually(lambda: scheduler.describe(name).version == 2 and scheduler.describe(name).ready_replicas == 1, 60)
        fresh = result(http, name, submit(http, name, json={}))
        assert fresh["result"] == {"version": 2}
    finally:
        scheduler.delete(name, force=True)


def test_redeploying_an_unchanged_project_restarts_nothing(scheduler: SchedulerClient, tmp_path: Path) -> None:
    name = unique_name("same")
    project = write_project(tmp_path, name, VERSIONED.replace("{version}", "1"))
    scheduler.deploy(project)
    try:
        reply = scheduler.deploy(project)
        assert [a.version for a in reply.apis] == [1]
        assert any("is up to date" in notice for notice in reply.notices)
    finally:
        scheduler.delete(name, force=True)
