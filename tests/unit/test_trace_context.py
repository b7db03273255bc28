"""The trace context flows without an exporter: an incoming traceparent is continued, else a new trace starts."""

from __future__ import annotations

import secrets

from opentelemetry import trace

from cortado import _tracing


def trace_id(ctx: object) -> str:
    return format(trace.get_current_span(ctx).get_span_context().trace_id, "032x")  # type: ignore[arg-type]


def test_an_incoming_traceparent_is_continued() -> None:
    incoming = secrets.token_hex(16)
    ctx = _tracing.continued({"traceparent": f"00-{incoming}-{secrets.token_hex(8)}-01"})
    assert trace_id(ctx) == incoming


def test_no_traceparent_or_a_malformed_one_starts_a_new_trace_each_time() -> None:
    ids = {trace_id(_tracing.continued(headers)) for headers in ({}, None, {"traceparent": "00-nonsense-01"})}
    assert len(ids) == 3
    assert all(len(i) == 32 and int(i, 16) for i in ids), ids


def test_the_current_trace_goes_into_nats_headers_with_or_without_an_exporter() -> None:
    assert _tracing.inject_headers({"Nats-Msg-Id": "x"}) == {"Nats-Msg-Id": "x"}
    with _tracing.attached(_tracing.new_context()):
        headers = _tracing.inject_headers({"Nats-Msg-Id": "x"})
        assert headers["traceparent"].split("-")[1] == format(
            trace.get_current_span().get_span_context().trace_id, "032x"
        )
