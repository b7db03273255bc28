"""A request's ``payload``: decoding a body by its Content-Type (README, "Writing a handler"), and checking a body
exactly as decoding would judge it, a piece at a time, without building the payload (ingest, before it queues a
request)."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import email.message
import email.utils
import json
import sys
from collections.abc import Iterator
from typing import Any

from cortado._jsonscan import JsonLimitError, JsonScanner, JsonSyntaxError
from cortado.runtime.encoding import decimal_to_int, reject_constant
from cortado.runtime.errors import PayloadError
from cortado.runtime.limits import MAX_JSON_DEPTH, JsonLimits

_UNLIMITED = JsonLimits(max_depth=MAX_JSON_DEPTH, max_values=sys.maxsize)
_CHECK_CHUNK_BYTES = 16 * 1024
"""Body bytes checked between two chances for the event loop to run other work (check_payload)."""


def _parse_content_type(content_type: str | None) -> tuple[str, str | None]:
    """(media type in lower case, charset parameter or None), with quoting and RFC 2231 handled by the email package."""
    if not content_type or not content_type.strip():
        return "", None
    message = email.message.Message()
    message["content-type"] = content_type
    params = message.get_params() or [(content_type, "")]
    media_type = params[0][0].strip().lower()
    raw = message.get_param("charset")
    charset = email.utils.collapse_rfc2231_value(raw).strip() if raw is not None else None
    return media_type, charset or None


def _codec(charset: str) -> codecs.CodecInfo:
    """The text codec named ``charset``; PayloadError when Python knows none (or only a bytes-to-bytes one)."""
    try:
        info = codecs.lookup(charset)
    except LookupError:
        raise PayloadError(f"unknown charset '{charset}'") from None
    if not getattr(info, "_is_text_encoding", True):  # base64, zlib and friends are bytes-to-bytes codecs
        raise PayloadError(f"unknown charset '{charset}'")
    return info


def _decode_error(what: str, charset: str, error: UnicodeDecodeError, position: int) -> PayloadError:
    """The PayloadError for bytes of ``what`` that do not decode, naming the byte and its ``position`` in the body."""
    byte = error.object[error.start : error.start + 1].hex()
    return PayloadError(
        f"{what} is not valid {charset}: cannot decode byte 0x{byte} at position {position} ({error.reason})"
    )


def _decode_text(body: bytes, charset: str, what: str) -> str:
    """``body`` decoded whole as ``charset``; PayloadError, naming ``what`` was decoded, when it does not decode."""
    info = _codec(charset)
    try:
        return body.decode(info.name)
    except UnicodeDecodeError as error:
        raise _decode_error(what, charset, error, error.start) from None
    except UnicodeError as error:
        raise PayloadError(f"{what} is not valid {charset}: {error}") from None


_PIECEWISE_CODECS = frozenset(
    ["utf-8", "ascii", "iso8859-1", "cp1252", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"]
)
"""Codecs whose incremental decoder decodes and fails exactly as a whole decode does (no state across characters):
a body in one of them is checked a piece at a time. So is one in UTF-16 or UTF-32 (their byte order mark read
first); other charsets are decoded whole."""

_BYTE_ORDER_MARKS = {
    "utf-16": ((codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")),
    "utf-32": ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be")),
}


def _piecewise_codec(name: str, body: bytes) -> tuple[str, int] | None:
    """(codec, bytes to skip) that decodes body a piece at a time as codec ``name`` decodes it whole, if any."""
    if name in _PIECEWISE_CODECS:
        return name, 0
    for mark, codec in _BYTE_ORDER_MARKS.get(name, ()):
        if body.startswith(mark):
            return codec, len(mark)
    if name in _BYTE_ORDER_MARKS:  # no mark: the machine's byte order, as the whole decode assumes
        return f"{name}-{'le' if sys.byteorder == 'little' else 'be'}", 0
    return None


def _decode_pieces(body: bytes, charset: str, what: str) -> Iterator[str]:
    """The body decoded piece by piece (_CHECK_CHUNK_BYTES each), never whole where its codec allows;
    PayloadError as _decode_text, with the same message."""
    piecewise = _piecewise_codec(_codec(charset).name, body)
    if piecewise is None:
        text = _decode_text(body, charset, what)
        for start in range(0, len(text), _CHECK_CHUNK_BYTES):
            yield text[start : start + _CHECK_CHUNK_BYTES]
        return
    codec, skip = piecewise
    decoder = codecs.getincrementaldecoder(codec)("strict")
    view = memoryview(body)
    for start in range(skip, len(body), _CHECK_CHUNK_BYTES):
        pending, last = decoder.getstate()[0], start + _CHECK_CHUNK_BYTES >= len(body)
        try:
            yield decoder.decode(view[start : start + _CHECK_CHUNK_BYTES], final=last)
        except UnicodeDecodeError as error:
            # The decoder saw the bytes it kept from the last piece, then this piece.
            raise _decode_error(what, charset, error, start - len(pending) + error.start) from None


def _check_steps(content_type: str | None, body: bytes, limits: JsonLimits) -> Iterator[None]:
    """Check a body as ``decode_payload`` would decode it, a piece at a time (a step per piece), without building
    the payload: PayloadError when it would not decode or goes past ``limits``."""
    media_type, charset = _parse_content_type(content_type)
    if media_type == "text/plain":
        for _ in _decode_pieces(body, charset or "utf-8", "body"):
            yield
        return
    if media_type != "application/json":
        return
    if not body:
        raise PayloadError("body is empty, but Content-Type is application/json")
    scanner = JsonScanner(limits.max_depth, limits.max_values)
    pieces = _decode_pieces(body, charset or "utf-8", "JSON body")
    first = True
    try:
        for text in pieces:
            if first and text:
                text = text.removeprefix("\ufeff")
                first = False
            scanner.feed(text)
            yield
        scanner.close()
    except (JsonSyntaxError, JsonLimitError) as error:
        # decode_payload decodes the whole body before it parses: bytes that do not decode, even after the
        # problem found here, are what it reports.
        for _ in pieces:
            yield
        prefix = "body is not valid JSON" if isinstance(error, JsonSyntaxError) else "body refused"
        raise PayloadError(f"{prefix}: {error}") from None


def validate_payload(content_type: str | None, body: bytes, limits: JsonLimits = _UNLIMITED) -> None:
    """Raise PayloadError exactly when ``decode_payload`` would for this request, or when a JSON body goes past
    ``limits`` (none but MAX_JSON_DEPTH by default); return None otherwise. Builds no payload: its memory does
    not grow with the body's contents."""
    for _ in _check_steps(content_type, body, limits):
        pass


