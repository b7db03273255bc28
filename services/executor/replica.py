"""One replica: a handler process the executor prepares, starts, watches and restarts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
from pathlib import Path

from nats.aio.client import Client
from nats.js.object_store import ObjectStore
from prometheus_client.multiprocess import mark_process_dead

from cortado.gpu import cuda_visible_devices
from cortado.project import ProjectError, parse_dotenv, unpack_bundle
from cortado.v1 import control_pb2
from services.executor.environment import DependencyError, prepare_python
from services.executor.exitcodes import EXIT_TIMED_OUT
from services.executor.logship import READER_LIMIT, LogShipper, wrap_line

log = logging.getLogger(__name__)

INIT_RETRY_SECONDS = (30.0, 60.0, 120.0, 300.0)
"""Waits before starting again a replica whose `__init__` raised: never a tight loop."""

CRASH_RETRY_SECONDS = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0)
"""Waits before restarting a handler process that died while serving."""

STABLE_AFTER_SECONDS = 60.0
"""A process that served this long resets the crash backoff."""


async def prepare_project(workdir: Path, spec: control_pb2.ApiSpec, bundles: ObjectStore) -> Path:
    """The API version's project folder, fetched from the Object Store and unpacked once per machine."""
    target = workdir / "projects" / spec.name / f"v{spec.version}"
    marker = target.parent / f"v{spec.version}.ready"
    if marker.exists():
        return target
    if target.exists():
        shutil.rmtree(target)
    result = await bundles.get(spec.bundle_object)
    data = result.data or b""
    await asyncio.to_thread(unpack_bundle, data, target)
    marker.touch()
    return target


