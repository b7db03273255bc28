"""The API registry: deploying and deleting APIs, their streams, consumers and bundles."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from cortado import _metrics, _names, _nats
from cortado._mirror import KvMirror
from cortado.project import ConfigError, ParsedConfig, ProjectError, parse_config, parse_dotenv, unpack_bundle
from cortado.records import now_timestamp
from cortado.runtime import HandlerDefinitionError, check_handler_source
from cortado.v1 import control_pb2
from cortado.webhooks import UrlPolicy
from services.scheduler.webhooksecrets import WebhookSecrets

log = logging.getLogger(__name__)

DUPLICATE_WINDOW_SECONDS = 120.0


_NO_ROOM_CODES = {10023, 10047}
"""JetStream's "insufficient (storage) resources": the stream's byte limit cannot be reserved."""


class DeployError(Exception):
    """The project cannot be deployed; the message says why, naming file, API and key."""


class UnknownApiError(Exception):
    """No API of that name is deployed."""


class ApiBusyError(Exception):
    """The API still has requests queued or in flight; the message says how many and how to force it."""


def _spec_fingerprint(spec: control_pb2.ApiSpec) -> bytes:
    unversioned = control_pb2.ApiSpec()
    unversioned.CopyFrom(spec)
    for name in ("version", "bundle_object", "deployed_at"):
        unversioned.ClearField(name)
    return unversioned.SerializeToString(deterministic=True)


def _check_project(parsed: ParsedConfig, config_name: str, bundle: bytes) -> None:
    """Unpack the bundle into a temporary folder and check its `.env` and handlers (blocking: run it in a thread)."""
    with tempfile.TemporaryDirectory(prefix="cortado-deploy-") as tmp:
        root = Path(tmp)
        try:
            unpack_bundle(bundle, root)
        except Exception as exc:
            raise DeployError(f"the project bundle cannot be read: {exc}") from exc
        dotenv = root / ".env"
        if dotenv.is_file():
            try:
                parse_dotenv(dotenv.read_text(encoding="utf-8"))
            except (ProjectError, UnicodeDecodeError) as exc:
                raise DeployError(str(exc)) from exc
        for spec in parsed.apis:
            where = f"{config_name}: api {spec.name!r}"
            relative = PurePosixPath(spec.handler_path)
            if relative.is_absolute() or ".." in relative.parts:
                raise DeployError(f"{where}: handler.path must be inside the project, got {spec.handler_path!r}")
            handler_file = root / relative
            if not handler_file.is_file():
                raise DeployError(f"{where}: handler.path {spec.handler_path!r} is not a file of the project")
            try:
                check_handler_source(
                    handler_file.read_text(encoding="utf-8"), spec.handler_path, spec.handler_type or "python"
                )
            except (HandlerDefinitionError, UnicodeDecodeError) as exc:
                raise DeployError(f"{where}: {exc}") from exc
            if spec.python_path and not (root / spec.python_path).is_dir():
                raise DeployError(f"{where}: handler.python_path {spec.python_path!r} is not a folder of the project")
            # A model inside the project must be there now; one on the executors' machines is looked for at start.
            named = [(f"handler.models.path {m.path!r}", m.path) for m in spec.models if not m.name]
            named += [(f"handler.models.paths {m.name!r}: {m.path!r}", m.path) for m in spec.models if m.name]
            named += [(f"handler.models.dir {spec.models_dir!r}", spec.models_dir)] if spec.models_dir else []
            for what, path in named:
                if not path.startswith("/") and not (root / path).is_dir():
                    raise DeployError(f"{where}: {what} is not a folder of the project")


def _at_least(version: int) -> Callable[[control_pb2.ApiSpec | None], bool]:
    return lambda spec: spec is not None and spec.version >= version


class Registry:
    """Owns the apis bucket, the bundles store and every API's work stream and consumer."""

    def __init__(
        self,
        js: JetStreamContext,
        apis_kv: KeyValue,
        apis: KvMirror[control_pb2.ApiSpec],
        bundles: ObjectStore,
        ack_wait_seconds: float,
        webhook_secrets: WebhookSecrets | None = None,
        webhook_policy: UrlPolicy | None = None,
    ) -> None:
        self._js = js
        self._apis_kv = apis_kv
        self.apis = apis
        self._bundles = bundles
        self._ack_wait = ack_wait_seconds
        self._webhook_secrets = webhook_secrets
        self._webhook_policy = webhook_policy or UrlPolicy()

    async def deploy(self, config_name: str, config_yaml: bytes, bundle: bytes) -> control_pb2.DeployResponse:
        """Validate the project, then create or update each of its APIs.

        An API deployed for the first time gets its webhook signing secret, answered in `webhook_secrets` (the
        only time it is shown). Raises DeployError, before changing anything, when the configuration or a handler
        is invalid (a `webhook.url` the webhook policy refuses included).
        """
        try:
            parsed = await asyncio.to_thread(parse_config, config_yaml, config_name, self._webhook_policy)
        except ConfigError as exc:
            raise DeployError(str(exc)) from exc
        # Unpacking and reading the project are blocking work: keep them off the event loop.
        await asyncio.to_thread(_check_project, parsed, config_name, bundle)
        digest = hashlib.sha256(bundle).hexdigest()
        response = control_pb2.DeployResponse(notices=parsed.notices)
        for spec in parsed.apis:
            spec.bundle_sha256 = digest
            previous = self.apis.get(spec.name)
            if previous is not None:
                spec.version = previous.version
                spec.bundle_object = previous.bundle_object
                spec.deployed_at.CopyFrom(previous.deployed_at)
                if _spec_fingerprint(spec) == _spec_fingerprint(previous):
                    # An API deployed before it had a secret gets one now.
                    await self._create_webhook_secret(spec.name, response)
                    response.notices.append(f"api {spec.name!r} is up to date (version {previous.version})")
                    response.apis.add(name=spec.name, version=previous.version)
                    continue
            spec.version = (previous.version if previous else 0) + 1
            spec.bundle_object = _names.bundle_object(spec.name, spec.version)
            spec.deployed_at.CopyFrom(now_timestamp())
            await self._bundles.put(spec.bundle_object, bundle)
            await self._ensure_queue(spec)
            # Before the spec is stored, so that its first request's webhook finds the secret to sign with.
            created = await self._create_webhook_secret(spec.name, response)
            try:
                await self._apis_kv.put(spec.name, spec.SerializeToString())
            except BaseException:
                # Nobody saw the new secret: the next deploy makes (and shows) another.
                if created and self._webhook_secrets is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(self._webhook_secrets.delete_secret(spec.name))
                raise
            version = spec.version
            # Answer once this scheduler itself sees the new version, so a describe right after agrees.
            await self.apis.wait_for(spec.name, _at_least(version))
            log.info("api deployed", extra={"api": spec.name, "version": spec.version})
            response.apis.add(name=spec.name, version=spec.version, deployed_at=spec.deployed_at)
        return response

    async def _create_webhook_secret(self, api: str, response: control_pb2.DeployResponse) -> bool:
        """Give the API its webhook signing secret if it has none, into response.webhook_secrets; whether it did."""
        if self._webhook_secrets is None:
            return False
        secret = await self._webhook_secrets.create(api)
        if secret is None:
            return False
        response.webhook_secrets[api] = secret
        return True

    async def _ensure_queue(self, spec: control_pb2.ApiSpec) -> None:
        stream = StreamConfig(
            name=_names.work_stream(spec.name),
            subjects=[_names.work_subjects(spec.name)],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            max_msgs=queue_ceiling(spec),
            max_bytes=_nats.queue_max_bytes(),
            discard=DiscardPolicy.NEW,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            num_replicas=_nats.replicas(),
        )
        try:
            try:
                await self._js.stream_info(stream.name or "")
                await self._js.update_stream(stream)
            except NotFoundError:
                await self._js.add_stream(stream)
        except APIError as exc:
            if exc.err_code not in _NO_ROOM_CODES:
                raise
            raise DeployError(
                f"{spec.name}: JetStream has no room left for this API's queue, which reserves "
                f"{stream.max_bytes:,} bytes (CORTADO_QUEUE_MAX_BYTES): give NATS more storage (its max_file_store) "
                "or lower that setting, or delete an API you no longer need"
            ) from exc
        # The single consumer of releases before priorities overlaps the new ones, which a work-queue
        # stream refuses: it goes (requests it still held are not carried over; NOTES.md).
        with contextlib.suppress(NotFoundError):
            await self._js.delete_consumer(stream.name or "", _names.WORK_CONSUMER)
        # One consumer per priority: the executors pull from each and dispatch higher priorities first. A paused
        # API stays paused (updating a consumer's configuration without its pause would resume it).
        paused = (await self.queue_state(spec.name)).paused
        for priority in _names.PRIORITIES:
            await self._js.add_consumer(
                stream.name or "",
                ConsumerConfig(
                    durable_name=_names.work_consumer(priority),
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=self._ack_wait,
                    # Redeliveries are counted by the handler process, which fails the request with a
                    # clear error once max_retries is spent: the server must keep redelivering until then.
                    max_deliver=-1,
                    max_ack_pending=-1,
                    filter_subject=_names.work_subjects(spec.name, priority),
                    pause_until=PAUSED_UNTIL if paused else None,
                ),
            )

    async def delete(self, name: str, force: bool = False) -> None:
        """Remove the API's spec and queue; its replicas stop at the next reconcile.

        Raises ApiBusyError while requests are queued or in flight, unless force.
        """
        spec = self.apis.get(name)
        if spec is None:
            raise UnknownApiError(name)
        queued, in_flight = await self.queue_depth(name)
        # A request whose result was just written is acknowledged a moment later: give those a moment.
        for _ in range(20):
            if queued or not in_flight or force:
                break
            await asyncio.sleep(0.1)
            queued, in_flight = await self.queue_depth(name)
        if (queued or in_flight) and not force:
            raise ApiBusyError(
                f"API {name!r} has {queued} queued and {in_flight} in-flight requests; "
                "delete it with force (cortado delete --force) to drop them"
            )
        await self._apis_kv.delete(name)
        await self.apis.wait_for(name, lambda s: s is None)
        with contextlib.suppress(NotFoundError):
            await self._js.delete_stream(_names.work_stream(name))
        if self._webhook_secrets is not None:
            await self._webhook_secrets.delete(name)
        log.info("api deleted", extra={"api": name})

    async def queue_depth(self, name: str) -> tuple[int, int]:
        """(queued, in flight) of the API's consumers, every priority together; (0, 0) when it has none."""
        state = await self.queue_state(name)
        return state.queued, state.in_flight

    async def dispatchable_depth(self, name: str) -> tuple[int, int]:
        """What the autoscaler sizes replicas for: (queued, in flight), queued counting as 0 while dispatch is
        paused (requests that cannot be dispatched need no replica)."""
        state = await self.queue_state(name)
        return (0 if state.paused else state.queued), state.in_flight

    async def queue_state(self, name: str) -> QueueState:
        """Requests queued per priority (high, normal, low), in flight in all, and whether dispatch is paused."""
        queued: dict[str, int] = {}
        in_flight = 0
        paused = False
        for priority in _names.PRIORITIES:
            try:
                info = await self._js.consumer_info(_names.work_stream(name), _names.work_consumer(priority))
            except NotFoundError:
                continue
            level = _names.priority_name(priority)
            queued[level] = int(info.num_pending or 0)
            _metrics.QUEUE_BY_PRIORITY.labels(name, level).set(queued[level])
            in_flight += int(info.num_ack_pending or 0)
            paused = paused or bool(info.paused)
        return QueueState(queued, in_flight, paused)

    async def set_paused(self, name: str, paused: bool) -> None:
        """Pause (or resume) dispatching the API's queued requests: its consumers deliver nothing while paused.

        The pause is JetStream's own (a consumer paused until PAUSED_UNTIL), so it lasts across restarts of any
        process, and a redeploy carries it over. UnknownApiError when the API is not deployed.
        """
        if self.apis.get(name) is None:
            raise UnknownApiError(name)
        stream = _names.work_stream(name)
        for priority in _names.PRIORITIES:
            consumer = _names.work_consumer(priority)
            if paused:
                await self._js.pause_consumer(stream, consumer, PAUSED_UNTIL)
            else:
                await self._js.resume_consumer(stream, consumer)
        log.info("api paused" if paused else "api resumed", extra={"api": name})


@dataclass(frozen=True)
class QueueState:
    """Where an API's queue stands."""

    by_priority: dict[str, int]
    """Requests waiting, per priority name."""
    in_flight: int
    """Requests delivered to a replica and not acknowledged yet."""
    paused: bool
    """Dispatch is paused (Scheduler/PauseApi)."""

    @property
    def queued(self) -> int:
        """Requests waiting, every priority together."""
        return sum(self.by_priority.values())


PAUSED_UNTIL = "9999-12-31T00:00:00Z"
"""A paused API's consumers are paused until then: until ResumeApi."""


def queue_ceiling(spec: control_pb2.ApiSpec) -> int:
    """The most messages the API's stream holds: `queue.max_length` waiting, which ingest enforces on the requests
    not yet delivered (services/ingest/queuelimit.py), plus all that its replicas may run and hold fetched ahead."""
    held = int(spec.autoscaling.max_replicas) * int(spec.autoscaling.max_replica_concurrency)
    return min(int(spec.queue_max_length) + held, 2**63 - 1)
