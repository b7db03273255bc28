"""Several machines (docs/production.md, "What to replicate"), proven on one machine with real processes and real
signals.

One mesh serves the whole module: a 3-server NATS JetStream cluster on loopback with every stream and bucket
replicated three times, two executors standing in for two nodes, two instances each of ingest and results behind Envoy,
and two schedulers sharing a lease in NATS. Clients POST through Envoy in loops and retry what they are refused
(503, 429, connection errors), as the contract says; every request answered 200 must complete with its own result.

One module: its tests share one module-scoped cluster (three NATS servers, two of each service), slow to start.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path

import httpx
import nats
import pytest

from cortado import _names, _natsauth
from cortado.client import SchedulerClient
from cortado.mesh import LocalMesh
from cortado.v1 import records_pb2
from tests.cluster.support import (
    Leadership,
    LoggingApi,
    connected_ports,
    deploy_logging_api,
    log_records,
    parent_pid,
    sigkill,
    sigkill_node,
    to_ms,
    wait_ready_replicas,
)
from tests.faults import ClientLoop, assert_all_completed, final, kill_handler_processes
from tests.helpers import eventually
from tests.meshcalls import MESH_ENV

pytestmark = pytest.mark.reliability

LEASE_SECONDS = 3
ACK_WAIT_SECONDS = 5
MAX_CONCURRENCY = 2
REPLICAS = 2
IN_FLIGHT_AT_MOST = MAX_CONCURRENCY * REPLICAS * 2
"""Requests the executors hold at once: max_concurrency x replicas x 2 (each handler slot's prefetch)."""


@dataclass
class Cluster:
    """The module's mesh, its clients, and what the tests deployed."""

    mesh: LocalMesh
    http: httpx.Client
    root: Path
    apis: list[LoggingApi] = field(default_factory=list)
    leadership: Leadership = field(init=False)
    """Who led when, over the whole module (it knows which scheduler processes the tests killed)."""

    def __post_init__(self) -> None:
        self.leadership = Leadership(self.mesh)

    def scheduler(self) -> SchedulerClient:
        """A control-plane client of a scheduler instance that runs (any of them may deploy)."""
        name = next(n for n in self.mesh.instances("scheduler") if self.mesh.processes[n].alive())
        return SchedulerClient(self.mesh.address(name))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    env = {
        **MESH_ENV,
        "CORTADO_NATS_REPLICAS": "3",
        "CORTADO_LEASE_SECONDS": str(LEASE_SECONDS),
        "CORTADO_ACK_WAIT_SECONDS": str(ACK_WAIT_SECONDS),
    }
    replicas = {"ingest": 2, "results": 2, "scheduler": 2}
    created: list[LoggingApi] = []
    try:
        with (
            LocalMesh(root / "mesh", env=env, nats_cluster=3, executors=2, replicas=replicas) as mesh,
            httpx.Client(base_url=mesh.http_url, timeout=60) as http,
        ):
            yield Cluster(mesh, http, root, created)
    finally:
        kill_handler_processes(created)


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> LoggingApi:
    """An API with two replicas, one on each executor, each running two requests at once."""
    spec = {
        "handler": {"max_concurrency": MAX_CONCURRENCY},
        "autoscaling": {"min_replicas": REPLICAS, "init_replicas": REPLICAS, "max_replicas": REPLICAS},
    }
    with cluster.scheduler() as scheduler:
        deployed = deploy_logging_api(scheduler, cluster.root, spec)
        cluster.apis.append(deployed)
        wait_ready_replicas(scheduler, deployed.name, REPLICAS)
    return deployed


@dataclass(frozen=True)
class Placement:
    """Where JetStream keeps a stream (or a consumer): its replication factor, leader and peers."""

    replicas: int
    leader: str
    peers: dict[str, bool]
    """Peer name -> whether it is current and online."""

    def whole(self, servers: set[str]) -> bool:
        return {self.leader, *self.peers} == servers and all(self.peers.values())


def live_nats(mesh: LocalMesh) -> list[str]:
    """URLs of the NATS servers that run, with the operator's credentials."""
    admin = mesh.credentials[_natsauth.ADMIN]
    return [
        f"nats://{admin.user}:{admin.password}@127.0.0.1:{mesh.ports[n]}"
        for n in mesh.nats_names
        if mesh.processes[n].alive()
    ]


def replication(mesh: LocalMesh, streams: list[str], consumer: tuple[str, str] | None = None) -> dict[str, Placement]:
    """stream (or "stream/consumer") -> its Placement, as JetStream reports it."""

    async def query() -> dict[str, Placement]:
        nc = await nats.connect(live_nats(mesh), connect_timeout=2, max_reconnect_attempts=2)
        try:
            js = nc.jetstream(timeout=5)
            out: dict[str, Placement] = {}
            for stream in streams:
                info = await js.stream_info(stream)
                assert info.cluster is not None, f"{stream} has no cluster information: {info}"
                peers = {p.name or "": bool(p.current and not p.offline) for p in info.cluster.replicas or []}
                out[stream] = Placement(info.config.num_replicas or 1, info.cluster.leader or "", peers)
            if consumer is not None:
                cinfo = await js.consumer_info(*consumer)
                assert cinfo.cluster is not None, f"consumer {consumer} has no cluster information: {cinfo}"
                peers = {p.name or "": bool(p.current and not p.offline) for p in cinfo.cluster.replicas or []}
                out["/".join(consumer)] = Placement(len(peers) + 1, cinfo.cluster.leader or "", peers)
            return out
        finally:
            await nc.close()

    return asyncio.run(query())


def test_work_and_state_are_replicated_three_times_and_survive_a_nats_server_and_an_executor_killed_under_load(
    cluster: Cluster, api: LoggingApi
) -> None:
    mesh, http = cluster.mesh, cluster.http
    work = _names.work_stream(api.name)
    kv = [f"KV_{_names.REQUESTS_BUCKET}", f"KV_{_names.APIS_BUCKET}"]

    # Every stream the API needs lives on three servers: a leader and two peers.
    servers = set(mesh.nats_names)
    placements = replication(mesh, [work, *kv], consumer=(work, _names.work_consumer(records_pb2.PRIORITY_NORMAL)))
    for stream, placement in placements.items():
        assert placement.replicas == 3, f"{stream}: {placement}"
        assert len(placement.peers) == 2, f"{stream}: {placement}"
        assert placement.whole(servers), f"{stream}: {placement}"

    # Both executors (two nodes) host a replica of the API.
    executors = {mesh.processes[n].pid: n for n in mesh.instances("executor")}
    hosts = {executors.get(parent_pid(pid) or 0) for pid in api.handler_pids()}
    assert hosts >= {"executor", "executor1"}, f"handler processes run under {hosts}"

    began = datetime.now()
    try:
        with ClientLoop(mesh.http_url, api.name, threads=4) as clients:
            clients.reach(100)
            # One NATS server dies, and one node: its executor and the handler processes it runs.
            sigkill(mesh.processes["nats2"])
            node = sigkill_node(mesh.processes["executor1"])
            killed_at = time.time()
            at_kill = clients.count()
            clients.reach(at_kill + 200, timeout=90)
        # None lost: every request answered 200 completes with its own result, read while both are still down.
        assert_all_completed(http, api.name, clients.accepted)
    finally:
        # The rest of the module runs on a whole mesh again, whatever happened here.
        restart_dead(mesh)
    accepted = clients.accepted
    print(
        f"{len(accepted)} accepted ({at_kill} before the kills); "
        f"{len(clients.failures)} attempts retried: {sorted({f.what[:60] for f in clients.failures})}"
    )
    assert not clients.unexpected, f"answers other than 200, 429 and 503: {clients.unexpected[:5]}"

    runs = api.starts()
    never = [request_id for request_id in accepted if request_id not in runs]
    assert not never, f"{len(never)} accepted requests completed without a handler run: {never[:5]}"
    assert len(runs.keys() & accepted.keys()) == len(accepted)

    # None twice, except requests whose run the kills interrupted: at most what the executors held then.
    twice = {request_id: r for request_id, r in runs.items() if request_id in accepted and len(r) > 1}
    print(f"ran more than once: {len(twice)}; on the killed node {sum(r[0].pid in node for r in twice.values())}")
    assert len(twice) <= IN_FLIGHT_AT_MOST, f"{len(twice)} requests ran more than once: {twice}"
    late = {request_id: r for request_id, r in twice.items() if r[0].at > killed_at}
    assert not late, f"requests whose first run began after the kills ran again: {late}"

    # The killed server came back, caught up, and the cluster is whole again.
    def whole() -> bool:
        return all(p.whole(servers) for p in replication(mesh, [work, *kv]).values())

    eventually(whole, timeout=30, interval=0.5, what="every replica current again after nats2 restarted")
    after = {final(http, api.name, request_id)["result"]["n"] for request_id in list(accepted)[:20]}
    assert after == {accepted[request_id] for request_id in list(accepted)[:20]}

    # The schedulers' lease rode out the lost server: never two leaders at once.
    leadership = cluster.leadership
    eventually(lambda: len(leadership.leaders()) == 1, timeout=15, what="one scheduler leads")
    overlaps = leadership.overlaps(since=began)
    assert not overlaps, f"two schedulers led at once around the killed NATS server: {overlaps}"


def restart_dead(mesh: LocalMesh) -> None:
    """Start again whatever part of the mesh a test killed."""
    for name in mesh.nats_names:
        if not mesh.processes[name].alive():
            mesh.start_nats(name)
    for name in [n for kind in ("scheduler", "ingest", "results", "executor") for n in mesh.instances(kind)]:
        if not mesh.processes[name].alive():
            mesh.start_service(name)


NOTICED_WITHIN = 2.0
"""Seconds Envoy may take to stop routing to a dead instance (its health checks run every half second)."""


@pytest.mark.parametrize("service", ["ingest", "results"])
def test_a_replicated_service_killed_under_load_leaves_its_twin_serving_every_request(
    cluster: Cluster, api: LoggingApi, service: str
) -> None:
    mesh, http = cluster.mesh, cluster.http
    twin = f"{service}2"
    call = "post" if service == "ingest" else "get"
    assert mesh.processes[twin].alive()
    try:
        with ClientLoop(mesh.http_url, api.name, threads=4, fetch=True) as clients:
            clients.reach(40)
            dead_at = sigkill(mesh.processes[service])
            mark = clients.count()
            # Without restarting it: the twin carries the load alone, well past the time Envoy needs to notice.
            clients.reach(mark + 40, timeout=60)
            eventually(
                lambda: clients.succeeded(call, after=dead_at + NOTICED_WITHIN) >= 40,
                timeout=60,
                what=f"40 {call}s answered once Envoy noticed {service} was gone",
            )
        # Every request read back through the twin alone, too.
        assert not mesh.processes[service].alive()
        assert_all_completed(http, api.name, clients.accepted)
    finally:
        restart_dead(mesh)
    accepted = clients.accepted
    soon = clients.failed(call, after=dead_at)
    late = clients.failed(call, after=dead_at + NOTICED_WITHIN)
    print(
        f"{service} killed: {len(accepted)} accepted ({mark} before), {len(clients.failures)} attempts retried; "
        f"{call}s refused after it died: {len(soon)} within {NOTICED_WITHIN}s, {len(late)} later"
    )
    assert not clients.unexpected, f"answers other than 200, 429 and 503: {clients.unexpected[:5]}"
    for request_id, body in clients.fetched.items():
        assert body["status"] == "completed" and body["result"] == {"n": accepted[request_id]}, body
    runs = api.starts()
    twice = {request_id: r for request_id, r in runs.items() if request_id in accepted and len(r) > 1}
    assert not twice, f"ran more than once although no handler process died: {twice}"

    # A request in flight to the killed instance may fail (the client retries); once Envoy noticed, none may.
    assert not late, (
        f"{len(late)} {call}s begun more than {NOTICED_WITHIN}s after {service} died were refused, e.g. {late[:3]}: "
        f"Envoy keeps sending requests to the dead instance although {twin} serves"
    )


def one_leader(leadership: Leadership) -> str:
    """The one scheduler instance that leads, once exactly one does."""
    leaders = eventually(leadership.leaders, timeout=15, what="a scheduler leads")
    assert len(leaders) == 1, f"{leaders} lead at once: {leadership.events()}"
    return leaders[0]


def test_schedulers_run_active_standby_and_the_standby_takes_over_when_the_holder_is_killed(
    cluster: Cluster,
) -> None:
    mesh, leadership = cluster.mesh, cluster.leadership
    began = datetime.now()

    # Exactly one scheduler leads; the other stands by (and logs nothing about the lease).
    holder = one_leader(leadership)
    (standby,) = [n for n in mesh.instances("scheduler") if n != holder]
    assert mesh.processes[standby].alive()

    # Kill the holder: the standby takes over once the lease expires, never before the holder died.
    old = mesh.processes[holder]
    old_pid = old.pid
    sigkill(old)
    died = datetime.now()
    leadership.deaths[old_pid] = died
    started = time.monotonic()
    eventually(lambda: leadership.leaders() == [standby], timeout=15, interval=0.1, what=f"{standby} leads")
    print(f"{standby} took over {time.monotonic() - started:.1f}s after {holder} was killed")
    takeover = [e for e in leadership.events() if e.instance == standby and e.message == "leading"][-1]
    assert takeover.holder == standby
    assert takeover.at >= to_ms(died), (takeover, died)

    # The killed one comes back as the standby.
    mesh.start_service(holder)
    restarted = mesh.processes[holder].pid

    # Deploying through the new leader works: the API is placed and serves requests.
    with SchedulerClient(mesh.address(standby)) as scheduler:
        deployed = deploy_logging_api(scheduler, cluster.root, sleep=0)
        cluster.apis.append(deployed)
        wait_ready_replicas(scheduler, deployed.name, 1)
    ids = {}
    for n in range(5):
        reply = cluster.http.post(f"/{deployed.name}", json={"n": n})
        assert reply.status_code == 200, reply.text
        ids[reply.json()["id"]] = n
    assert_all_completed(cluster.http, deployed.name, ids)

    # Only the leader placed it; the restarted scheduler stood by all along.
    def placed_by(name: str, pid: int) -> list[object]:
        records = log_records(mesh.processes[name], pid, "placements changed")
        return [r for r in records if any(str(x).startswith(f"{deployed.name}#") for x in r.get("replicas", []))]

    assert placed_by(standby, mesh.processes[standby].pid), f"{standby} did not log placing {deployed.name}"
    assert not placed_by(holder, restarted), f"the standby {holder} placed {deployed.name}"
    assert leadership.leaders() == [standby], leadership.events()

    # Never two leaders at once: the standby's term began after the holder's ended with its death.
    overlaps = leadership.overlaps(since=began)
    assert not overlaps, f"two schedulers led at once: {overlaps}"


def nats_server_of(mesh: LocalMesh, name: str) -> str:
    """The NATS server a service instance is connected to."""
    ports = connected_ports(mesh.processes[name].pid)
    (server,) = [n for n in mesh.nats_names if mesh.ports[n] in ports]
    return server


def lease_stream_leader(mesh: LocalMesh, step_down: bool = False) -> str:
    """The NATS server leading the lease bucket's stream; with step_down, it hands leadership to a peer first."""

    async def query() -> str:
        nc = await nats.connect(live_nats(mesh), connect_timeout=2, max_reconnect_attempts=2)
        try:
            stream = f"KV_{_names.LEASES_BUCKET}"
            if step_down:
                await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"", timeout=5)
            info = await nc.jetstream(timeout=5).stream_info(stream)
            return info.cluster.leader or "" if info.cluster is not None else ""
        finally:
            await nc.close()

    return asyncio.run(query())


