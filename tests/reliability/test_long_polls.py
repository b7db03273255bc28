"""Long polls cannot starve the other clients: Envoy's budgets by kind of call, its cap of calls per HTTP/2
connection, and Watch's time limit (docs/operations.md, "Limits")."""

from __future__ import annotations

import resource
import selectors
import socket
import time
import urllib.request
from collections.abc import Iterator

import grpc
import httpx
import pytest

from cortado._clientcommon import ClientError
from cortado.client import AsyncClient, Client
from cortado.mesh import MAX_STREAMS_PER_CONNECTION
from cortado.v1 import public_pb2, public_pb2_grpc, records_pb2
from tests.faults import final
from tests.helpers import eventually
from tests.meshcalls import submit
from tests.reliability.support import Private, RecordingApi, private_mesh, status_of

pytestmark = pytest.mark.reliability

POLLS = 2000
"""Long polls one client keeps open at once, each on its own connection: twice Envoy's old default budget."""
MAX_WATCH_SECONDS = 2.0


def _allow_open_files(wanted: int) -> None:
    """Raise this process's open-file limit (inherited by the mesh it starts) to at least wanted, or skip."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"needs {wanted} open files; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    _allow_open_files(2 * POLLS + 1024)
    with private_mesh(tmp_path_factory.mktemp("long-polls"), CORTADO_MAX_WATCH_SECONDS=str(MAX_WATCH_SECONDS)) as mesh:
        yield mesh


@pytest.fixture(scope="module")
def api(private: Private) -> RecordingApi:
    return private.deploy()


@pytest.fixture
def held(private: Private, api: RecordingApi) -> Iterator[str]:
    """A request the handler holds (in_progress) until the test ends."""
    request_id = submit(private.http, api.name, json={"n": 0, "hold": 120})
    eventually(lambda: api.starts(request_id), what="the held request running")
    eventually(
        lambda: private.http.get(f"/{api.name}/{request_id}").json()["status"] == "in_progress",
        what="its in_progress state recorded",
    )
    try:
        yield request_id
    finally:
        api.release(request_id)
        final(private.http, api.name, request_id)


def envoy_stat(private: Private, name: str) -> int:
    """One counter or gauge of Envoy's admin /stats (0 when Envoy has not created it yet)."""
    url = f"http://127.0.0.1:{private.mesh.ports['admin']}/stats?filter=^{name}$"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text: str = reply.read().decode()
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    return 0


class LongPolls:
    """One client's long polls: a connection each, `GET /<api>/<id>?wait=60` sent, the answer left unread."""

    def __init__(self, port: int, api: str, request_id: str, count: int) -> None:
        self._selector = selectors.DefaultSelector()
        self.sockets: list[socket.socket] = []
        request = f"GET /{api}/{request_id}?wait=60 HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
        for _ in range(count):
            connection = socket.create_connection(("127.0.0.1", port), timeout=10)
            connection.sendall(request)
            connection.setblocking(False)
            self._selector.register(connection, selectors.EVENT_READ)
            self.sockets.append(connection)

    def answered(self) -> list[bytes]:
        """Every answer that came back so far (each poll should still be waiting)."""
        replies = []
        for key, _ in self._selector.select(timeout=0):
            connection = key.fileobj
            assert isinstance(connection, socket.socket)
            try:
                replies.append(connection.recv(4096))
            except OSError as exc:
                replies.append(repr(exc).encode())
        return replies

    def close(self) -> None:
        for connection in self.sockets:
            self._selector.unregister(connection)
            connection.close()
        self._selector.close()


def test_thousands_of_long_polls_from_one_client_leave_every_other_client_served(
    private: Private, api: RecordingApi, held: str
) -> None:
    polls = LongPolls(private.mesh.ports["http"], api.name, held, POLLS)
    try:
        # Every poll reached the results service (none refused): Envoy holds them all open.
        eventually(
            lambda: envoy_stat(private, "cluster.results.upstream_rq_active") >= POLLS or polls.answered(),
            timeout=60,
            what=f"{POLLS} long polls open",
        )
        assert not polls.answered(), polls.answered()[:3]

        # Meanwhile other clients submit and read, plain and waiting, and are served at once.
        began = time.monotonic()
        with httpx.Client(base_url=private.mesh.http_url, timeout=30) as other:
            for n in range(1, 11):
                request_id = submit(other, api.name, json={"n": n})
                assert status_of(other, api.name, request_id) == "in_queue"
                waited = other.get(f"/{api.name}/{request_id}", params={"wait": 0.2})
                assert waited.status_code == 200, waited.text
        took = time.monotonic() - began
        assert took < 15, f"10 submits and reads took {took:.1f}s beside {POLLS} long polls"
        assert not polls.answered(), polls.answered()[:3]
        assert envoy_stat(private, "cluster.results.upstream_rq_pending_overflow") == 0
        assert envoy_stat(private, "cluster.ingest.upstream_rq_pending_overflow") == 0
    finally:
        polls.close()


