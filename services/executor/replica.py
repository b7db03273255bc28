"""One replica: a handler process the executor prepares, starts, watches and restarts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

from nats.js import JetStreamContext
from nats.js.object_store import ObjectStore
from prometheus_client.multiprocess import mark_process_dead

from cortado import _chaining
from cortado._gpu import cuda_visible_devices
from cortado.project import ProjectError, parse_dotenv, unpack_bundle
from cortado.records import RecordStore
from cortado.v1 import control_pb2, handler_pb2, records_pb2
from services.executor.cancels import CANCEL_GRACE_SECONDS, RecentIds
from services.executor.channel import ChannelClosedError, open_channel, read_frame
from services.executor.contract import (
    EXIT_STOPPED,
    ProcessEnd,
    format_replica_environment,
    format_start_environment,
    handler_process_argv,
    most_jobs,
    parse_exit,
)
from services.executor.dispatch import Dispatcher
from services.executor.environment import DependencyError, prepare_python
from services.executor.logship import READER_LIMIT, LogShipper, wrap_line
from services.executor.sandbox import Sandbox, become, open_to_traverse

log = logging.getLogger(__name__)

INIT_RETRY_SECONDS = (30.0, 60.0, 120.0, 300.0)
"""Waits before starting again a replica whose `__init__` raised: never a tight loop."""

CRASH_RETRY_SECONDS = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0)
"""Waits before restarting a handler process that died while serving."""

STABLE_AFTER_SECONDS = 60.0
"""A process that served this long resets the crash backoff."""


@dataclass(frozen=True)
class ReplicaContext:
    """What every replica of an executor shares."""

    workdir: Path
    bundles: ObjectStore
    base_env: dict[str, str]
    """The environment every handler process starts from (allow-listed, nothing of Cortado's)."""
    logs: LogShipper
    js: JetStreamContext
    store: RecordStore
    sandbox: Sandbox
    metrics_dir: Path
    ack_wait_seconds: float
    grace_seconds: float
    max_deliveries: int
    cancel_grace_seconds: float = CANCEL_GRACE_SECONDS
    """How long a cancelled request's handler has to stop before its process is restarted."""
    chain_secret: bytes | None = None
    """The mesh's chaining secret: the handler's proxy address carries its API's chaining token (cortado._chaining)."""


async def prepare_project(
    workdir: Path, spec: control_pb2.ApiSpec, bundles: ObjectStore, sandbox: Sandbox | None = None
) -> Path:
    """The API version's project folder, fetched from the Object Store and unpacked once per machine.

    With a sandbox, `projects/<api>` belongs to the API's user alone.
    """
    projects = workdir / "projects"
    target = projects / spec.name / f"v{spec.version}"
    marker = target.parent / f"v{spec.version}.ready"
    if marker.exists():
        return target
    if target.exists():
        shutil.rmtree(target)
    result = await bundles.get(spec.bundle_object)
    data = result.data or b""
    await asyncio.to_thread(unpack_bundle, data, target)
    if sandbox is not None and sandbox.enabled:
        open_to_traverse(workdir)
        open_to_traverse(projects)
        await asyncio.to_thread(sandbox.give, target.parent, sandbox.user_for(spec.name))
    marker.touch()
    return target


class Replica:
    """Runs one replica of an API until stopped, restarting its process when it dies."""

    def __init__(
        self,
        placement: control_pb2.ReplicaPlacement,
        spec: control_pb2.ApiSpec,
        context: ReplicaContext,
        on_change: asyncio.Event,
    ) -> None:
        self.placement = placement
        self.spec = spec
        self._context = context
        self._on_change = on_change
        self._user = context.sandbox.user_for(spec.name)
        self._shipping: set[asyncio.Task[None]] = set()
        self.completed = 0
        self.failed = 0
        self.latency_seconds_sum = 0.0
        self.state: control_pb2.ReplicaState.ValueType = control_pb2.REPLICA_STATE_STARTING
        self.message = ""
        self._process: asyncio.subprocess.Process | None = None
        self._dispatcher: Dispatcher | None = None
        self._recent_cancels = RecentIds()
        """Ids announced cancelled lately, kept across the replica's process restarts."""
        self._stuck = False
        """The running process was stopped because a cancelled request's handler did not stop in time."""
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
            latency_seconds_sum=self.latency_seconds_sum,
        )

    async def start(self) -> None:
        """Begin running in the background (the handler process starts, and restarts, there)."""
        self._task = asyncio.create_task(self._run(), name=f"replica-{self.spec.name}-{self.placement.replica}")

    def _set(self, state: control_pb2.ReplicaState.ValueType, message: str = "") -> None:
        if (state, message) != (self.state, self.message):
            self.state = state
            self.message = message
            self._on_change.set()

    async def stop(self) -> None:
        """Drain: stop pulling, let the process finish what it runs (SIGTERM; killed after the grace), record it."""
        grace = self._context.grace_seconds
        self._stopping = True
        self._set(control_pb2.REPLICA_STATE_DRAINING)
        if self._dispatcher is not None:
            self._dispatcher.stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
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
            # The process is gone: its last outcomes are being written, within what is left of the grace period
            # (at least a moment: writes already under way take milliseconds).
            left = max(1.0, deadline - loop.time()) if process is not None else 0
            done, _ = await asyncio.wait([self._task], timeout=left)
            if not done:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        init_failures = 0
        crashes = 0
        while not self._stopping:
            try:
                project = await prepare_project(
                    self._context.workdir, self.spec, self._context.bundles, self._context.sandbox
                )
                env = self._environment(project)
                python = await prepare_python(
                    project,
                    self.spec.dependencies_shell or "dependencies.sh",
                    self.spec.dependencies_pip or "requirements.txt",
                    self._context.workdir / "cache",
                    self._progress,
                    user=self._user,
                    environment=env,
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
        """The handler process's environment: the allow-listed base, its own folders, `.env`, `handler.env`."""
        env = dict(self._context.base_env)
        home = project.parent / "home"
        metrics = self._context.metrics_dir / self.spec.name
        for folder in (home, metrics):
            if not folder.is_dir():
                folder.mkdir(parents=True)
                Sandbox.give(folder, self._user)
        env["HOME"] = str(home)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
        dotenv = project / ".env"
        if dotenv.is_file():
            env.update(parse_dotenv(dotenv.read_text(encoding="utf-8")))
        env.update(self.spec.env)
        secret = self._context.chain_secret
        for name in ("HTTP_PROXY", "http_proxy"):
            # The executor's proxy (not one handler.env set) vouches for the API's chained calls.
            proxy = self._context.base_env.get(name)
            if secret and proxy and env.get(name) == proxy:
                env[name] = _chaining.proxy_with_token(proxy, _chaining.token_for(secret, self.spec.name))
        env["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices(list(self.placement.gpu_indices))
        env.update(format_replica_environment(self.placement.replica, self._context.grace_seconds))
        return env

    def _progress(self, line: str) -> None:
        """A line of dependencies.sh or pip output: into the API's logs, and the latest one into its status."""
        self._set(control_pb2.REPLICA_STATE_STARTING, f"installing dependencies: {line[:200]}")
        record = wrap_line(line.encode(), "INFO", os.getpid(), {"api": self.spec.name, "step": "dependencies"})
        task = asyncio.get_running_loop().create_task(self._context.logs.ship(self.spec.name, record))
        self._shipping.add(task)
        task.add_done_callback(self._shipping.discard)

    def _stop_stuck(self) -> None:
        """A cancelled request's handler did not stop within the grace period: stop its process (restarted at once).

        As for a plain handler past its timeout, the thread cannot be stopped, only its process; the other
        requests it held go back to the queue.
        """
        process = self._process
        if process is None or process.returncode is not None or self._stuck:
            return
        self._stuck = True
        with contextlib.suppress(ProcessLookupError):
            process.kill()

    def _count(self, final: records_pb2.RequestRecord) -> None:
        """Count a request this replica finished, and its latency (submission to outcome) for the console."""
        if final.status == records_pb2.REQUEST_STATUS_COMPLETED:
            self.completed += 1
        elif final.status == records_pb2.REQUEST_STATUS_FAILED:
            self.failed += 1
        else:
            return
        if final.HasField("submitted_at") and final.HasField("finished_at"):
            latency = final.finished_at.ToNanoseconds() - final.submitted_at.ToNanoseconds()
            self.latency_seconds_sum += max(0, latency) / 1e9

    async def _run_process(self, project: Path, env: dict[str, str], python: str) -> ProcessEnd:
        """Run the handler process once, feeding it through a Dispatcher while it is ready; why it ended."""
        spec_file = project.parent / f"v{self.spec.version}.spec"
        spec_file.write_bytes(self.spec.SerializeToString())
        if self._user is not None:
            os.chown(spec_file, self._user.uid, self._user.gid)
        ours, theirs = socket.socketpair()
        self._stuck = False
        env = {**env, **format_start_environment(spec_file, theirs.fileno(), os.getpid())}
        loop = asyncio.get_running_loop()
        try:
            self._process = await asyncio.create_subprocess_exec(
                *handler_process_argv(python),
                cwd=project,
                env=env,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                limit=READER_LIMIT,
                preexec_fn=become(self._user),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        process = self._process
        labels = {"api": self.spec.name, "replica": str(self.placement.replica)}
        assert process.stdout is not None and process.stderr is not None
        logs = self._context.logs
        pumps = [
            asyncio.create_task(logs.pump(self.spec.name, process.stdout, "INFO", process.pid, labels)),
            asyncio.create_task(logs.pump(self.spec.name, process.stderr, "ERROR", process.pid, labels)),
        ]
        reader, writer = await open_channel(ours)
        started = loop.time()
        ready_at: float | None = None
        failure = ""
        restarting = False
        pulling: asyncio.Task[None] | None = None
        try:
            while True:
                try:
                    message = await read_frame(reader, handler_pb2.FromHandler)
                except (ChannelClosedError, ConnectionError):
                    break
                except ValueError:
                    log.exception("malformed frame from a handler process; stopping it", extra={"api": self.spec.name})
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    break
                if message.failed:
                    failure = message.failed
                restarting = restarting or message.restarting
                if message.ready and self._dispatcher is None:
                    ready_at = loop.time()
                    # The process says how many jobs it takes at once; never more than its API allows.
                    most = most_jobs(self.spec.max_concurrency, self.spec.max_batch_size)
                    self._dispatcher = Dispatcher(
                        self.spec,
                        self._context.js,
                        self._context.store,
                        writer,
                        min(message.room, most),
                        self._context.ack_wait_seconds,
                        self._count,
                        self._context.max_deliveries,
                        self._context.cancel_grace_seconds,
                        self._stop_stuck,
                        self._recent_cancels,
                    )
                    if self._stopping:
                        self._dispatcher.stop()
                    pulling = asyncio.create_task(self._dispatcher.run())
                    self._set(control_pb2.REPLICA_STATE_READY)
                if self._dispatcher is not None and (message.outcomes or message.returned or message.chunks):
                    self._dispatcher.on_frame(message)
            code = await process.wait()
            await asyncio.gather(*pumps, return_exceptions=True)
            dispatcher, self._dispatcher = self._dispatcher, None
            if dispatcher is not None:
                dispatcher.stop()
                if pulling is not None:
                    await asyncio.gather(pulling, return_exceptions=True)
                await dispatcher.finish(process_died=code != EXIT_STOPPED, grace=self._context.grace_seconds)
        finally:
            writer.close()
        mark_process_dead(process.pid, str(self._context.metrics_dir / self.spec.name))  # type: ignore[no-untyped-call]
        served = loop.time() - (ready_at or started)
        return parse_exit(code, restarting=restarting, stuck=self._stuck, failure=failure, served_seconds=served)