class Replica:
    """Runs one replica of an API until stopped, restarting its process when it dies."""

    def __init__(
        self,
        placement: control_pb2.ReplicaPlacement,
        spec: control_pb2.ApiSpec,
        workdir: Path,
        bundles: ObjectStore,
        base_env: dict[str, str],
        on_change: asyncio.Event,
        logs: LogShipper,
        nc: Client,
    ) -> None:
        self.placement = placement
        self.spec = spec
        self._workdir = workdir
        self._bundles = bundles
        self._base_env = base_env
        self._on_change = on_change
        self._logs = logs
        self._nc = nc
        self._shipping: set[asyncio.Task[None]] = set()
        self.completed = 0
        self.failed = 0
        self.state: control_pb2.ReplicaState.ValueType = control_pb2.REPLICA_STATE_STARTING
        self.message = ""
        self._process: asyncio.subprocess.Process | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @property
    def key(self) -> tuple[str, int]:
        """(api, replica number): what identifies it in placements."""
        return self.placement.api, self.placement.replica

    @property
    def pid(self) -> int | None:
        """PID of the running handler process, if any."""
        return self._process.pid if self._process and self._process.returncode is None else None

    def status(self) -> control_pb2.ReplicaStatus:
        """Its current state for the heartbeat."""
        return control_pb2.ReplicaStatus(
            api=self.spec.name,
            version=self.spec.version,
            state=self.state,
            message=self.message,
            gpu_indices=self.placement.gpu_indices,
            replica=self.placement.replica,
            completed=self.completed,
            failed=self.failed,
        )

    def start(self) -> None:
        """Begin running in the background."""
        self._task = asyncio.create_task(self._run(), name=f"replica-{self.spec.name}-{self.placement.replica}")

    def _set(self, state: control_pb2.ReplicaState.ValueType, message: str = "") -> None:
        if (state, message) != (self.state, self.message):
            self.state = state
            self.message = message
            self._on_change.set()

    async def stop(self, grace: float) -> None:
        """Ask the process to drain (SIGTERM), kill it after grace seconds, and stop restarting it."""
        self._stopping = True
        self._set(control_pb2.REPLICA_STATE_DRAINING)
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        init_failures = 0
        crashes = 0
        while not self._stopping:
            try:
                project = await prepare_project(self._workdir, self.spec, self._bundles)
                env = self._environment(project)
                python = await prepare_python(
                    project,
                    self.spec.dependencies_shell or "dependencies.sh",
                    self.spec.dependencies_pip or "requirements.txt",
                    self._workdir / "cache",
                    self._progress,
                )
            except (DependencyError, ProjectError) as exc:
                message = str(exc)
            except Exception as exc:
                log.exception("replica cannot start", extra={"api": self.spec.name})
                message = f"the replica cannot start: {exc!r}"
            else:
                message = ""
            if message:
                wait = INIT_RETRY_SECONDS[min(init_failures, len(INIT_RETRY_SECONDS) - 1)]
                self._set(control_pb2.REPLICA_STATE_FAILED, message)
                log.error(
                    "replica cannot start", extra={"api": self.spec.name, "retry_in_seconds": wait, "why": message}
                )
                init_failures += 1
                await asyncio.sleep(wait)
                continue
            outcome, detail, served = await self._run_process(project, env, python)
            if self._stopping:
                return
            if outcome == "failed":
                self._set(control_pb2.REPLICA_STATE_FAILED, detail)
                wait = INIT_RETRY_SECONDS[min(init_failures, len(INIT_RETRY_SECONDS) - 1)]
                log.error(
                    "handler failed to start",
                    extra={"api": self.spec.name, "retry_in_seconds": wait, "traceback": detail},
                )
                init_failures += 1
                await asyncio.sleep(wait)
                continue
            init_failures = 0
            if outcome == "timed_out":
                log.warning("restarting the handler process", extra={"api": self.spec.name, "detail": detail})
                continue
            crashes = 0 if served >= STABLE_AFTER_SECONDS else crashes + 1
            wait = CRASH_RETRY_SECONDS[min(crashes, len(CRASH_RETRY_SECONDS) - 1)]
            log.warning(
                "handler process exited; restarting",
                extra={"api": self.spec.name, "detail": detail, "restart_in_seconds": wait},
            )
            self._set(control_pb2.REPLICA_STATE_STARTING, detail)
            await asyncio.sleep(wait)

    def _environment(self, project: Path) -> dict[str, str]:
        env = dict(self._base_env)
        dotenv = project / ".env"
        if dotenv.is_file():
            env.update(parse_dotenv(dotenv.read_text(encoding="utf-8")))
        env.update(self.spec.env)
        env["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices(list(self.placement.gpu_indices))
        env["CORTADO_WORKER_REPLICA"] = str(self.placement.replica)
        return env

    def _progress(self, line: str) -> None:
        """A line of dependencies.sh or pip output: into the API's logs, and the latest one into its status."""
        self._set(control_pb2.REPLICA_STATE_STARTING, f"installing dependencies: {line[:200]}")
        record = wrap_line(line.encode(), "INFO", os.getpid(), {"api": self.spec.name, "step": "dependencies"})
        task = asyncio.get_running_loop().create_task(self._logs.ship(self.spec.name, record))
        self._shipping.add(task)
        task.add_done_callback(self._shipping.discard)

    async def _run_process(self, project: Path, env: dict[str, str], python: str) -> tuple[str, str, float]:
        """Run the handler process once.

        Returns ("failed", traceback, 0) when `__init__` raised, else ("exited", why, seconds it served).
        """
        spec_file = project.parent / f"v{self.spec.version}.spec"
        spec_file.write_bytes(self.spec.SerializeToString())
        read_fd, write_fd = os.pipe()
        env = {
            **env,
            "CORTADO_WORKER_SPEC_FILE": str(spec_file),
            "CORTADO_WORKER_STATUS_FD": str(write_fd),
            "CORTADO_WORKER_PARENT_PID": str(os.getpid()),
        }
        loop = asyncio.get_running_loop()
        try:
            # -P: the project folder must not shadow Cortado's own modules; the worker adds it to sys.path itself.
            self._process = await asyncio.create_subprocess_exec(
                python,
                "-P",
                "-m",
                "services.executor.worker",
                cwd=project,
                env=env,
                pass_fds=(write_fd,),
                start_new_session=True,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                limit=READER_LIMIT,
            )
        finally:
            os.close(write_fd)
        labels = {"api": self.spec.name, "replica": str(self.placement.replica)}
        assert self._process.stdout is not None and self._process.stderr is not None
        pumps = [
            asyncio.create_task(
                self._logs.pump(self.spec.name, self._process.stdout, "INFO", self._process.pid, labels)
            ),
            asyncio.create_task(
                self._logs.pump(self.spec.name, self._process.stderr, "ERROR", self._process.pid, labels)
            ),
        ]
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
        )
        started = loop.time()
        ready_at: float | None = None
        failure = ""
        held: set[str] = set()
        try:
            while line := await reader.readline():
                if line[:1] == b"+":
                    held.add(line[1:].rstrip(b"\n").decode())
                    continue
                if line[:1] == b"-":
                    held.discard(line[1:].rstrip(b"\n").decode())
                    continue
                if line[:1] == b"=":
                    if line[1:2] == b"c":
                        self.completed += 1
                    else:
                        self.failed += 1
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                state = event.get("state")
                if state == "ready":
                    ready_at = loop.time()
                    self._set(control_pb2.REPLICA_STATE_READY)
                elif state == "failed":
                    failure = str(event.get("message", ""))
        finally:
            transport.close()
        code = await self._process.wait()
        await asyncio.gather(*pumps, return_exceptions=True)
        metrics_dir = env.get("PROMETHEUS_MULTIPROC_DIR")
        if metrics_dir:
            # Its live gauges go; its counters and histograms stay in the sums.
            mark_process_dead(self._process.pid, metrics_dir)  # type: ignore[no-untyped-call]
        if held:
            # The process died holding these requests: hand them back now rather than after ack_wait.
            log.warning(
                "handing back requests of a dead handler process", extra={"api": self.spec.name, "count": len(held)}
            )
            for reply in held:
                with contextlib.suppress(Exception):
                    await self._nc.publish(reply, b"-NAK")
            with contextlib.suppress(Exception):
                await self._nc.flush(timeout=5)
        if code == EXIT_TIMED_OUT:
            return "timed_out", "a plain handler timed out and its process was restarted", 0.0
        if failure:
            return "failed", failure, 0.0
        served = loop.time() - (ready_at or started)
        reason = f"exit code {code}" if code >= 0 else f"killed by {signal.Signals(-code).name}"
        return "exited", f"the handler process stopped ({reason})", served
