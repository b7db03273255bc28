"""Checking JSON text without building it: well-formedness, nesting depth, value count and number length.

``JsonScanner`` reads JSON text piece by piece (``feed``, then ``close``) and keeps only a few counters, the
stack of open containers and at most a few thousand characters of an unfinished token, whatever the size of
the document. It accepts exactly the documents Python's ``json.loads`` accepts (strict JSON: no NaN or
Infinity), except those past its limits, and refuses the others with ``json.loads``'s own message and position
("Expecting value", "Unterminated string starting at", ...), so a check made with it and a later ``json.loads``
of the same text never disagree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["MAX_NUMBER_DIGITS", "JsonLimitError", "JsonScanner", "JsonSyntaxError"]

MAX_NUMBER_DIGITS = 4300
"""Digits one JSON number may have (integer, fraction and exponent together): Python's default limit on
integer-text conversion (``sys.get_int_max_str_digits``), which guards against its quadratic cost. Fixed here,
so that a check and a later decode agree whatever limit each process sets for itself."""


class JsonSyntaxError(ValueError):
    """The text is not JSON: ``msg`` and ``pos`` (characters from the start) as ``json.JSONDecodeError`` has them.

    ``pos`` is None for the errors ``json.loads`` raises without a position (NaN, Infinity).
    """

    def __init__(self, msg: str, pos: int | None = None, lineno: int = 0, colno: int = 0) -> None:
        super().__init__(msg if pos is None else f"{msg} at line {lineno} column {colno} (char {pos})")
        self.msg = msg
        self.pos = pos
        self.lineno = lineno
        self.colno = colno


class JsonLimitError(ValueError):
    """The text is JSON, or might be, but goes past a limit; ``str(e)`` names the limit."""


_WS = re.compile(r"[ \t\n\r]*")
_STRING_CHARS = re.compile(r'[^"\\\x00-\x1f]*')
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_ESCAPES = frozenset('"\\/bfnrt')

# Fast paths: a run of simple values in an array, or of members with simple values in an object, checked and
# counted by one regular-expression match. A simple value is a scalar, an empty array or object, or an array or
# object of those ("flat"). Its strings hold no comma, colon, bracket, brace or control character, and its
# numbers are short and not followed by anything that could extend them, so the characters of a run count its
# values exactly: one per comma, plus one, plus one per non-empty array or object. Anything else takes the
# token-by-token path, which is always right.
_BLANK = r"[ \t\n\r]*"
_FAST_STRING = r'"(?:[^"\\\x00-\x1f,:\[\]{}]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"'
_FAST_NUMBER = r"-?(?:0|[1-9][0-9]{0,30})(?:\.[0-9]{1,30})?(?:[eE][-+]?[0-9]{1,30})?(?![0-9.eE+-])"
_FAST_SCALAR = rf"(?:{_FAST_NUMBER}|{_FAST_STRING}|true|false|null)"
_FAST_LEAF = rf"(?:{_FAST_SCALAR}|\[\]|\{{\}})"


_RUN_ITEMS = 255
"""Items one fast-run match takes at most (the scan goes on with the next match): the regular-expression engine
keeps a little state per repetition until the match ends, so this bounds its memory. A possessive repetition
(`*+`) would keep none, but Python 3.11.2's gives up earlier repetitions when a later one fails."""


def _separated(item: str) -> str:
    return rf"{item}(?:{_BLANK},{_BLANK}{item}){{0,{_RUN_ITEMS}}}"


def _member(value: str) -> str:
    return rf"{_FAST_STRING}{_BLANK}:{_BLANK}{value}"


_FAST_FLAT = (
    rf"(?:\[{_BLANK}{_separated(_FAST_LEAF)}{_BLANK}\]"
    rf"|\{{{_BLANK}{_separated(_member(_FAST_LEAF))}{_BLANK}\}})"
)
_FAST_VALUES = (_FAST_SCALAR, _FAST_LEAF, rf"(?:{_FAST_LEAF}|{_FAST_FLAT})")
"""Simple values by the nesting room left under the container they are in: none, one level, two or more."""
_ITEM_RUNS = [re.compile(_separated(value)) for value in _FAST_VALUES]
_MEMBER_RUNS = [re.compile(_separated(_member(value))) for value in _FAST_VALUES]


