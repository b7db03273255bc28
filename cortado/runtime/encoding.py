"""JSON as Cortado writes and reads it (compact, NaN refused, integers of any size kept exactly), and a handler's
result checked and encoded: ``encode_result`` for one result, ``split_batch_result`` for a ``handle_batch`` list."""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

from cortado.runtime.errors import InvalidResultError, type_name


def reject_constant(name: str) -> Any:
    """Refuse ``NaN``, ``Infinity`` and ``-Infinity``: a ``parse_constant`` for ``json.loads`` (ValueError always)."""
    raise ValueError(f"{name} is not allowed in JSON")


_SAFE_INT_BITS = 2000
"""Integers this small (at most 603 digits) convert to and from text under any digit limit Python allows (640+)."""

_BITS_TO_DIGITS = math.log10(2)


def int_to_decimal(value: int) -> str:
    """The decimal text of an integer of any size, whatever ``sys.set_int_max_str_digits`` says.

    Python refuses ``str()`` of integers past 4300 digits (a guard against quadratic conversion of untrusted text);
    a handler's own result is not untrusted input, so it is converted here half by half, each part under the limit.
    """
    if value < 0:
        return "-" + int_to_decimal(-value)
    if value.bit_length() <= _SAFE_INT_BITS:
        return int.__repr__(value)
    low_digits = int(value.bit_length() * _BITS_TO_DIGITS) // 2
    high, low = divmod(value, 10**low_digits)
    return int_to_decimal(high) + int_to_decimal(low).rjust(low_digits, "0")


def decimal_to_int(text: str) -> int:
    """The integer that decimal ``text`` (an optional ``-`` and digits) spells, of any length; ValueError otherwise."""
    digits = text.removeprefix("-")
    if not digits.isascii() or not digits.isdigit():
        raise ValueError(f"not an integer: {text[:40]!r}")
    if len(digits) <= _SAFE_INT_BITS * _BITS_TO_DIGITS:
        value = int(digits)
    else:
        low_digits = len(digits) // 2
        value = decimal_to_int(digits[:-low_digits]) * 10**low_digits + decimal_to_int(digits[-low_digits:])
    return -value if text.startswith("-") else value


def _is_long_int(value: Any) -> bool:
    """Whether ``value`` is an integer (not a bool) past Python's int-to-text digit limit."""
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    try:
        int.__repr__(value)
    except ValueError:
        return True
    return False


class _CircularError(Exception):
    """A container holds itself (JSON cannot encode it)."""


def _swap_long_ints(value: Any, marker: str, digits: dict[str, str], active: set[int]) -> Any:
    """A copy of ``value`` with each integer past the digit limit replaced by a unique marker string.

    ``digits`` collects marker -> the integer's decimal text. Dict keys that are such integers become that text,
    as ``json`` writes integer keys. Anything else is kept as it is, for ``json`` to accept or refuse.
    """
    if _is_long_int(value):
        key = f"{marker}{len(digits)}\0"
        digits[key] = int_to_decimal(value)
        return key
    if not isinstance(value, dict | list | tuple):
        return value
    if id(value) in active:
        raise _CircularError
    active.add(id(value))
    if isinstance(value, dict):
        copied: Any = {
            (int_to_decimal(k) if _is_long_int(k) else k): _swap_long_ints(v, marker, digits, active)
            for k, v in value.items()
        }
    else:
        copied = [_swap_long_ints(item, marker, digits, active) for item in value]
    active.discard(id(value))
    return copied


def dumps_json(
    value: Any,
    *,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = (",", ":"),
) -> str:
    """``json.dumps`` (compact by default, NaN refused) that also writes integers of any size, past Python's limit.

    Raises what ``json.dumps`` raises for anything else it cannot encode (ValueError for a circular reference).
    """
    options: dict[str, Any] = {
        "allow_nan": False,
        "ensure_ascii": ensure_ascii,
        "indent": indent,
        "separators": separators,
    }
    try:
        return json.dumps(value, **options)
    except ValueError:
        if not _find_long_int(value, set()):
            raise
    # Each long integer travels as a marker string no other string can render as (its NUL bytes are written as
    # \u0000 escapes, and a random part makes it unique), then the marker's JSON text becomes the digits.
    marker = f"\0{os.urandom(8).hex()}:"
    digits: dict[str, str] = {}
    try:
        swapped = _swap_long_ints(value, marker, digits, set())
    except _CircularError:
        raise ValueError("Circular reference detected") from None
    text = json.dumps(swapped, **options)
    rendered = {json.dumps(key, ensure_ascii=ensure_ascii): number for key, number in digits.items()}
    return re.sub('"\\\\u0000[0-9a-f]{16}:[0-9]+\\\\u0000"', lambda match: rendered.get(match[0], match[0]), text)


