"""Starts and stops the floor: NATS (file storage, monitoring on), ingest, results, one worker, Envoy."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import socket
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
from nats.js.api import AckPolicy, ConsumerConfig, KeyValueConfig, RetentionPolicy, StorageType, StreamConfig

from bench.floor import common
from bench.paths import ROOT
from cortado.mesh import ManagedProcess, find_binary, free_port

API = "noop"
"""The path the floor serves: POST /noop, GET /noop/<id>."""
SERVICES = ("ingest", "results", "worker")


def render_envoy_config(http_port: int, admin_port: int, descriptor: Path, ingest: str, results: str) -> str:
    """Envoy's bootstrap: one listener transcoding HTTP to the Floor service, and the two gRPC clusters.

    POST /<api> goes to ingest; POST /<api>?wait= and GET /<api>/<id> go to results. No Lua, no health
    checks, no retries, no tracing: only what transcoding and routing need.
    """

    def cluster(name: str, address: str) -> str:
        host, port = address.rsplit(":", 1)
        return f"""\
  - name: {name}
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: {host}, port_value: {port}}}}}}}
"""

    post = '{name: ":method", string_match: {exact: POST}}'
    get = '{name: ":method", string_match: {exact: GET}}'
    return f"""\
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin_port}}}}}
static_resources:
  listeners:
  - name: floor
    address: {{socket_address: {{address: 127.0.0.1, port_value: {http_port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: floor
          codec_type: AUTO
          route_config:
            name: floor
            virtual_hosts:
            - name: floor
              domains: ["*"]
              routes:
              - match:
                  safe_regex: {{regex: "/[^/]+/?"}}
                  headers: [{post}]
                  query_parameters: [{{name: wait, present_match: true}}]
                route: {{cluster: results, timeout: 130s}}
              - match: {{safe_regex: {{regex: "/[^/]+/?"}}, headers: [{post}]}}
                route: {{cluster: ingest, timeout: 60s}}
              - match: {{safe_regex: {{regex: "/[^/]+/[^/]+/?"}}, headers: [{get}]}}
                route: {{cluster: results, timeout: 130s}}
          http_filters:
          - name: envoy.filters.http.grpc_json_transcoder
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder
              proto_descriptor: "{descriptor}"
              services: ["{common.SERVICE}"]
              match_incoming_request_route: true
              convert_grpc_status: true
              ignored_query_parameters: ["api", "id"]
              ignore_unknown_query_parameters: true
              print_options:
                preserve_proto_field_names: true
                always_print_primitive_fields: true
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
{cluster("ingest", ingest)}{cluster("results", results)}"""


def nats_config(port: int, monitor_port: int, store: Path) -> str:
    """nats-server: JetStream on file storage (as Cortado's mesh), the HTTP monitoring endpoint on loopback."""
    return (
        f"listen: 127.0.0.1:{port}\n"
        f"http: 127.0.0.1:{monitor_port}\n"
        f"jetstream {{\n  store_dir: {json.dumps(str(store))}\n}}\n"
    )


async def create_queue(nats_url: str) -> None:
    """The work-queue stream, its durable pull consumer, and the results bucket (all on file storage)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(
                name=common.STREAM,
                subjects=[common.SUBJECT_PREFIX + "*"],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
            )
        )
        await js.add_consumer(
            common.STREAM,
            ConsumerConfig(
                durable_name=common.CONSUMER, ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_ack_pending=-1
            ),
        )
        await js.create_key_value(KeyValueConfig(bucket=common.BUCKET, storage=StorageType.FILE))
    finally:
        await nc.close()


def _tcp_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


def _envoy_ready(admin_port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=1) as reply:
        return bool(reply.status == 200)


def _round_trip(http_port: int) -> bool:
    """One POST then GET ?wait= through Envoy; whether the result came back completed."""
    base = f"http://127.0.0.1:{http_port}/{API}"
    post = urllib.request.Request(base, data=b'{"x":1}', headers={"Content-Type": common.JSON}, method="POST")
    with urllib.request.urlopen(post, timeout=5) as reply:
        request_id = json.loads(reply.read())["id"]
    with urllib.request.urlopen(f"{base}/{request_id}?wait=5", timeout=10) as reply:
        return bool(json.loads(reply.read())["status"] == "completed")


class FloorRig:
    """The floor's processes, started in order (NATS, the queue, the services, Envoy) and stopped in reverse."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.ports = {name: free_port() for name in ("http", "admin", "nats", "nats-monitor", "ingest", "results")}
        self.processes: dict[str, ManagedProcess] = {}

    @property
    def http_url(self) -> str:
        """Base URL of the floor's HTTP API."""
        return f"http://127.0.0.1:{self.ports['http']}"

    @property
    def nats_url(self) -> str:
        """URL of its NATS server."""
        return f"nats://127.0.0.1:{self.ports['nats']}"

    @property
    def varz_url(self) -> str:
        """NATS's monitoring endpoint with the server's message counters."""
        return f"http://127.0.0.1:{self.ports['nats-monitor']}/varz"

    def pids(self) -> dict[str, int]:
        """The PID of each process, by name."""
        return {name: proc.pid for name, proc in self.processes.items() if proc.popen is not None}

    def start(self) -> FloorRig:
        """Start everything; RuntimeError naming the part that did not start (with its log's tail)."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        generated = self.workdir / "generated"
        descriptor = common.generate(generated)
        config = self.workdir / "nats.conf"
        config.write_text(nats_config(self.ports["nats"], self.ports["nats-monitor"], self.workdir / "jetstream"))
        nats_server = self._spawn("nats", [find_binary("nats-server"), "-c", str(config)])
        self._wait(nats_server, lambda: _tcp_open(self.ports["nats"]), 20)
        asyncio.run(create_queue(self.nats_url))
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT),
            common.ENV_NATS: self.nats_url,
            common.ENV_GENERATED: str(generated),
        }
        for name in SERVICES:
            address = {common.ENV_ADDRESS: f"127.0.0.1:{self.ports[name]}"} if name in self.ports else {}
            self._spawn(name, [sys.executable, "-m", f"bench.floor.{name}"], {**env, **address})
        for name in ("ingest", "results"):
            self._wait(self.processes[name], functools.partial(_tcp_open, self.ports[name]), 30)
        envoy_yaml = self.workdir / "envoy.yaml"
        envoy_yaml.write_text(
            render_envoy_config(
                self.ports["http"],
                self.ports["admin"],
                descriptor,
                f"127.0.0.1:{self.ports['ingest']}",
                f"127.0.0.1:{self.ports['results']}",
            )
        )
        argv = [find_binary("envoy"), "-c", str(envoy_yaml), "--concurrency", "1", "--use-dynamic-base-id"]
        envoy = self._spawn("envoy", [*argv, "-l", "warning"])
        self._wait(envoy, lambda: _envoy_ready(self.ports["admin"]), 30)
        # Ready once a request makes it all the way through (the worker has no port to probe).
        self._wait(self.processes["worker"], lambda: _round_trip(self.ports["http"]), 30)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> ManagedProcess:
        proc = ManagedProcess(name, argv, env or dict(os.environ), self.workdir / "logs" / f"{name}.log", ROOT)
        self.processes[name] = proc
        proc.start()
        return proc

    def _wait(self, proc: ManagedProcess, check: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            dead = [p for p in self.processes.values() if not p.alive()]
            if dead:
                raise RuntimeError(f"floor: {dead[0].name} exited at start; its log ends:\n{dead[0].log_tail()}")
            try:
                if check():
                    return
            except Exception as exc:
                last = exc
            time.sleep(0.05)
        raise RuntimeError(f"floor: {proc.name} not ready after {timeout:.0f}s ({last!r}); log:\n{proc.log_tail()}")

    def stop(self) -> None:
        """Stop Envoy, then the services, then NATS."""
        order = ["envoy", *SERVICES, "nats"]
        for name in order:
            if name in self.processes and name != "nats":
                self.processes[name].signal(signal.SIGTERM)
        for name in order:
            if name in self.processes:
                self.processes[name].stop(timeout=10.0)

    def __enter__(self) -> FloorRig:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def started_floor() -> Iterator[FloorRig]:
    """A running floor in a temporary folder, stopped however the block ends."""
    with tempfile.TemporaryDirectory(prefix="floor-bench-") as tmp, FloorRig(Path(tmp)) as rig:
        yield rig
