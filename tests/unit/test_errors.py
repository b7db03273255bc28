"""The runtime's errors and how a handler's exception is kept for the client (cortado.runtime.errors)."""

from __future__ import annotations

from cortado.runtime.errors import InvalidResultError, PayloadError, describe_exception


def test_payload_and_result_errors_are_value_errors() -> None:
    assert issubclass(PayloadError, ValueError)
    assert issubclass(InvalidResultError, ValueError)


# --- describe_exception ------------------------------------------------------------------------------------------


class Outer:
    class InnerError(Exception):
        pass


def test_an_exception_is_described_by_its_qualified_name_and_message() -> None:
    assert describe_exception(ValueError("bad input")) == ("ValueError", "bad input")
    assert describe_exception(Outer.InnerError("deep")) == ("Outer.InnerError", "deep")


def test_an_exception_without_a_message_is_described_by_its_repr() -> None:
    assert describe_exception(RuntimeError()) == ("RuntimeError", "RuntimeError()")


def test_an_exception_whose_str_fails_is_still_described() -> None:
    class BrokenError(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    kind, message = describe_exception(BrokenError())
    assert kind.endswith("BrokenError")
    assert "could not be read" in message
