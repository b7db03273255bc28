"""The streaming JSON check (cortado._jsonscan): json.loads's verdict and message on any text, fed in any pieces,
its limits, and a hostile body checked with little memory and without holding an event loop."""

from __future__ import annotations

import asyncio
import json
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cortado._jsonscan import MAX_NUMBER_DIGITS, JsonLimitError, JsonScanner, JsonSyntaxError
from cortado.runtime import payloads
from cortado.runtime.errors import PayloadError
from cortado.runtime.limits import DEFAULT_JSON_DEPTH, DEFAULT_JSON_VALUES, MAX_JSON_DEPTH, JsonLimits
from cortado.runtime.payloads import check_payload, decode_payload, validate_payload

UNLIMITED = 10**12


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def json_verdict(text: str) -> str:
    """'ok', or json.loads's message as the scanner words it."""
    try:
        json.loads(text, parse_constant=_refuse)
    except json.JSONDecodeError as error:
        return f"{error.msg} at line {error.lineno} column {error.colno} (char {error.pos})"
    except ValueError as error:
        return str(error)
    return "ok"


def pieces(text: str, sizes: list[int]) -> Iterator[str]:
    """text cut into pieces of the given sizes, repeated."""
    at, turn = 0, 0
    while at < len(text):
        size = sizes[turn % len(sizes)]
        yield text[at : at + size]
        at, turn = at + size, turn + 1


def scan(text: str, sizes: list[int] | None = None, depth: int = UNLIMITED, values: int = UNLIMITED) -> JsonScanner:
    scanner = JsonScanner(depth, values, UNLIMITED)
    for piece in pieces(text, sizes or [len(text) or 1]):
        scanner.feed(piece)
    scanner.close()
    return scanner


def scan_verdict(text: str, sizes: list[int] | None = None) -> str:
    try:
        scan(text, sizes)
    except JsonSyntaxError as error:
        return str(error)
    return "ok"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=6), children, max_size=5),
    max_leaves=25,
)
TOKENS = [
    *'[]{},:" \n\t\r0123456789-+.eE\\/ubfnrtxaslNI\x00\x1f\x7f\u2028\U0001f600',
    *["true", "false", "null", "NaN", "Infinity", "-Infinity", '"a"', '"\\u12ab"', '"\\ud800\\udc00"', "1.5e+3"],
    *["-0", "01", "1.", "1e", "\\u", "\\uD834\\u", "[]", "{}", '{"a":1}', "[1,2]", '"k":', "\ufeff"],
]


@st.composite
def json_like(draw: st.DrawFn) -> str:
    """Valid JSON with a few cuts and insertions, or random tokens: mostly nearly-JSON text."""
    if draw(st.booleans()):
        text = json.dumps(
            draw(JSON_VALUES), indent=draw(st.sampled_from([None, 0, 2])), ensure_ascii=draw(st.booleans())
        )
        for _ in range(draw(st.integers(0, 3))):
            at = draw(st.integers(0, len(text)))
            action = draw(st.integers(0, 2))
            if action == 0:
                text = text[:at] + text[at + 1 :]
            elif action == 1:
                text = text[:at] + draw(st.sampled_from(TOKENS)) + text[at:]
            else:
                text = text[:at]
        return text
    return "".join(draw(st.lists(st.sampled_from(TOKENS), max_size=14)))


CHUNKINGS = st.lists(st.integers(1, 9), min_size=1, max_size=4)


@settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=json_like(), sizes=CHUNKINGS)
@example(text='"\\u2028', sizes=[1])
@example(text='["\\u12', sizes=[3])
@example(text="[1.", sizes=[2])
@example(text="[1.5e", sizes=[4])
@example(text='{"a":1,}', sizes=[1])
@example(text="-", sizes=[1])
@example(text="-Inf", sizes=[2])
@example(text="\ufeff1", sizes=[9])
def test_the_scanner_agrees_with_json_loads_on_any_text_fed_in_any_pieces(text: str, sizes: list[int]) -> None:
    assert scan_verdict(text, sizes) == json_verdict(text)


@settings(max_examples=300, deadline=None)
@given(value=JSON_VALUES, indent=st.sampled_from([None, 1]), sizes=CHUNKINGS)
def test_valid_json_is_accepted_and_its_values_counted_exactly(
    value: Any, indent: int | None, sizes: list[int]
) -> None:
    def count(item: Any) -> int:
        if isinstance(item, list):
            return 1 + sum(count(i) for i in item)
        if isinstance(item, dict):
            return 1 + sum(count(i) for i in item.values())
        return 1

    def depth(item: Any) -> int:
        children = item if isinstance(item, list) else list(item.values()) if isinstance(item, dict) else None
        return 0 if children is None else 1 + max((depth(i) for i in children), default=0)

    text = json.dumps(value, indent=indent)
    scanner = scan(text, sizes)
    assert scanner.values == count(value)
    assert depth(value) <= scanner.deepest <= depth(value) + 2
    for limit in (count(value), count(value) - 1):
        if limit < 1:
            continue
        refused = limit < count(value)
        try:
            scan(text, sizes, values=limit)
        except JsonLimitError:
            assert refused
        else:
            assert not refused


