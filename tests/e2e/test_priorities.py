"""Priorities: `Cortado-Priority: high|normal|low` (or the gRPC field) orders dispatch within an API.

Higher priorities go first; a lower level with requests waiting still gets at least one dispatch in
every SHARE (services/executor/priority.py); `queue.max_length` counts every level together; the
scheduler shows the queue by priority.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from cortado.client import Client, SchedulerClient
from cortado.mesh import LocalMesh
from cortado.v1 import records_pb2
from services.executor.priority import SHARE
from tests.e2e.cli_support import Cli
from tests.e2e.test_metrics import scrape, value
from tests.helpers import eventually
from tests.meshcalls import Deploy, result, submit

pytestmark = pytest.mark.e2e

# One request at a time; each result says the order the handler took it in and when it finished.
ORDERED = """
import itertools
import time

taken = itertools.count()


class Handler:
    def handle_async(self, payload):
        n = next(taken)
        time.sleep(payload.get("sleep", 0.01))
        return {"n": n, "kind": payload.get("kind"), "finished": time.monotonic()}
"""

# Holds every request until the release file named in its configuration exists; each result says its order.
GATED = """
import itertools
import os
import time

taken = itertools.count()


class Handler:
    def __init__(self, config):
        self.release = config["release"]

    def handle_async(self, payload):
        while not os.path.exists(self.release):
            time.sleep(0.02)
        n = next(taken)
        time.sleep(0.005)
        return {"n": n, "kind": payload["kind"]}
