"""Nothing lost (README, "Guarantees"): an `Idempotency-Key` makes a retried submit return the same id and enqueue
nothing new."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from cortado.client import SchedulerClient
from tests.faults import final
from tests.helpers import eventually
from tests.reliability.conftest import DeployRecording
from tests.reliability.support import RecordingApi

pytestmark = pytest.mark.reliability


def post(http: httpx.Client, api: str, payload: dict[str, int], key: str | None) -> str:
    headers = {"Idempotency-Key": key} if key is not None else {}
    reply = http.post(f"/{api}", json=payload, headers=headers)
    assert reply.status_code == 200, (reply.status_code, reply.text)
    return str(reply.json()["id"])


def drained(http: httpx.Client, api: RecordingApi, scheduler: SchedulerClient) -> None:
    """Submit a plain request last and wait for it: with one worker, anything queued before it has run by then."""
    last = post(http, api.name, {"n": -1}, None)
    assert final(http, api.name, last)["status"] == "completed"
    # A request is acknowledged just after its result is written: the queue empties a moment later.
    eventually(lambda: (s := scheduler.describe(api.name)).queued == 0 and s.in_flight == 0, 10)


def test_a_retried_submit_with_the_same_key_returns_the_same_id_and_runs_once(
    http: httpx.Client, scheduler: SchedulerClient, deploy_recording_api: DeployRecording
) -> None:
    api = deploy_recording_api()
    key = uuid.uuid4().hex
    first = post(http, api.name, {"n": 1}, key)
    assert post(http, api.name, {"n": 1}, key) == first
    assert final(http, api.name, first)["result"] == {"n": 1}
    # Retried after it completed, it still names the same request, which is not run again.
    assert post(http, api.name, {"n": 1}, key) == first
    drained(http, api, scheduler)
    assert len(api.starts(first)) == 1
    assert len(api.starts()) == 2, api.events()  # first, and the plain request drained() sent


def test_retries_racing_each_other_all_get_the_one_id(
    http: httpx.Client, scheduler: SchedulerClient, deploy_recording_api: DeployRecording
) -> None:
    api = deploy_recording_api()
    key = uuid.uuid4().hex
    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(lambda _: post(http, api.name, {"n": 5}, key), range(8)))
    assert len(ids) == 1, ids
    (request_id,) = ids
    assert final(http, api.name, request_id)["result"] == {"n": 5}
    drained(http, api, scheduler)
    assert len(api.starts(request_id)) == 1
    assert len(api.starts()) == 2, api.events()


def test_a_different_key_or_no_key_is_a_new_request(
    http: httpx.Client, scheduler: SchedulerClient, deploy_recording_api: DeployRecording
) -> None:
    api = deploy_recording_api()
    first = post(http, api.name, {"n": 1}, "key-one")
    second = post(http, api.name, {"n": 1}, "key-two")
    plain = [post(http, api.name, {"n": 1}, None) for _ in range(2)]
    assert len({first, second, *plain}) == 4
    for request_id in (first, second, *plain):
        assert final(http, api.name, request_id)["result"] == {"n": 1}
        assert len(api.starts(request_id)) == 1


def test_the_same_key_on_another_api_is_independent(
    http: httpx.Client, scheduler: SchedulerClient, deploy_recording_api: DeployRecording
) -> None:
    one, two = deploy_recording_api(), deploy_recording_api()
    key = uuid.uuid4().hex
    on_one = post(http, one.name, {"n": 1}, key)
    on_two = post(http, two.name, {"n": 2}, key)
    assert on_one != on_two
    assert final(http, one.name, on_one)["result"] == {"n": 1}
    assert final(http, two.name, on_two)["result"] == {"n": 2}
    assert post(http, two.name, {"n": 2}, key) == on_two
    for api, request_id in ((one, on_one), (two, on_two)):
        drained(http, api, scheduler)
        assert [i for i, _ in api.starts()][:1] == [request_id]
        assert len(api.starts(request_id)) == 1