@pytest.mark.parametrize(
    "make",
    [
        lambda d: "[" * d + "]" * d,
        lambda d: '{"a":' * d + "1" + "}" * d,
        lambda d: "[" * (d - 1) + "[]" + "]" * (d - 1),
        lambda d: "[" * (d - 1) + "{}" + "]" * (d - 1),
        lambda d: "[" * (d - 2) + "[[1,2]]" + "]" * (d - 2),
        lambda d: "[" * (d - 2) + '[{"k":1}]' + "]" * (d - 2),
    ],
    ids=["arrays", "objects", "empty array last", "empty object last", "flat array last", "flat object last"],
)
def test_nesting_up_to_the_depth_limit_is_accepted_and_one_more_level_refused(make: Any) -> None:
    for sizes in ([1], [5], [1000]):
        assert scan(make(10), sizes, depth=10).deepest == 10
        with pytest.raises(JsonLimitError) as caught:
            scan(make(11), sizes, depth=10)
        assert str(caught.value) == "the JSON is nested more than 10 levels deep; the limit is 10 levels"


@pytest.mark.parametrize(
    ("item", "values_per_item"),
    [("0", 1), ("{}", 1), ("[]", 1), ('"s"', 1), ('{"a":{}}', 2), ("[1]", 2), ('"a\\n"', 1), ("[[1,2]]", 4)],
)
def test_values_up_to_the_limit_are_accepted_and_one_more_refused(item: str, values_per_item: int) -> None:
    items = 40
    text = "[" + ",".join([item] * items) + "]"
    total = 1 + items * values_per_item
    for sizes in ([1], [7], [len(text)]):
        assert scan(text, sizes, values=total).values == total
        with pytest.raises(JsonLimitError) as caught:
            scan(text, sizes, values=total - 1)
        assert str(caught.value) == (
            f"the JSON holds more than {total - 1:,} values; the limit is {total - 1:,} values "
            "(each array, object, string, number, true, false and null counts one)"
        )


@pytest.mark.parametrize("number", ["1" * MAX_NUMBER_DIGITS, "-" + "9" * MAX_NUMBER_DIGITS, "0." + "5" * 4299])
def test_a_number_of_up_to_the_digit_limit_is_accepted(number: str) -> None:
    for text in (number, f"[{number}]", f'{{"n": {number}}}'):
        for sizes in ([1000], [len(text)]):
            scanner = JsonScanner(10, 10)
            for piece in pieces(text, sizes):
                scanner.feed(piece)
            scanner.close()


@pytest.mark.parametrize(
    "number", ["1" * (MAX_NUMBER_DIGITS + 1), "-" + "9" * (MAX_NUMBER_DIGITS + 1), "1." + "5" * MAX_NUMBER_DIGITS]
)
def test_a_number_past_the_digit_limit_is_refused_early_wherever_it_is(number: str) -> None:
    text = "[0, " + number + "0" * 1_000_000 + "]"
    scanner = JsonScanner(10, 10)
    with pytest.raises(JsonLimitError) as caught:
        for piece in pieces(text, [1000]):
            scanner.feed(piece)
            assert len(scanner._buffer) < 2 * MAX_NUMBER_DIGITS  # a long number is not kept whole
    assert str(caught.value) == f"a JSON number (at char 4) has more than {MAX_NUMBER_DIGITS} digits; the limit is 4300"


# --- through runtime: validate_payload, check_payload, decode_payload --------------------------------------------


def hostile_array(size: int, item: str = "{}") -> bytes:
    """[{},{},...]: the body that costs json.loads the most memory per byte."""
    return b"[" + b",".join([item.encode()] * (size // (len(item) + 1))) + b"]"


def test_a_hostile_body_is_checked_without_building_it() -> None:
    body = hostile_array(4 * 2**20)
    tracemalloc.start()
    try:
        with pytest.raises(PayloadError) as caught:
            validate_payload("application/json", body, JsonLimits())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(caught.value) == (
        "body refused: the JSON holds more than 1,000,000 values; the limit is 1,000,000 values "
        "(each array, object, string, number, true, false and null counts one)"
    )
    assert peak < 2**20, f"checking a 4 MiB body took {peak / 2**20:.1f} MiB"  # json.loads: about 100 MiB


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", hostile_array(2**19, "0")),  # valid, no limit: checked to the end
        ("application/json; charset=utf-8", b'"' + "\U0001f600".encode() * 2**20 + b'"'),
        ("application/json; charset=utf-16", ('"' + "\U0001f600xyz" * 2**18 + '"').encode("utf-16")),
        ("text/plain", "\U0001f600".encode() * 2**20),
    ],
    ids=["numbers", "astral string", "utf-16", "text"],
)
def test_checking_a_large_valid_body_keeps_memory_flat(content_type: str, body: bytes) -> None:
    tracemalloc.start()
    try:
        validate_payload(content_type, body)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, f"checking a {len(body) / 2**20:.1f} MiB body took {peak / 2**20:.1f} MiB"


