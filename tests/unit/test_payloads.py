"""Payload decoding by Content-Type (cortado.runtime.payloads): JSON, text, everything else, and validate_payload
refusing exactly what decode_payload refuses."""

from __future__ import annotations

from typing import Any

import pytest

from cortado.runtime.errors import PayloadError
from cortado.runtime.payloads import decode_payload, validate_payload

# --- decode_payload: JSON ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        'application/json; charset="UTF-8"',
        "Application/JSON; Charset=UTF-8",
        "APPLICATION/JSON",
        "application/json ; charset = utf-8",
        "application/json;",
    ],
)
def test_json_payload_is_parsed_whatever_the_case_and_parameters(content_type: str) -> None:
    assert decode_payload(content_type, b'{"key": "value"}') == {"key": "value"}


@pytest.mark.parametrize(("body", "expected"), [(b"[1, 2]", [1, 2]), (b'"s"', "s"), (b"3.5", 3.5), (b"null", None)])
def test_json_payload_may_be_any_json_value(body: bytes, expected: Any) -> None:
    assert decode_payload("application/json", body) == expected


def test_json_payload_keeps_big_integers_exactly() -> None:
    value = decode_payload("application/json", b'{"n": 18446744073709551617}')
    assert value == {"n": 2**64 + 1}
    assert isinstance(value["n"], int)


def test_json_payload_keeps_key_order() -> None:
    assert list(decode_payload("application/json", b'{"z": 1, "a": 2, "m": 3}')) == ["z", "a", "m"]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_json_payload_with_nan_or_infinity_is_rejected(constant: str) -> None:
    with pytest.raises(PayloadError) as caught:
        decode_payload("application/json", f'{{"x": {constant}}}'.encode())
    assert str(caught.value) == f"body is not valid JSON: {constant} is not allowed in JSON"


def test_invalid_json_payload_is_rejected_with_its_position() -> None:
    with pytest.raises(PayloadError) as caught:
        decode_payload("application/json", b"not json")
    assert str(caught.value) == "body is not valid JSON: Expecting value at line 1 column 1 (char 0)"


def test_truncated_json_payload_is_rejected_with_its_position() -> None:
    with pytest.raises(PayloadError) as caught:
        decode_payload("application/json", b'{"a": 1,\n "b": ')
    assert str(caught.value) == "body is not valid JSON: Expecting value at line 2 column 7 (char 15)"


def test_empty_json_payload_is_rejected() -> None:
    with pytest.raises(PayloadError) as caught:
        decode_payload("application/json", b"")
    assert str(caught.value) == "body is empty, but Content-Type is application/json"


def test_json_payload_with_a_utf8_bom_is_accepted() -> None:
    assert decode_payload("application/json", b'\xef\xbb\xbf{"a": "\xc3\xa9"}') == {"a": "é"}


def test_json_payload_is_decoded_with_its_charset() -> None:
    body = '{"a": "é"}'.encode("utf-16")
    assert decode_payload("application/json; charset=utf-16", body) == {"a": "é"}
    assert decode_payload("application/json; charset=latin-1", b'{"a": "\xe9"}') == {"a": "é"}


def test_json_payload_that_is_not_utf8_is_rejected_with_the_byte_position() -> None:
    with pytest.raises(PayloadError) as caught:
        decode_payload("application/json", b'{"a": "\xe9"}')
    assert str(caught.value) == (
        "JSON body is not valid utf-8: cannot decode byte 0xe9 at position 7 (invalid continuation byte)"
    )


def test_json_payload_with_an_unknown_charset_is_rejected() -> None:
    with pytest.raises(PayloadError, match=r"^unknown charset 'klingon'$"):
        decode_payload("application/json; charset=klingon", b"{}")


def test_json_payload_nested_too_deeply_is_rejected() -> None:
    with pytest.raises(PayloadError) as caught:
        decode_payload("application/json", b"[" * 100_000 + b"]" * 100_000)
    assert str(caught.value) == "body refused: the JSON is nested more than 512 levels deep; the limit is 512 levels"


def test_json_payload_with_an_integer_past_the_digit_limit_is_rejected() -> None:
    with pytest.raises(PayloadError) as caught:
        decode_payload("application/json", b"1" * 5000)
    assert str(caught.value) == "body refused: a JSON number (at char 0) has more than 4300 digits; the limit is 4300"


# --- decode_payload: text ----------------------------------------------------------------------------------------


def test_text_payload_is_decoded_as_utf8_by_default() -> None:
    assert decode_payload("text/plain", "héllo wörld".encode()) == "héllo wörld"


def test_text_payload_is_decoded_with_its_charset() -> None:
    assert decode_payload("TEXT/plain;charset=latin-1", b"caf\xe9") == "café"
    assert decode_payload('text/plain; charset="ISO-8859-1"', b"caf\xe9") == "café"
    assert decode_payload("text/plain; format=flowed; charset=utf-16-le", "hi".encode("utf-16-le")) == "hi"


def test_text_payload_charset_may_be_quoted_and_spaced() -> None:
    assert decode_payload('Text/Plain ;  Charset = "UTF-8"', "é".encode()) == "é"


def test_text_payload_with_charset_us_ascii_rejects_a_non_ascii_byte() -> None:
    with pytest.raises(PayloadError) as caught:
        decode_payload("text/plain; charset=us-ascii", b"caf\xe9")
    assert (
        str(caught.value)
        == "body is not valid us-ascii: cannot decode byte 0xe9 at position 3 (ordinal not in range(128))"
    )


def test_text_payload_that_is_not_utf8_is_rejected_with_the_byte_position() -> None:
    with pytest.raises(PayloadError) as caught:
        decode_payload("text/plain", b"ok \xff")
    assert str(caught.value) == "body is not valid utf-8: cannot decode byte 0xff at position 3 (invalid start byte)"


@pytest.mark.parametrize("charset", ["klingon", "base64", "rot13"])
def test_text_payload_with_an_unknown_charset_is_rejected(charset: str) -> None:
    with pytest.raises(PayloadError) as caught:
        decode_payload(f"text/plain; charset={charset}", b"hello")
    assert str(caught.value) == f"unknown charset '{charset}'"


def test_empty_text_payload_is_an_empty_string() -> None:
    assert decode_payload("text/plain", b"") == ""


# --- decode_payload: everything else -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/octet-stream",
        "",
        None,
        "   ",
        "image/png",
        "text/html; charset=utf-8",
        "application/jsonx",
        "application/vnd.api+json",
        "not a media type",
    ],
)
def test_other_or_missing_content_types_give_the_raw_bytes(content_type: str | None) -> None:
    body = b"\x00\xff\xfe{not json"
    assert decode_payload(content_type, body) is body


def test_validate_payload_accepts_what_decode_payload_accepts() -> None:
    validate_payload("application/json", b"{}")
    validate_payload("application/octet-stream", b"\xff")
    validate_payload("text/plain", b"hi")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b"{"),
        ("application/json", b""),
        ("text/plain; charset=ascii", b"\xe9"),
        ("text/plain; charset=x", b""),
    ],
)
def test_validate_payload_rejects_exactly_what_decode_payload_rejects(content_type: str, body: bytes) -> None:
    with pytest.raises(PayloadError) as from_decode:
        decode_payload(content_type, body)
    with pytest.raises(PayloadError) as from_validate:
        validate_payload(content_type, body)
    assert str(from_validate.value) == str(from_decode.value)
