"""What the executor's cancel tests deploy and play: APIs whose handlers note their calls in a file, and the
operator's side of a cancel over NATS (records, the queue, announcements, webhook jobs)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
from nats.aio.msg import Msg
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError

from cortado import _names, _nats, _natsauth, records
from cortado.mesh import LocalMesh
from cortado.v1 import records_pb2
from services.webhooks.stream import stream_config
from tests.meshcalls import Deploy

T = TypeVar("T")


class Api:
    """A deployed API whose handler notes its calls in `log` (and waits for `release` in hold mode)."""

    def __init__(self, name: str, folder: Path) -> None:
        self.name = name
        self.log = folder / "calls.log"
        self.release = folder / "release"

    def lines(self, kind: str) -> list[list[str]]:
        """The noted lines of one kind ("start", "stopped", "cancelled"), split, oldest first."""
        if not self.log.exists():
            return []
        return [line.split()[1:] for line in self.log.read_text().splitlines() if line.split()[:1] == [kind]]

    def started(self) -> list[str]:
        """Ids of every call, in order (an id twice: it ran twice)."""
        return [fields[0] for fields in self.lines("start")]

    def pid_of(self, request_id: str) -> list[str]:
        """The process id of each call of the request."""
        return [fields[1] for fields in self.lines("start") if fields[0] == request_id]


def deploy_api(deploy: Deploy, tmp_path: Path, source: str, concurrency: int = 1) -> Api:
    folder = tmp_path / "api-files"
    folder.mkdir()
    api = Api("", folder)
    api.name = deploy(
        source,
        api={
            "handler": {
                "max_concurrency": concurrency,
                "config": {"log": str(api.log), "release": str(api.release)},
            },
            "autoscaling": {"min_replicas": 1, "max_replicas": 1},
        },
    )
    return api


class Operator:
    """The operator's NATS connection, on an event loop of its own (the tests themselves are synchronous)."""

    def __init__(self, mesh: LocalMesh) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.nc = self.run(_nats.connect(mesh.nats_url, "test-cancel", credentials=mesh.credentials[_natsauth.ADMIN]))
        self.js = self.nc.jetstream()
        self.webhook_jobs: list[records_pb2.WebhookJob] = []
        self.writes: list[records_pb2.RequestRecord] = []

        async def listen() -> None:
            # Every webhook job published, whoever consumes it from the stream later.
            async def seen(msg: Msg) -> None:
                self.webhook_jobs.append(records_pb2.WebhookJob.FromString(msg.data))

            # Every record written, whatever writes it next (the webhook sender records its attempts).
            async def written(msg: Msg) -> None:
                if msg.data:
                    self.writes.append(records_pb2.RequestRecord.FromString(msg.data))

            await self.nc.subscribe(_names.WEBHOOK_SUBJECTS, cb=seen)
            await self.nc.subscribe(_names.REQUESTS_SUBJECT_PREFIX + ">", cb=written)
            await _nats.ensure_stream(self.js, stream_config(8 * 1024 * 1024))
            await self.nc.flush()

        self.run(listen())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def close(self) -> None:
        self.run(_nats.drain(self.nc))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def record(self, request_id: str) -> records_pb2.RequestRecord | None:
        async def read() -> records_pb2.RequestRecord | None:
            kv = await self.js.key_value(_names.REQUESTS_BUCKET)
            try:
                entry = await kv.get(request_id)
            except KeyNotFoundError:
                return None
            return records_pb2.RequestRecord.FromString(entry.value or b"")

        return self.run(read())

    def final_write(self, request_id: str) -> records_pb2.RequestRecord | None:
        """The first final record written for the request, as it was written."""
        return next((r for r in list(self.writes) if r.id == request_id and records.is_final(r.status)), None)

    def cancel(self, api: str, request_id: str, delete: bool = True, announce: bool = True) -> None:
        """Do what ingest does to cancel a request: the `cancelled` record, the work item deleted, the announcement."""

        async def cancel() -> None:
            kv = await self.js.key_value(_names.REQUESTS_BUCKET)
            for _ in range(10):
                try:
                    entry = await kv.get(request_id)
                    stored: records_pb2.RequestRecord | None = records_pb2.RequestRecord.FromString(entry.value or b"")
                    revision = entry.revision or 0
                except KeyNotFoundError:
                    stored, revision = None, 0
                assert stored is None or not records.is_final(stored.status), stored
                record = records_pb2.RequestRecord(id=request_id, api=api)
                if stored is not None:
                    record.CopyFrom(stored)
                record.status = records_pb2.REQUEST_STATUS_CANCELLED
                record.finished_at.CopyFrom(records.now_timestamp())
                try:
                    await _nats.kv_put_if(
                        self.js, _names.REQUESTS_BUCKET, request_id, record.SerializeToString(), revision, 3600
                    )
                    break
                except KeyWrongLastSequenceError:
                    continue
            if delete:
                found = await records.queued_at(self.js, api, request_id)
                if found is not None:
                    with contextlib.suppress(Exception):  # gone if acknowledged meanwhile, as ingest allows
                        await self.js.delete_msg(_names.work_stream(api), found[1])
            if announce:
                await self.nc.publish(_names.cancel_subject(api), request_id.encode())
                await self.nc.flush()

        self.run(cancel())

    def write_record(self, record: records_pb2.RequestRecord) -> None:
        async def write() -> None:
            await _nats.kv_put_if(self.js, _names.REQUESTS_BUCKET, record.id, record.SerializeToString(), 0, 3600)

        self.run(write())

    def enqueue(self, api: str, request_id: str, payload: bytes) -> None:
        """Queue a work item as ingest would (no record written)."""
        item = records_pb2.WorkItem(id=request_id, api=api, content_type="application/json", payload=payload)
        item.submitted_at.CopyFrom(records.now_timestamp())
        item.priority = records_pb2.PRIORITY_NORMAL

        async def publish() -> None:
            await self.js.publish(
                _names.work_subject(api, request_id),
                item.SerializeToString(),
                stream=_names.work_stream(api),
                headers={"Nats-Msg-Id": request_id},
            )

        self.run(publish())

    def stored_webhook_job(self, api: str, request_id: str) -> records_pb2.WebhookJob | None:
        """The job on the webhooks stream for the request, while no sender took it."""

        async def read() -> records_pb2.WebhookJob | None:
            try:
                msg = await self.js.get_msg(_names.WEBHOOKS_STREAM, subject=_names.webhook_subject(api, request_id))
            except NotFoundError:
                return None
            return records_pb2.WebhookJob.FromString(msg.data or b"")

        return self.run(read())

    def webhook_senders(self) -> int:
        async def consumers() -> int:
            return int((await self.js.stream_info(_names.WEBHOOKS_STREAM)).state.consumer_count or 0)

        return self.run(consumers())


def new_id() -> str:
    return os.urandom(16).hex()


def status_of(http: httpx.Client, api: str, request_id: str) -> str:
    return str(http.get(f"/{api}/{request_id}").json()["status"])