async def test_check_payload_lets_other_tasks_run_while_it_checks_a_large_body() -> None:
    body = hostile_array(8 * 2**20, "[1]")  # the slowest shape to check, past the value limit
    gaps: list[float] = []
    checking = True

    async def ticker() -> None:
        last = time.perf_counter()
        while checking:
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticks = asyncio.create_task(ticker())
    began = time.perf_counter()
    with pytest.raises(PayloadError, match="the limit is 1,000,000 values"):
        await check_payload("application/json", body, JsonLimits())
    took = time.perf_counter() - began
    checking = False
    await ticks
    # The other task ran between pieces: at least once per 16 KiB checked before the value limit tripped
    # (about 4 MiB of "[1]," here), however fast or slow this machine is.
    assert len(gaps) > (1_000_000 * len("[1],")) // (16 * 1024) // 2, (len(gaps), took)


def test_the_default_limits() -> None:
    assert (DEFAULT_JSON_DEPTH, DEFAULT_JSON_VALUES, MAX_JSON_DEPTH) == (128, 1_000_000, 512)
    assert JsonLimits() == JsonLimits(max_depth=128, max_values=1_000_000)
    with pytest.raises(PayloadError) as caught:
        validate_payload("application/json", b"[" * 129 + b"]" * 129, JsonLimits())
    assert str(caught.value) == "body refused: the JSON is nested more than 128 levels deep; the limit is 128 levels"
    validate_payload("application/json", b"[" * 128 + b"]" * 128, JsonLimits())


BODIES = json_like().map(lambda t: t.encode("utf-8", "surrogatepass"))
CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-16",
        "application/json; charset=latin-1",
        "application/json; charset=shift_jis",
        "application/json; charset=utf-32",
        "text/plain; charset=utf-8",
        "text/plain; charset=utf-16-le",
        "text/plain; charset=big5",
        "text/plain; charset=idna",
    ]
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    content_type=CONTENT_TYPES,
    body=BODIES | st.binary(max_size=40),
    chunk=st.integers(1, 9),
)
@example(content_type="application/json", body=b'{"a": "\xe9"}', chunk=3)
@example(content_type="application/json", body=b"[1, \xf0\x9f\x98", chunk=2)
@example(content_type="application/json; charset=utf-16", body=b"\xff\xfe[\x00\x00\xd8", chunk=3)
@example(content_type="application/json; charset=utf-16", body="\ufeff\ufeff[1]".encode("utf-16-be"), chunk=1)
@example(content_type="application/json; charset=utf-16", body=b"\xfe\xff\x00[\x001\x00]\x00", chunk=2)
@example(content_type="application/json; charset=utf-16", body=b"[", chunk=1)
@example(content_type="application/json; charset=utf-32", body="[1,\U0001f600]".encode("utf-32"), chunk=3)
@example(content_type="application/json; charset=utf-32", body=b"\x00\x00\xfe\xff\x00\x00\x00[\x00", chunk=5)
def test_validate_payload_refuses_exactly_what_decode_payload_refuses_with_the_same_message(
    content_type: str, body: bytes, chunk: int
) -> None:
    try:
        decode_payload(content_type, body)
        decoded = "ok"
    except PayloadError as error:
        decoded = str(error)
    default_chunk = payloads._CHECK_CHUNK_BYTES
    payloads._CHECK_CHUNK_BYTES = chunk  # the body is checked in pieces this small
    try:
        validate_payload(content_type, body)
        validated = "ok"
    except PayloadError as error:
        validated = str(error)
    finally:
        payloads._CHECK_CHUNK_BYTES = default_chunk
    assert validated == decoded


def test_decode_payload_decodes_the_deepest_body_any_setting_allows_even_under_a_low_recursion_limit() -> None:
    import sys
    import threading

    body = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    validate_payload("application/json", body, JsonLimits(max_depth=MAX_JSON_DEPTH))
    decoded: list[Any] = []
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(300)
    try:
        worker = threading.Thread(target=lambda: decoded.append(decode_payload("application/json", body)))
        worker.start()
        worker.join()
    finally:
        sys.setrecursionlimit(previous)
    value = decoded[0]
    for _ in range(MAX_JSON_DEPTH - 1):
        value = value[0]
    assert value == []
    assert sys.getrecursionlimit() == previous


def test_decode_payload_keeps_integers_up_to_the_digit_limit_whatever_this_process_allows() -> None:
    import sys

    number = int("7" * MAX_NUMBER_DIGITS)
    body = b'{"n": ' + b"7" * MAX_NUMBER_DIGITS + b"}"
    previous = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(640)
    try:
        validate_payload("application/json", body)
        assert decode_payload("application/json", body) == {"n": number}
    finally:
        sys.set_int_max_str_digits(previous)
