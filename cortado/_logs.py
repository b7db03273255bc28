"""JSON log lines, one object per line, for the services and for handlers (`from cortado import log`)."""

from __future__ import annotations

import contextvars
import io
import json
import logging
import os
import sys
import threading
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace

RESERVED_KEYS = frozenset({"asctime", "levelname", "message", "labels", "process"})
"""Keys of every line that `extra` may not replace."""

MAX_LINE_BYTES = 5 * 1024 * 1024
"""Longer log lines are dropped, as Cortex did."""

EXTRA_ATTR = "_cortado_extra"

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("cortado_request_id", default=None)
"""The id of the request the current handler call works on (set by the handler process)."""


class ExtraLogger(logging.Logger):
    """A Logger whose `extra` keys may be any name (Cortex flattened them into the line).

    The standard Logger refuses `extra` keys that clash with LogRecord attributes
    ("name", "message", ...); this one keeps them aside for the formatter, and
    drops the reserved keys with a one-time warning.
    """

    _warned: set[str] = set()
    _warned_lock = threading.Lock()

    def makeRecord(
        self,
        name: str,
        level: int,
        fn: str,
        lno: int,
        msg: object,
        args: Any,
        exc_info: Any,
        func: str | None = None,
        extra: Mapping[str, object] | None = None,
        sinfo: str | None = None,
    ) -> logging.LogRecord:
        record = super().makeRecord(name, level, fn, lno, msg, args, exc_info, func, None, sinfo)
        kept: dict[str, object] = {}
        for key, value in (extra or {}).items():
            if key in RESERVED_KEYS:
                self._warn_once(key)
            else:
                kept[key] = value
        setattr(record, EXTRA_ATTR, kept)
        return record

    def _warn_once(self, key: str) -> None:
        with self._warned_lock:
            if key in self._warned:
                return
            self._warned.add(key)
        self.warning(f"log extra key {key!r} is reserved and was ignored; reserved keys: {sorted(RESERVED_KEYS)}")


class JsonFormatter(logging.Formatter):
    """Formats records as `{"asctime", "levelname", "message", "process", "labels", ...extra}`.

    `labels` holds the fixed labels (service, or api and replica) plus the
    current request id; keys given through `extra` are flattened one level into
    the line and never replace the reserved keys.
    """

    def __init__(self, labels: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.labels = dict(labels or {})

    def format(self, record: logging.LogRecord) -> str:
        labels = dict(self.labels)
        request_id = request_id_var.get()
        if request_id:
            labels["request_id"] = request_id
        line: dict[str, Any] = {
            "asctime": self.formatTime(record),
            "levelname": record.levelname,
            "message": record.getMessage(),
            "process": record.process,
            "labels": labels,
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            line["trace_id"] = format(span.trace_id, "032x")
            line["span_id"] = format(span.span_id, "016x")
        extra = getattr(record, EXTRA_ATTR, None)
        if extra is None:
            # Records from the standard Logger carry extra as attributes.
            extra = {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS}
        for key, value in extra.items():
            if key not in RESERVED_KEYS:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {
    "message",
    "asctime",
    EXTRA_ATTR,
}


class SizeLimitedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that drops formatted lines over MAX_LINE_BYTES, saying so in a short line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        if len(text.encode("utf-8", "replace")) > MAX_LINE_BYTES:
            notice = logging.LogRecord(
                record.name, logging.WARNING, "", 0, "a log line over 5 MB was dropped", (), None
            )
            text = self.format(notice)
        try:
            self.stream.write(text + "\n")
            self.flush()
        except Exception:
            self.handleError(record)


def setup_logging(service: str, level: str | None = None) -> None:
    """Send the root logger's records to stderr as JSON lines labelled with the service name."""
    handler = SizeLimitedHandler(sys.stderr)
    handler.setFormatter(JsonFormatter({"service": service}))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("CORTADO_LOG_LEVEL") or "INFO").upper())


HANDLER_LOGGER_NAME = "cortado.handler"


def _make_handler_logger() -> logging.Logger:
    manager = logging.Logger.manager
    previous = manager.loggerClass
    # The handler logger alone uses ExtraLogger; every other logger stays standard.
    manager.setLoggerClass(ExtraLogger)
    try:
        logger = logging.getLogger(HANDLER_LOGGER_NAME)
    finally:
        manager.setLoggerClass(previous or logging.Logger)
    return logger


handler_logger = _make_handler_logger()
"""The logger handlers use (`from cortado import log`); configured by configure_handler_logging()."""


def configure_handler_logging(labels: Mapping[str, str], level: str = "info") -> None:
    """In a handler process: handler_logger and the root logger write JSON lines with these labels to stdout."""
    handler = SizeLimitedHandler(sys.__stdout__)
    handler.setFormatter(JsonFormatter(labels))
    handler_logger.handlers[:] = [handler]
    handler_logger.propagate = False
    handler_logger.setLevel(level.upper())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


class PrintToLog(io.TextIOBase):
    """A text stream whose complete lines become INFO lines of handler_logger (so `print` is logged too)."""

    def __init__(self) -> None:
        self._buffer = threading.local()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        pending = getattr(self._buffer, "text", "") + text
        *lines, rest = pending.split("\n")
        self._buffer.text = rest
        for line in lines:
            handler_logger.info(line)
        return len(text)

    def flush(self) -> None:
        rest = getattr(self._buffer, "text", "")
        if rest:
            self._buffer.text = ""
            handler_logger.info(rest)
