"""The scanner's fast runs end where the last whole simple member or item ends, on every Python 3.11 release."""

from __future__ import annotations

import json

import pytest

from cortado._jsonscan import JsonScanner

DOCUMENTS = [
    '{"action": "raise", "message": "bad input: 42"}',
    '{"a": "r", "m": "b: 4"}',
    '{"a": 1, "b": [1, 2], "c": "x, y", "d": {"e": "f: g"}}',
    '["a", "b", "c: d", ["e", "f,g"], 3]',
    '{"a": "r", "m": "b: 4", "z": 1}',
]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_a_member_or_item_the_fast_path_cannot_take_is_scanned_after_the_run(document: str) -> None:
    json.loads(document)  # valid JSON, as the scanner must agree
    scanner = JsonScanner(max_depth=128, max_values=1000)
    scanner.feed(document)
    scanner.close()
