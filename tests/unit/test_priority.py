"""The executor's dispatch order across priorities (services/executor/priority.py)."""

from __future__ import annotations

import pytest

from cortado.v1 import records_pb2
from services.executor.priority import SHARE, PriorityQueues, level_of

HIGH, NORMAL, LOW = records_pb2.PRIORITY_HIGH, records_pb2.PRIORITY_NORMAL, records_pb2.PRIORITY_LOW


def drain(queues: PriorityQueues[str], count: int) -> list[str]:
    return [queues.popleft() for _ in range(count)]


def test_higher_priorities_go_first_and_each_level_keeps_its_order() -> None:
    queues: PriorityQueues[str] = PriorityQueues()
    for item, level in [("l1", LOW), ("n1", NORMAL), ("h1", HIGH), ("l2", LOW), ("h2", HIGH)]:
        queues.append(level, item)
    assert len(queues) == 5
    assert drain(queues, 5) == ["h1", "h2", "n1", "l1", "l2"]
    assert not queues
    with pytest.raises(IndexError, match="no request is ready"):
        queues.popleft()


def test_unset_priority_dispatches_as_normal() -> None:
    assert level_of(records_pb2.PRIORITY_UNSPECIFIED) == NORMAL
    queues: PriorityQueues[str] = PriorityQueues()
    queues.append(records_pb2.PRIORITY_UNSPECIFIED, "unset")
    queues.append(LOW, "low")
    assert drain(queues, 2) == ["unset", "low"]


def test_when_every_level_is_backed_up_each_lower_level_gets_one_dispatch_in_every_share() -> None:
    queues: PriorityQueues[str] = PriorityQueues()
    for i in range(1000):
        for level, name in [(HIGH, "h"), (NORMAL, "n"), (LOW, "l")]:
            queues.append(level, f"{name}{i}")
    order = drain(queues, 20 * SHARE)
    for start in range(len(order) - SHARE + 1):
        window = order[start : start + SHARE]
        assert any(x.startswith("n") for x in window), window
        assert any(x.startswith("l") for x in window), window
    # And high still gets most of them.
    assert sum(x.startswith("h") for x in order) >= len(order) * (SHARE - 3) / SHARE


def test_a_lower_level_that_was_not_waiting_earns_no_turn() -> None:
    queues: PriorityQueues[str] = PriorityQueues()
    for i in range(3 * SHARE):
        queues.append(HIGH, f"h{i}")
    drain(queues, 2 * SHARE)  # low had nothing ready meanwhile
    queues.append(LOW, "l0")
    queues.append(HIGH, "late")
    # low waits its share from the moment it has something ready, not from before.
    order = drain(queues, SHARE)
    assert 0 < order.index("l0") <= SHARE - 1, order


def test_remove_and_iteration() -> None:
    queues: PriorityQueues[str] = PriorityQueues()
    queues.append(LOW, "a")
    queues.append(HIGH, "b")
    assert list(queues) == ["b", "a"]
    assert queues.remove("a")
    assert not queues.remove("a")
    assert list(queues) == ["b"]