async def check_payload(content_type: str | None, body: bytes, limits: JsonLimits) -> None:
    """``validate_payload`` on an event loop: a large body is checked a piece at a time, other tasks running in
    between, so one request cannot hold the loop for long."""
    steps = _check_steps(content_type, body, limits)
    for _ in steps:
        await asyncio.sleep(0)


@contextlib.contextmanager
def _recursion_room(depth: int) -> Iterator[None]:
    """Room for json.loads to nest ``depth`` levels below the current frame (Python 3.11 counts its C recursion
    against the recursion limit)."""
    frame, used = sys._getframe(), 0
    while frame is not None:
        frame, used = frame.f_back, used + 1  # type: ignore[assignment]
    needed = used + depth + 100
    previous = sys.getrecursionlimit()
    if needed <= previous:
        yield
        return
    sys.setrecursionlimit(needed)
    try:
        yield
    finally:
        sys.setrecursionlimit(previous)


def _loads_payload(text: str) -> Any:
    """The JSON value ``text`` holds, integers of any size kept; PayloadError, worded as ingest's check, otherwise."""
    try:
        return json.loads(text, parse_constant=reject_constant)
    except (ValueError, RecursionError):
        pass
    # The message comes from the same check ingest made; a body that passes it is JSON that json.loads could
    # not build under this process's own limits (its recursion limit, its integer digit limit): build it anyway.
    scanner = JsonScanner(_UNLIMITED.max_depth, _UNLIMITED.max_values)
    try:
        scanner.feed(text)
        scanner.close()
    except JsonSyntaxError as error:
        raise PayloadError(f"body is not valid JSON: {error}") from None
    except JsonLimitError as error:
        raise PayloadError(f"body refused: {error}") from None
    with _recursion_room(scanner.deepest):
        return json.loads(text, parse_constant=reject_constant, parse_int=decimal_to_int)


def decode_payload(content_type: str | None, body: bytes) -> Any:
    """The ``payload`` a handler receives for a request body, by its Content-Type (README, "Writing a handler").

    ``application/json`` (any parameters) gives the parsed JSON value, decoded from the ``charset`` parameter (UTF-8
    when absent, a leading BOM tolerated), with integers of up to MAX_NUMBER_DIGITS digits kept exactly (whatever
    digit limit this process sets) and NaN/Infinity refused. ``text/plain`` gives a ``str`` decoded with its
    ``charset`` (UTF-8 when absent). Anything else, including no Content-Type, gives ``body`` unchanged. Media types
    compare case-insensitively. Raises PayloadError, with a message fit for the client, for an empty or invalid JSON
    body, an unknown charset, or bytes that do not decode in the charset: the same message ``validate_payload``
    gives, and for exactly the bodies it refuses (JSON nested up to MAX_JSON_DEPTH levels deep is decoded).
    """
    media_type, charset = _parse_content_type(content_type)
    if media_type == "text/plain":
        return _decode_text(body, charset or "utf-8", "body")
    if media_type != "application/json":
        return body
    if not body:
        raise PayloadError("body is empty, but Content-Type is application/json")
    text = _decode_text(body, charset or "utf-8", "JSON body")
    return _loads_payload(text.removeprefix("\ufeff"))