def _run_values(buf: str, start: int, stop: int) -> int:
    """Values in a fast run: its items (or its members' values) and everything they hold."""
    containers = buf.count("[", start, stop) + buf.count("{", start, stop)
    empty = buf.count("[]", start, stop) + buf.count("{}", start, stop)
    return buf.count(",", start, stop) + 1 + containers - empty


# What the scanner expects next.
_VALUE = 0  # a value (at the top, after ':' or after ',' in an array)
_FIRST_ITEM = 1  # a value or ']' (just after '[')
_FIRST_KEY = 2  # a key or '}' (just after '{')
_KEY = 3  # a key (after ',' in an object)
_COLON = 4
_AFTER_VALUE = 5  # ',' or the closing bracket; at the top: nothing but whitespace
_STRING = 6  # inside a string

_LITERALS = {"t": "true", "f": "false", "n": "null"}
_CONSTANTS = {"N": "NaN", "I": "Infinity"}
_LONGEST_NUMBER_TAIL = 3
"""Characters after a number that can still turn out to extend it (".", "e", "e+" before the next digit)."""


@dataclass
class _Position:
    """Line bookkeeping for the text already dropped from the buffer."""

    offset: int = 0  # characters before the buffer's first one
    lines: int = 0  # newlines among them
    last_newline: int = -1  # where the last of them is (-1: none)


