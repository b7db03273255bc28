"""RecordStore's writes, against an in-memory bucket: created once, advanced forward only, compare-and-set, TTL."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from cortado.records import store
from cortado.records.store import ADVANCE_ATTEMPTS, RecordStore
from cortado.v1 import records_pb2

Q = records_pb2.REQUEST_STATUS_IN_QUEUE
P = records_pb2.REQUEST_STATUS_IN_PROGRESS
C = records_pb2.REQUEST_STATUS_COMPLETED
X = records_pb2.REQUEST_STATUS_CANCELLED


@dataclass
class Entry:
    value: bytes
    revision: int


@dataclass
class Bucket:
    """The requests bucket: one revision per key, every write a compare-and-set, each with its TTL."""

    entries: dict[str, Entry] = field(default_factory=dict)
    ttls: list[float | None] = field(default_factory=list)
    revision: int = 0
    before_write: Callable[[], object] | None = None
    """Runs before each compare-and-set: another writer slipping in."""

    async def get(self, key: str) -> Entry:
        if key not in self.entries:
            raise KeyNotFoundError
        return self.entries[key]

    def write(self, key: str, value: bytes) -> int:
        self.revision += 1
        self.entries[key] = Entry(value, self.revision)
        return self.revision

    async def put_if(
        self, js: Any, request_id: str, new: records_pb2.RequestRecord, revision: int, ttl: float | None
    ) -> int:
        if self.before_write is not None:
            self.before_write()
        current = self.entries.get(request_id)
        if (current.revision if current else 0) != revision:
            raise KeyWrongLastSequenceError
        self.ttls.append(ttl)
        return self.write(request_id, new.SerializeToString())

    def status(self, key: str) -> int:
        return records_pb2.RequestRecord.FromString(self.entries[key].value).status


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch) -> Bucket:
    fake = Bucket()
    monkeypatch.setattr(store, "put_if", fake.put_if)
    return fake


def records_of(bucket: Bucket) -> RecordStore:
    return RecordStore(cast(JetStreamContext, None), cast(KeyValue, bucket))


def record(status: records_pb2.RequestStatus.ValueType) -> records_pb2.RequestRecord:
    return records_pb2.RequestRecord(id="r1", api="iris", status=status)


async def test_a_record_is_created_once_and_expires_after_the_retention(bucket: Bucket) -> None:
    records = records_of(bucket)
    revision = await records.create("r1", record(P), retention_seconds=3600)
    assert (await records.read("r1"))[1] == revision
    with pytest.raises(KeyWrongLastSequenceError):
        await records.create("r1", record(P), retention_seconds=3600)
    assert bucket.ttls == [3600]


async def test_a_retention_under_a_second_still_writes_a_ttl_of_one_second(bucket: Bucket) -> None:
    await records_of(bucket).create("r1", record(P), retention_seconds=0)
    assert bucket.ttls == [1.0]


async def test_a_missing_record_reads_as_none(bucket: Bucket) -> None:
    assert await records_of(bucket).read("nope") == (None, 0)


async def test_advance_writes_at_the_revision_it_read(bucket: Bucket) -> None:
    records = records_of(bucket)
    revision = await records.create("r1", record(P), 60)
    written, stored, new_revision = await records.advance("r1", record(C), revision, 60)
    assert (written, new_revision, bucket.status("r1")) == (True, revision + 1, C)
    assert stored is not None and stored.status == C


async def test_advance_never_overwrites_a_final_record_written_meanwhile(bucket: Bucket) -> None:
    records = records_of(bucket)
    revision = await records.create("r1", record(P), 60)
    bucket.write("r1", record(X).SerializeToString())  # a cancel won the race
    written, stored, now = await records.advance("r1", record(C), revision, 60)
    assert not written
    assert stored is not None and stored.status == X
    assert (now, bucket.status("r1")) == (revision + 1, X)


async def test_advance_reads_again_and_writes_over_a_record_it_may_move_from(bucket: Bucket) -> None:
    records = records_of(bucket)
    revision = await records.create("r1", record(Q), 60)
    bucket.write("r1", record(P).SerializeToString())  # the in_progress mark landed first
    written, _, now = await records.advance("r1", record(C), revision, 60)
    assert (written, bucket.status("r1"), now) == (True, C, revision + 2)


async def test_advance_gives_up_when_another_writer_always_wins(bucket: Bucket) -> None:
    records = records_of(bucket)
    revision = await records.create("r1", record(P), 60)
    bucket.before_write = lambda: bucket.write("r1", record(P).SerializeToString())
    with pytest.raises(RuntimeError, match="too many concurrent writes"):
        await records.advance("r1", record(C), revision, 60)
    assert bucket.status("r1") == P
    assert len(bucket.ttls) == 1  # only the create landed
    assert bucket.revision == 1 + ADVANCE_ATTEMPTS
