"""How configuration messages name the values they refuse."""

from __future__ import annotations

from typing import Any

# bool before int: a boolean is an int to isinstance.
_TYPE_NAMES: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    (list, "a list"),
    (dict, "a mapping"),
)


def type_name(value: Any) -> str:
    """The YAML name of the value's type, with its article: "null", "a boolean", "an integer", "a mapping", ...

    Other types are named by their Python class name.
    """
    if value is None:
        return "null"
    for kind, name in _TYPE_NAMES:
        if isinstance(value, kind):
            return name
    return type(value).__name__


def describe(value: Any) -> str:
    """Name the value's type and, for scalars, the value itself."""
    if isinstance(value, str | int | float) or value is None:
        return f"{type_name(value)}, {value!r}" if value is not None else "null"
    return type_name(value)


def format_number(value: float) -> str:
    """The number as written in a configuration: without ".0" when it is whole."""
    return str(int(value)) if value.is_integer() else str(value)


def one_line(text: str) -> str:
    """The text with every run of white space, line breaks included, made one space."""
    return " ".join(text.split())
