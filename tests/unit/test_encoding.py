"""Result encoding and JSON with integers of any size (cortado.runtime.encoding)."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from cortado.runtime.encoding import (
    decimal_to_int,
    dumps_json,
    encode_result,
    int_to_decimal,
    loads_json,
    split_batch_result,
)
from cortado.runtime.errors import InvalidResultError
from cortado.runtime.payloads import decode_payload

# --- encode_result -----------------------------------------------------------------------------------------------


def test_a_dict_result_is_encoded_as_compact_utf8_json() -> None:
    assert encode_result({"a": 1, "b": [1, 2.5, None, True], "s": "café"}) == (
        '{"a":1,"b":[1,2.5,null,true],"s":"café"}'.encode()
    )


def test_a_result_keeps_its_key_order() -> None:
    assert encode_result({"z": 1, "a": 2, "m": {"y": 1, "b": 2}}) == b'{"z":1,"a":2,"m":{"y":1,"b":2}}'


def test_a_result_keeps_big_integers_exactly() -> None:
    assert encode_result({"n": 2**64 + 1}) == b'{"n":18446744073709551617}'


def test_a_result_keeps_integers_past_pythons_digit_limit() -> None:
    # str() refuses integers past 4300 digits; a result may still hold one, and must keep it exactly.
    huge = 10**5000
    encoded = encode_result({"n": huge, "neg": -huge - 1, "list": [1, 3**10000], "keyed": {huge: "k"}, "s": "x"})
    assert encoded.startswith(b'{"n":1' + b"0" * 5000 + b',"neg":-1' + b"0" * 4999 + b'1,"list":[1,')
    assert encoded.endswith(b'],"keyed":{"1' + b"0" * 5000 + b'":"k"},"s":"x"}')
    value = loads_json(encoded)
    assert value["n"] == huge and value["neg"] == -huge - 1 and value["list"] == [1, 3**10000]


def test_a_result_with_a_huge_integer_and_a_lone_surrogate_keeps_both() -> None:
    encoded = encode_result({"s": "\ud800", "n": -(10**4400)})
    assert encoded == b'{"s":"\\ud800","n":-1' + b"0" * 4400 + b"}"


def test_a_string_that_looks_like_the_big_integer_marker_stays_a_string() -> None:
    lookalike = "\x000123456789abcdef:0\x00"
    encoded = encode_result({"n": 10**5000, "s": lookalike})
    assert loads_json(encoded)["s"] == lookalike


def test_a_circular_result_holding_a_huge_integer_still_says_it_is_circular() -> None:
    value: dict[str, Any] = {"n": 10**5000}
    value["self"] = value
    with pytest.raises(InvalidResultError) as caught:
        encode_result(value)
    assert str(caught.value) == (
        "handle_async returned a result that contains itself at result['self']; JSON cannot encode a circular reference"
    )


@pytest.mark.parametrize(
    "number",
    [0, -1, 7, 10**600, -(10**640) + 3, 10**4300, 2**20000 + 1, -(3**30000)],
    ids=["0", "-1", "7", "10^600", "-10^640+3", "10^4300", "2^20000+1", "-3^30000"],
)
def test_integers_convert_to_and_from_decimal_text_at_any_size(number: int) -> None:
    text = int_to_decimal(number)
    assert decimal_to_int(text) == number
    assert json.loads(dumps_json({"n": number}), parse_int=decimal_to_int) == {"n": number}
    if abs(number) < 10**4000:
        assert text == str(number)


def test_big_integers_round_trip_through_decode_and_encode() -> None:
    value = decode_payload("application/json", b'{"n":18446744073709551617,"m":-18446744073709551617}')
    assert encode_result(value) == b'{"n":18446744073709551617,"m":-18446744073709551617}'


def test_a_result_with_a_lone_surrogate_is_kept_as_an_escape() -> None:
    value = decode_payload("application/json", b'{"s": "\\ud800"}')
    encoded = encode_result(value)
    assert encoded == b'{"s":"\\ud800"}'
    assert json.loads(encoded) == value


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ([1], "list"),
        (None, "None"),
        ("text", "str"),
        (3, "int"),
        ((1,), "tuple"),
        (datetime.date(2024, 1, 1), "datetime.date"),
    ],
)
def test_a_result_that_is_not_a_dict_names_the_type_that_came_back(value: Any, name: str) -> None:
    with pytest.raises(InvalidResultError) as caught:
        encode_result(value)
    assert str(caught.value) == (
        f"handle_async must return a dict (or bytes, a pathlib.Path or a cortado.Result), but returned {name}"
    )


@pytest.mark.parametrize(
    ("value", "shown", "path"),
    [
        ({"x": float("nan")}, "nan", "result['x']"),
        ({"x": [1, float("inf")]}, "inf", "result['x'][1]"),
        ({"a": {"b": -float("inf")}}, "-inf", "result['a']['b']"),
    ],
)
def test_a_result_with_nan_or_infinity_says_they_are_not_valid_json(value: Any, shown: str, path: str) -> None:
    with pytest.raises(InvalidResultError) as caught:
        encode_result(value)
    assert str(caught.value) == f"handle_async returned {shown} at {path}, but NaN and Infinity are not valid JSON"


def test_a_result_with_an_unserialisable_value_names_its_type_and_place() -> None:
    with pytest.raises(InvalidResultError) as caught:
        encode_result({"ok": 1, "when": [datetime.datetime(2024, 1, 1)]})
    assert str(caught.value) == (
        "handle_async returned a value of type datetime.datetime at result['when'][0], which is not JSON-serialisable"
    )


def test_a_result_with_a_set_names_the_set_type() -> None:
    with pytest.raises(InvalidResultError, match=r"a value of type set at result\['tags'\]"):
        encode_result({"tags": {"a"}})


def test_a_result_with_a_non_string_key_names_the_key_type() -> None:
    with pytest.raises(InvalidResultError) as caught:
        encode_result({"a": {(1, 2): "x"}})
    assert str(caught.value) == (
        "handle_async returned a key of type tuple at result['a'][(1, 2)], but JSON object keys must be strings"
    )


def test_a_result_that_contains_itself_is_rejected() -> None:
    value: dict[str, Any] = {"a": []}
    value["a"].append(value)
    with pytest.raises(InvalidResultError) as caught:
        encode_result(value)
    assert str(caught.value) == (
        "handle_async returned a result that contains itself at result['a'][0]; JSON cannot encode a circular reference"
    )


def test_a_result_nested_too_deeply_is_rejected() -> None:
    value: dict[str, Any] = {}
    inner = value
    for _ in range(100_000):
        inner["x"] = {}
        inner = inner["x"]
    with pytest.raises(InvalidResultError, match="nested too deeply"):
        encode_result(value)


def test_a_batch_item_result_message_names_the_item() -> None:
    with pytest.raises(InvalidResultError) as caught:
        encode_result([1], method="handle_batch", index=2)
    assert str(caught.value) == (
        "handle_batch must return a list of dicts (or bytes, paths or cortado.Result), but item 2 is list"
    )
    with pytest.raises(InvalidResultError) as caught:
        encode_result({"x": float("nan")}, method="handle_batch", index=0)
    assert str(caught.value) == "handle_batch returned nan at result[0]['x'], but NaN and Infinity are not valid JSON"


def test_a_batch_result_must_be_a_list_with_one_result_per_payload() -> None:
    assert split_batch_result(({"a": 1}, {"b": 2}), 2) == [{"a": 1}, {"b": 2}]
    with pytest.raises(InvalidResultError) as caught:
        split_batch_result({"a": 1}, 1)
    assert str(caught.value) == "handle_batch must return a list with one result per payload, but returned dict"
    with pytest.raises(InvalidResultError) as caught:
        split_batch_result([{}], 3)
    assert str(caught.value) == "handle_batch must return a list with one result per payload (3), but returned 1"