"""

LEVELS = ("high", "normal", "low")
ONE_AT_A_TIME = {"max_concurrency": 1}
ONE_REPLICA = {"min_replicas": 1, "max_replicas": 1}


def gated(deploy: Deploy, release: Path, **api: Any) -> str:
    """An API of GATED, one replica running one request at a time, held until `release` exists."""
    handler = {**ONE_AT_A_TIME, "config": {"release": str(release)}}
    return deploy(GATED, api={"handler": handler, "autoscaling": ONE_REPLICA, **api})


def post_many(http: httpx.Client, api: str, priority: str, payloads: list[dict[str, Any]]) -> list[str]:
    """POST each payload with Cortado-Priority, eight at a time; the ids in payload order."""
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda p: submit(http, api, json=p, headers={"Cortado-Priority": priority}), payloads))


def test_high_requests_submitted_behind_a_backlog_of_500_low_ones_finish_before_the_next_50_low(
    deploy: Deploy, http: httpx.Client
) -> None:
    api = deploy(ORDERED, api={"handler": ONE_AT_A_TIME, "autoscaling": ONE_REPLICA})
    lows = post_many(http, api, "low", [{"kind": "low", "sleep": 0.02} for _ in range(500)])
    since = time.monotonic()
    highs = post_many(http, api, "high", [{"kind": "high"} for _ in range(20)])
    high_results = [result(http, api, request_id, wait=60)["result"] for request_id in highs]
    last_high = max(r["finished"] for r in high_results)
    low_results = [result(http, api, request_id, wait=60)["result"] for request_id in lows]
    # Low requests that finished after the first high one was submitted and before the last high one finished.
    lows_between = [r for r in low_results if since < r["finished"] < last_high]
    assert len(lows_between) < 50, f"{len(lows_between)} low requests finished while the 20 high ones waited"
    # The backlog was really there: most low requests finished after the high ones.
    assert sum(r["finished"] > last_high for r in low_results) > 300


def test_a_low_request_gets_at_least_one_dispatch_in_every_share_while_high_ones_keep_coming(
    deploy: Deploy, http: httpx.Client, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    api = gated(deploy, release)
    # Both levels backed up: 10 low requests and 250 high ones wait while the handler is held.
    lows = post_many(http, api, "low", [{"kind": "low"} for _ in range(10)])
    highs = post_many(http, api, "high", [{"kind": "high"} for _ in range(250)])
    release.touch()
    order = sorted(
        (result(http, api, request_id, wait=60)["result"] for request_id in lows + highs), key=lambda r: r["n"]
    )
    kinds = [r["kind"] for r in order]
    last_low = max(i for i, kind in enumerate(kinds) if kind == "low")
    # While low requests waited, every run of SHARE dispatches gave low at least one.
    for start in range(last_low - SHARE + 1):
        assert "low" in kinds[start : start + SHARE], f"no low request among dispatches {start}..{start + SHARE}"
    # And high went first otherwise: low, at one in SHARE or a little more, ran out long before high did.
    assert last_low <= 10 * SHARE, "".join(kind[0] for kind in kinds)


def test_a_priority_that_is_not_high_normal_or_low_answers_400_and_queues_nothing(
    deploy: Deploy, http: httpx.Client, scheduler: SchedulerClient
) -> None:
    api = deploy(ORDERED)
    reply = http.post(f"/{api}", json={}, headers={"Cortado-Priority": "urgent"})
    assert reply.status_code == 400
    assert reply.json()["message"] == "Cortado-Priority must be high, normal or low, not 'urgent'"
    assert scheduler.describe(api).queued == 0


def test_the_grpc_field_the_client_and_the_header_set_the_priority_and_get_shows_it(
    deploy: Deploy, http: httpx.Client, grpc_client: Client
) -> None:
    api = deploy(ORDERED)
    request_id = grpc_client.submit(api, b"{}", "application/json", priority="high")
    assert grpc_client.wait(api, request_id, timeout=30).status == records_pb2.REQUEST_STATUS_COMPLETED
    unknown = Client.request(api, b"{}", "application/json")
    unknown.priority = 9  # type: ignore[assignment]
    with pytest.raises(grpc.RpcError) as refused:
        grpc_client._submission.Submit(unknown)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "priority 9 is not one of" in str(refused.value.details())
    with pytest.raises(ValueError, match="priority must be high, normal or low, not 'urgent'"):
        grpc_client.submit(api, b"{}", priority="urgent")


def test_the_queue_is_shown_by_priority_and_max_length_counts_every_level(
    deploy: Deploy, http: httpx.Client, scheduler: SchedulerClient, mesh: LocalMesh, cli: Cli, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    api = gated(deploy, release, queue={"max_length": 6})
    # The replica takes two of each level ahead (one running): let it hold six before counting the queue.
    held = [post_many(http, api, level, [{"kind": level}] * 2) for level in ("low", "high", "normal")]
    eventually(lambda: scheduler.describe(api).in_flight == 6, what="six requests held by the replica")
    waiting = post_many(http, api, "low", [{"kind": "low"}] * 3) + post_many(http, api, "high", [{"kind": "high"}] * 2)
    waiting += post_many(http, api, "normal", [{"kind": "normal"}])
    status = scheduler.describe(api)
    assert (status.queued, dict(status.queued_by_priority)) == (6, {"high": 2, "normal": 1, "low": 3})
    # queue.max_length (6) counts every level together: the seventh is refused whatever its priority.
    for level in ("high", "normal", "low"):
        full = http.post(f"/{api}", json={"kind": level}, headers={"Cortado-Priority": level})
        assert full.status_code == 429, full.text
    described = cli("describe", api)
    assert "by priority: high 2, normal 1, low 3" in described.out
    listed = cli("get", "--output", "json")
    [mine] = [a for a in json.loads(listed.out) if a["name"] == api]
    assert mine["queued_by_priority"] == {"high": 2, "normal": 1, "low": 3}

    def by_priority() -> dict[str, float | None]:
        samples = scrape(mesh, "scheduler")
        return {level: value(samples, "cortado_queue_length_by_priority", api=api, priority=level) for level in LEVELS}

    eventually(lambda: by_priority() == {"high": 2, "normal": 1, "low": 3}, what="the queue by priority in metrics")
    release.touch()
    for request_id in [i for ids in held for i in ids] + waiting:
        assert result(http, api, request_id)["status"] == "completed"