def test_one_http2_connection_holds_at_most_the_cap_of_calls_and_the_rest_wait_on_its_side(
    private: Private, api: RecordingApi, held: str
) -> None:
    calls = MAX_STREAMS_PER_CONNECTION + 72
    with grpc.insecure_channel(private.mesh.grpc_address) as channel:
        results = public_pb2_grpc.ResultsStub(channel)
        watches = [results.Watch(public_pb2.WatchRequest(api=api.name, id=held), timeout=30) for _ in range(calls)]
        try:
            # Only as many as the cap are open at once (the others wait in the client), and stay so.
            eventually(lambda: envoy_stat(private, "http.public.downstream_rq_active") > 0, what="watches open")
            time.sleep(0.5)
            open_now = envoy_stat(private, "http.public.downstream_rq_active")
            assert open_now == MAX_STREAMS_PER_CONNECTION, open_now
        finally:
            for watch in watches:
                watch.cancel()


def test_watch_ends_after_its_time_limit_with_deadline_exceeded_and_a_message_saying_what_to_do(
    private: Private, api: RecordingApi, held: str
) -> None:
    with grpc.insecure_channel(private.mesh.grpc_address) as channel:
        results = public_pb2_grpc.ResultsStub(channel)
        began = time.monotonic()
        stream = results.Watch(public_pb2.WatchRequest(api=api.name, id=held), timeout=60)
        states = []
        with pytest.raises(grpc.RpcError) as ended:
            for reply in stream:
                states.append(reply.request.status)
        took = time.monotonic() - began
    assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, ended.value
    assert ended.value.details() == (
        f"Watch streams for at most {MAX_WATCH_SECONDS:g}s and request {held} is still in_progress: "
        "call Watch again to go on following it"
    )
    assert len(states) == 1, states
    assert MAX_WATCH_SECONDS * 0.9 <= took < MAX_WATCH_SECONDS + 5, took


def test_a_watch_that_sees_the_end_within_its_limit_ends_normally(private: Private, api: RecordingApi) -> None:
    request_id = submit(private.http, api.name, json={"n": 1, "sleep": 0.5})
    with grpc.insecure_channel(private.mesh.grpc_address) as channel:
        replies = list(public_pb2_grpc.ResultsStub(channel).Watch(public_pb2.WatchRequest(api=api.name, id=request_id)))
    assert replies[-1].request.status == records_pb2.REQUEST_STATUS_COMPLETED, replies


async def test_the_async_clients_wait_follows_a_request_across_watch_limits(
    private: Private, api: RecordingApi
) -> None:
    request_id = submit(private.http, api.name, json={"n": 2, "sleep": MAX_WATCH_SECONDS * 2.5})
    async with AsyncClient(private.mesh.grpc_address) as client:
        began = time.monotonic()
        final_state = await client.wait(api.name, request_id, timeout=60)
        assert final_state.status == records_pb2.REQUEST_STATUS_COMPLETED
        assert time.monotonic() - began > MAX_WATCH_SECONDS  # it outlived at least one Watch call
        states = [view.status async for view in client.watch(api.name, request_id, timeout=10)]
        assert states == [records_pb2.REQUEST_STATUS_COMPLETED]


def test_the_sync_clients_wait_follows_a_request_across_watch_limits(private: Private, api: RecordingApi) -> None:
    request_id = submit(private.http, api.name, json={"n": 3, "sleep": MAX_WATCH_SECONDS * 2.5})
    with Client(private.mesh.grpc_address) as client:
        began = time.monotonic()
        states = [view.status for view in client.watch(api.name, request_id, timeout=60)]
        assert time.monotonic() - began > MAX_WATCH_SECONDS  # it outlived at least one Watch call
    # Each state once, though several Watch calls each began with the state then current.
    assert states[-1] == records_pb2.REQUEST_STATUS_COMPLETED and len(states) == len(set(states)), states


async def test_the_async_clients_wait_ends_at_its_own_timeout(private: Private, api: RecordingApi, held: str) -> None:
    async with AsyncClient(private.mesh.grpc_address) as client:
        began = time.monotonic()
        with pytest.raises(ClientError) as out_of_time:
            await client.wait(api.name, held, timeout=MAX_WATCH_SECONDS * 1.5)
    assert out_of_time.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - began >= MAX_WATCH_SECONDS * 1.4  # past one Watch call, to its own deadline