def moved_off(mesh: LocalMesh, server: str) -> bool:
    """Whether the lease stream has a leader other than server."""
    return lease_stream_leader(mesh) not in ("", server)


def test_a_lease_holder_whose_nats_server_hangs_steps_down_before_the_standby_takes_over(cluster: Cluster) -> None:
    # The holder's NATS server stops answering (SIGSTOP: a hung machine, a partition) while the rest of the cluster,
    # the lease's stream leader and the standby's server included, carries on: the holder's renewals get no answer,
    # the lease expires in NATS and the standby takes it. The holder must have stood by before then, or both lead.
    mesh, leadership = cluster.mesh, cluster.leadership
    for _ in range(10):
        holder = one_leader(leadership)
        server = nats_server_of(mesh, holder)
        leader = eventually(lambda: lease_stream_leader(mesh), timeout=15, what="the lease stream has a leader")
        if leader != server:
            break
        lease_stream_leader(mesh, step_down=True)
        eventually(partial(moved_off, mesh, server), timeout=15, what="a new lease stream leader")
    assert leader != server, f"the lease stream stays led by {server}, the holder's server"
    (standby,) = [n for n in mesh.instances("scheduler") if n != holder]
    for _ in range(10):
        if nats_server_of(mesh, standby) != server:
            break
        mesh.processes[standby].stop()  # reconnect the standby elsewhere (it picks a server at random)
        mesh.start_service(standby)
    assert nats_server_of(mesh, standby) != server
    frozen = mesh.processes[server]
    began = datetime.now()
    frozen.signal(signal.SIGSTOP)
    try:
        eventually(lambda: leadership.leaders() == [standby], timeout=30, interval=0.1, what=f"{standby} leads")
        mine = [e for e in leadership.events() if e.instance == holder and e.at >= to_ms(began)]
        stood_by = [e.at.time() for e in mine if e.message == "standing by"]
        print(f"froze {server} ({holder}'s server); {standby} leads; {holder} stood by: {stood_by}")
        overlaps = leadership.overlaps(since=began)
        assert not overlaps, f"two schedulers led at once while {server} hung: {overlaps}"
    finally:
        frozen.signal(signal.SIGCONT)