class JsonScanner:
    """Checks one JSON document fed in pieces; ``close()`` ends it. Raises JsonSyntaxError or JsonLimitError.

    ``max_depth``: open arrays and objects at once (``[[1]]`` is 2 deep); ``max_values``: values in the whole
    document (every array, object, string, number, true, false and null, the top one included; object keys
    are not values); ``max_number_digits``: digits of any one number. After an error the scanner is spent.
    """

    def __init__(self, max_depth: int, max_values: int, max_number_digits: int = MAX_NUMBER_DIGITS) -> None:
        self.max_depth = max_depth
        self.max_values = max_values
        self.max_number_digits = max_number_digits
        self.values = 0
        self.deepest = 0
        self._stack: list[str] = []  # "[" or "{" per open container
        self._state = _VALUE
        self._string_start = 0  # where the open string began (absolute)
        self._string_is_key = False
        self._buffer = ""  # text not consumed yet: at most an unfinished token
        self._at = _Position()
        self._done = False

    # --- feeding ------------------------------------------------------------------------------------------------

    def feed(self, text: str) -> None:
        """Check the next piece of the document."""
        self._scan(self._buffer + text if self._buffer else text, final=False)

    def close(self) -> None:
        """The document ends here: raise unless it was one complete JSON value."""
        self._scan(self._buffer, final=True)
        if self._state == _STRING:
            raise self._error("Unterminated string starting at", self._string_start)
        end = self._at.offset
        if self._state in (_VALUE, _FIRST_ITEM):
            raise self._error("Expecting value", end)
        if self._state in (_FIRST_KEY, _KEY):
            raise self._error("Expecting property name enclosed in double quotes", end)
        if self._state == _COLON:
            raise self._error("Expecting ':' delimiter", end)
        if self._stack:
            raise self._error("Expecting ',' delimiter", end)

    # --- errors ---------------------------------------------------------------------------------------------------

    def _error(self, msg: str, pos: int, buffer: str = "") -> JsonSyntaxError:
        """json.loads's error at absolute position pos, which lies in buffer (the text being scanned) or before."""
        at = self._at
        relative = pos - at.offset
        lines, last_newline = at.lines, at.last_newline
        if relative > 0 and buffer:
            lines += buffer.count("\n", 0, relative)
            found = buffer.rfind("\n", 0, relative)
            if found >= 0:
                last_newline = at.offset + found
        self._done = True
        return JsonSyntaxError(msg, pos, lines + 1, pos - last_newline)

    def _too_deep(self) -> JsonLimitError:
        self._done = True
        depth = self.max_depth
        return JsonLimitError(f"the JSON is nested more than {depth} levels deep; the limit is {depth} levels")

    def _too_many(self) -> JsonLimitError:
        self._done = True
        return JsonLimitError(
            f"the JSON holds more than {self.max_values:,} values; the limit is {self.max_values:,} values "
            "(each array, object, string, number, true, false and null counts one)"
        )

    def _too_long(self, pos: int) -> JsonLimitError:
        self._done = True
        digits = self.max_number_digits
        return JsonLimitError(f"a JSON number (at char {pos}) has more than {digits} digits; the limit is {digits}")

    # --- the scan -----------------------------------------------------------------------------------------------

    def _scan(self, buf: str, final: bool) -> None:
        if self._done:
            raise RuntimeError("the scanner is spent")
        pos = self._step(buf, final)
        # Drop what was consumed, keeping its line count for later messages.
        if pos:
            lines = buf.count("\n", 0, pos)
            if lines:
                self._at.lines += lines
                self._at.last_newline = self._at.offset + buf.rfind("\n", 0, pos)
            self._at.offset += pos
        self._buffer = buf[pos:]

    def _step(self, buf: str, final: bool) -> int:
        """Scan buf from its start; the position up to which it was consumed (the rest waits for more text)."""
        end = len(buf)
        base = self._at.offset
        stack = self._stack
        state = self._state
        pos = 0
        while True:
            if state == _STRING:
                chars = _STRING_CHARS.match(buf, pos)
                pos = chars.end() if chars else pos
                if pos == end:
                    break
                char = buf[pos]
                if char == '"':
                    pos += 1
                    state = _COLON if self._string_is_key else _AFTER_VALUE
                    continue
                if char != "\\":
                    raise self._error("Invalid control character at", base + pos, buf)
                if pos + 1 == end:
                    break  # the escape goes on in the next piece (or the string is unterminated)
                escape = buf[pos + 1]
                if escape == "u":
                    # json.loads wants four hex digits and at least one more character after them.
                    if end - pos <= 6 and not final:
                        break
                    if end - pos > 6 and _HEX4.match(buf, pos + 2):
                        pos += 6
                        continue
                    raise self._error("Invalid \\uXXXX escape", base + pos + 1, buf)
                if escape not in _ESCAPES:
                    raise self._error("Invalid \\escape", base + pos, buf)
                pos += 2
                continue

            blank = _WS.match(buf, pos)
            pos = blank.end() if blank else pos
            if pos == end:
                break
            char = buf[pos]

            if state == _AFTER_VALUE:
                if not stack:
                    raise self._error("Extra data", base + pos, buf)
                if char == ",":
                    pos += 1
                    state = _VALUE if stack[-1] == "[" else _KEY
                    continue
                if char == ("]" if stack[-1] == "[" else "}"):
                    pos += 1
                    stack.pop()
                    continue
                raise self._error("Expecting ',' delimiter", base + pos, buf)

            if state == _COLON:
                if char != ":":
                    raise self._error("Expecting ':' delimiter", base + pos, buf)
                pos += 1
                state = _VALUE
                continue

            if state in (_FIRST_KEY, _KEY):
                if char == "}" and state == _FIRST_KEY:
                    pos += 1
                    stack.pop()
                    state = _AFTER_VALUE
                    continue
                if char != '"':
                    raise self._error("Expecting property name enclosed in double quotes", base + pos, buf)
                room = min(self.max_depth - len(stack), 2)
                run = _MEMBER_RUNS[room].match(buf, pos)
                if run is not None:
                    stop = self._run_end(buf, pos, run.end(), final)
                    if stop > pos:
                        self._count(_run_values(buf, pos, stop), len(stack) + room)
                        pos = stop
                        state = _AFTER_VALUE
                        continue
                pos += 1
                self._string_start = base + pos - 1
                self._string_is_key = True
                state = _STRING
                continue

            # A value is expected (_VALUE or _FIRST_ITEM).
            if char == "\ufeff" and base + pos == 0:
                raise self._error("Unexpected UTF-8 BOM (decode using utf-8-sig)", 0)
            if char == "]" and state == _FIRST_ITEM:
                pos += 1
                stack.pop()
                state = _AFTER_VALUE
                continue
            if stack and stack[-1] == "[":
                room = min(self.max_depth - len(stack), 2)
                run = _ITEM_RUNS[room].match(buf, pos)
                if run is not None:
                    stop = self._run_end(buf, pos, run.end(), final)
                    if stop > pos:
                        self._count(_run_values(buf, pos, stop), len(stack) + room)
                        pos = stop
                        state = _AFTER_VALUE
                        continue
            self.values += 1
            if self.values > self.max_values:
                raise self._too_many()
            if char in "[{":
                if len(stack) >= self.max_depth:
                    raise self._too_deep()
                stack.append(char)
                self.deepest = max(self.deepest, len(stack))
                pos += 1
                state = _FIRST_ITEM if char == "[" else _FIRST_KEY
                continue
            if char == '"':
                self._string_start = base + pos
                self._string_is_key = False
                pos += 1
                state = _STRING
                continue
            taken = self._scalar(buf, pos, final)
            if taken is None:
                self.values -= 1  # counted again when the rest of it arrives
                break
            pos = taken
            state = _AFTER_VALUE

        self._state = state
        return pos

    @staticmethod
    def _run_end(buf: str, start: int, stop: int, final: bool) -> int:
        """Where a fast run may end: where it matched, unless it ends with a number that touches the end of the
        piece (more digits may follow): then before that number (start when it is the run's only value)."""
        if final or stop < len(buf) or not "0" <= buf[stop - 1] <= "9":
            return stop
        comma = buf.rfind(",", start, stop)  # numbers hold no comma: this one comes just before the last value
        return max(comma, start)

    def _count(self, values: int, depth: int) -> None:
        self.values += values
        if self.values > self.max_values:
            raise self._too_many()
        self.deepest = max(self.deepest, depth)

    def _scalar(self, buf: str, pos: int, final: bool) -> int | None:
        """Scan a number or literal at pos: where it ends, or None when it may go on in the next piece."""
        end = len(buf)
        char = buf[pos]
        base = self._at.offset
        if char == "-" or "0" <= char <= "9":
            if char == "-" and buf.startswith("-Infinity", pos):
                raise JsonSyntaxError("-Infinity is not allowed in JSON")
            match = _NUMBER.match(buf, pos)
            if match is None:
                if not final and end - pos < len("-Infinity") and "-Infinity".startswith(buf[pos:]):
                    return None
                raise self._error("Expecting value", base + pos, buf)
            stop = match.end()
            number = buf[pos:stop]
            if len(number) > self.max_number_digits:
                digits = sum(c.isdigit() for c in number)
                if digits > self.max_number_digits:
                    raise self._too_long(base + pos)
            if not final and stop + _LONGEST_NUMBER_TAIL >= end:
                return None
            return stop
        literal = _LITERALS.get(char)
        if literal is not None:
            if buf.startswith(literal, pos):
                return pos + len(literal)
            if not final and end - pos < len(literal) and literal.startswith(buf[pos:]):
                return None
            raise self._error("Expecting value", base + pos, buf)
        constant = _CONSTANTS.get(char)
        if constant is not None:
            if buf.startswith(constant, pos):
                raise JsonSyntaxError(f"{constant} is not allowed in JSON")
            if not final and end - pos < len(constant) and constant.startswith(buf[pos:]):
                return None
        raise self._error("Expecting value", base + pos, buf)
