"""Which prepared request goes to the handler process next, across the three priorities.

Each dispatch takes the highest priority with a request ready, except that a lower
priority which has had requests ready through several dispatches in a row without getting
one gets the next: a level with requests ready gets at least one dispatch in every SHARE
consecutive ones, so when every level is backed up at least one in every SHARE goes to
`normal` and one to `low`, and no level starves.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Generic, TypeVar

from cortado.v1 import records_pb2

SHARE = 10
"""A level with requests ready gets at least one dispatch in every SHARE."""

LEVELS: tuple[int, ...] = (records_pb2.PRIORITY_HIGH, records_pb2.PRIORITY_NORMAL, records_pb2.PRIORITY_LOW)
"""The priorities, highest first."""

T = TypeVar("T")


def level_of(priority: int) -> int:
    """The level a WorkItem's priority dispatches at (unset is `normal`)."""
    return priority if priority in LEVELS else records_pb2.PRIORITY_NORMAL


class PriorityQueues(Generic[T]):
    """First in, first out within a level; across levels, highest first with each lower level's share kept."""

    def __init__(self) -> None:
        self._queues: dict[int, deque[T]] = {level: deque() for level in LEVELS}
        self._passed_over: dict[int, int] = dict.fromkeys(LEVELS, 0)

    def append(self, level: int, item: T) -> None:
        """Queue item at its level (see level_of)."""
        self._queues[level_of(level)].append(item)

    def popleft(self) -> T:
        """The next item to dispatch; IndexError when none is ready."""
        waiting = [level for level in LEVELS if self._queues[level]]
        if not waiting:
            raise IndexError("no request is ready")
        # A lower level is due once passed over SHARE - 2 times: when both lower levels are due together,
        # the one that waited longer goes first and the other next, so neither waits past SHARE - 1.
        due = [level for level in waiting[1:] if self._passed_over[level] >= SHARE - 2]
        choice = max(due, key=lambda level: (self._passed_over[level], level)) if due else waiting[0]
        for level in LEVELS:
            # Only a level that had requests ready and was passed over moves towards its turn.
            self._passed_over[level] = self._passed_over[level] + 1 if level in waiting and level != choice else 0
        return self._queues[choice].popleft()

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def __bool__(self) -> bool:
        return any(self._queues.values())

    def __iter__(self) -> Iterator[T]:
        for level in LEVELS:
            yield from self._queues[level]

    def remove(self, item: T) -> bool:
        """Take item out wherever it waits; whether it was there."""
        for queue in self._queues.values():
            if item in queue:
                queue.remove(item)
                return True
        return False
