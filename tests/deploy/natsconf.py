"""A reader of nats-server's configuration format, enough for deploy/'s files and cortado._natsauth's output.

Maps (`key: value`, `key = value`, `key value`, `key { ... }`), arrays, quoted and bare strings, `$NAME` variable
references (kept as `Variable`, not resolved), `#` and `//` comments; entries and items are separated by newlines,
commas or semicolons. Numbers, sizes and durations stay strings. A key given twice is an error here (nats-server
keeps the last one, which in a hand-written file is almost always a mistake).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

_BARE_END = set(" \t\r\n,;]}#")
_KEY_END = set(" \t\r\n:={[")


@dataclass(frozen=True)
class Variable:
    """`$NAME`: nats-server fills it in from a variable of the file or from the environment."""

    name: str


class NatsConfError(ValueError):
    """The text is not a configuration this reader understands."""


def parse(text: str) -> dict[str, Any]:
    """The configuration as nested dicts and lists."""
    return _Reader(text).document()


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str) -> NatsConfError:
        line = self.text.count("\n", 0, self.pos) + 1
        return NatsConfError(f"line {line}: {message}")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip(self, separators: bool) -> None:
        """Past blanks and comments; past newlines, commas and semicolons too when separators."""
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in " \t\r" or (separators and char in "\n,;"):
                self.pos += 1
            elif char == "#" or self.text.startswith("//", self.pos):
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            else:
                return

    def document(self) -> dict[str, Any]:
        entries = self.entries(closing="")
        if self.pos < len(self.text):
            raise self.fail(f"unexpected {self.peek()!r}")
        return entries

    def entries(self, closing: str) -> dict[str, Any]:
        found: dict[str, Any] = {}
        while True:
            self.skip(separators=True)
            if self.pos >= len(self.text) or self.peek() == closing:
                return found
            key = self.key()
            self.skip(separators=False)
            if self.peek() in (":", "="):
                self.pos += 1
                self.skip(separators=False)
            if key in found:
                raise self.fail(f"{key!r} is set twice")
            found[key] = self.value()

    def key(self) -> str:
        if self.peek() in ('"', "'"):
            return self.quoted()
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in _KEY_END:
            self.pos += 1
        if self.pos == start:
            raise self.fail(f"expected a key, found {self.peek()!r}")
        return self.text[start : self.pos]

    def value(self) -> Any:
        char = self.peek()
        if char == "{":
            self.pos += 1
            entries = self.entries(closing="}")
            self.expect("}")
            return entries
        if char == "[":
            self.pos += 1
            items: list[Any] = []
            while True:
                self.skip(separators=True)
                if self.peek() == "]":
                    self.pos += 1
                    return items
                if not self.peek():
                    raise self.fail("unclosed [")
                items.append(self.value())
        if char in ('"', "'"):
            return self.quoted()
        if char == "$":
            self.pos += 1
            name = self.bare()
            if not name.replace("_", "").isalnum():
                raise self.fail(f"bad variable name {name!r}")
            return Variable(name)
        bare = self.bare()
        if not bare:
            raise self.fail(f"expected a value, found {char!r}")
        return bare

    def bare(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in _BARE_END:
            self.pos += 1
        return self.text[start : self.pos].strip()

    def quoted(self) -> str:
        quote = self.peek()
        end = self.pos + 1
        while end < len(self.text) and self.text[end] != quote:
            end += 2 if quote == '"' and self.text[end] == "\\" else 1
        if end >= len(self.text):
            raise self.fail("unclosed string")
        raw = self.text[self.pos : end + 1]
        self.pos = end + 1
        return str(json.loads(raw)) if quote == '"' else raw[1:-1]

    def expect(self, char: str) -> None:
        self.skip(separators=True)
        if self.peek() != char:
            raise self.fail(f"expected {char!r}, found {self.peek()!r}")
        self.pos += 1
