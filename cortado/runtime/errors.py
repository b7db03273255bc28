"""The handler contract's errors, whose ``str()`` is a complete user-facing message, and how messages name things.

``describe_exception`` is how a handler's own exception is kept for the client; ``type_name`` is how every message
of the runtime names the type of a value that came back.
"""

from __future__ import annotations


class HandlerDefinitionError(Exception):
    """The handler file cannot be used as a handler; str(e) is a complete user-facing message."""


class PayloadError(ValueError):
    """A request body does not decode under its Content-Type; str(e) is a complete user-facing message."""


class InvalidResultError(ValueError):
    """A handler returned something that is not a JSON-serialisable dict; str(e) is a complete user-facing message."""


def type_name(value: object) -> str:
    """The type of ``value`` as messages name it: ``None``, a builtin's bare name, or ``module.QualName``."""
    kind = type(value)
    if kind is type(None):
        return "None"
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def describe_exception(exc: BaseException) -> tuple[str, str]:
    """(type, message) of an exception as kept for the client: the class's ``__qualname__`` and ``str(exc)``.

    The message falls back to ``repr(exc)`` when ``str`` is empty, and never raises, even for a broken ``__str__``.
    """
    kind = type(exc).__qualname__
    try:
        message = str(exc) or repr(exc)
    except Exception:
        message = f"<{kind} whose message could not be read>"
    return kind, message