def _find_long_int(value: Any, seen: set[int]) -> bool:
    """Whether an integer past the digit limit sits anywhere in ``value`` (as a value or a dict key)."""
    if _is_long_int(value):
        return True
    if not isinstance(value, dict | list | tuple) or id(value) in seen:
        return False
    seen.add(id(value))
    if isinstance(value, dict):
        return any(_is_long_int(k) or _find_long_int(v, seen) for k, v in value.items())
    return any(_find_long_int(item, seen) for item in value)


def loads_json(text: str | bytes) -> Any:
    """``json.loads`` that reads integers of any size (the counterpart of ``dumps_json``), for trusted JSON such
    as a stored result; NaN and Infinity are refused."""
    return json.loads(text, parse_int=decimal_to_int, parse_constant=reject_constant)


def _find_unencodable(value: Any, path: str, seen: set[int]) -> tuple[str, str, Any] | None:
    """(path, problem, value) for the first thing json.dumps would refuse, met in the order it would meet them."""
    if isinstance(value, str) or value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None  # of any size: dumps_json writes those past the digit limit too
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, "nan", value)
    if not isinstance(value, dict | list | tuple):
        return path, "type", value
    if id(value) in seen:
        return path, "circular", value
    seen.add(id(value))
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}[{int_to_decimal(key) if _is_long_int(key) else repr(key)}]"
            if not isinstance(key, str | int | float | bool) and key is not None:
                return where, "key", key
            if isinstance(key, float) and not math.isfinite(key):
                return where, "nan", key
            found = _find_unencodable(item, where, seen)
            if found:
                return found
    else:
        for position, item in enumerate(value):
            found = _find_unencodable(item, f"{path}[{position}]", seen)
            if found:
                return found
    seen.discard(id(value))
    return None


def _unencodable_message(method: str, value: Any, root: str, error: Exception) -> str:
    """The message for a result ``json`` could not encode: what is wrong and where, else ``error``'s own words."""
    try:
        found = _find_unencodable(value, root, set())
    except RecursionError:
        found = None
    if found is None:
        return f"{method} returned a result that cannot be encoded as JSON: {error}"
    path, problem, culprit = found
    if problem == "nan":
        return f"{method} returned {culprit!r} at {path}, but NaN and Infinity are not valid JSON"
    if problem == "circular":
        return f"{method} returned a result that contains itself at {path}; JSON cannot encode a circular reference"
    kind = type_name(culprit)
    hint = " (convert NumPy values with .item() or .tolist())" if kind.startswith("numpy.") else ""
    if problem == "key":
        return f"{method} returned a key of type {kind} at {path}, but JSON object keys must be strings{hint}"
    return f"{method} returned a value of type {kind} at {path}, which is not JSON-serialisable{hint}"


def encode_result(value: Any, *, method: str = "handle_async", index: int | None = None) -> bytes:
    """The exact JSON bytes (UTF-8) of a handler's result, key order and integers of any size kept.

    The result must be a ``dict`` whose contents JSON can encode. Raises InvalidResultError naming the type that came
    back when it is not a dict, saying that NaN and Infinity are not valid JSON when one is inside, and naming the
    offending type and where it sits when something is not serialisable. ``method`` and ``index`` (a position in a
    ``handle_batch`` result) only shape the messages.
    """
    root = "result" if index is None else f"result[{index}]"
    if not isinstance(value, dict):
        if index is None:
            raise InvalidResultError(
                f"{method} must return a dict (or bytes, a pathlib.Path or a cortado.Result), "
                f"but returned {type_name(value)}"
            )
        raise InvalidResultError(
            f"{method} must return a list of dicts (or bytes, paths or cortado.Result), "
            f"but item {index} is {type_name(value)}"
        )
    try:
        text = dumps_json(value)
    except RecursionError:
        raise InvalidResultError(f"{method} returned a result nested too deeply to encode as JSON") from None
    except (TypeError, ValueError) as error:
        raise InvalidResultError(_unencodable_message(method, value, root, error)) from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates (e.g. echoed from a JSON payload's "\ud800") have no UTF-8 form; \u escapes keep them exactly.
        return dumps_json(value, ensure_ascii=True).encode("ascii")


def split_batch_result(value: Any, count: int) -> list[Any]:
    """The per-request results of a ``handle_batch`` call: a list or tuple with exactly ``count`` items.

    Raises InvalidResultError otherwise, naming what came back. Each item still needs ``encode_result``.
    """
    if not isinstance(value, list | tuple):
        raise InvalidResultError(
            f"handle_batch must return a list with one result per payload, but returned {type_name(value)}"
        )
    if len(value) != count:
        raise InvalidResultError(
            f"handle_batch must return a list with one result per payload ({count}), but returned {len(value)}"
        )
    return list(value)
