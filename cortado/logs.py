"""JSON log lines, one object per line, for the services and handler processes."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

RESERVED_KEYS = frozenset({"asctime", "levelname", "message", "labels", "process"})

# Attributes every LogRecord has; anything else on a record came from `extra`.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats records as `{"asctime", "levelname", "message", "process", "labels", ...extra}`.

    Keys given through `extra` are flattened one level into the line; they never
    replace the reserved keys.
    """

    def __init__(self, labels: dict[str, str] | None = None) -> None:
        super().__init__()
        self.labels = dict(labels or {})

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "asctime": self.formatTime(record),
            "levelname": record.levelname,
            "message": record.getMessage(),
            "process": record.process,
            "labels": {**self.labels, **getattr(record, "labels", {})},
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and key not in RESERVED_KEYS:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def setup_logging(service: str, level: str | None = None) -> None:
    """Send the root logger's records to stderr as JSON lines labelled with the service name."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter({"service": service}))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("CORTADO_LOG_LEVEL") or "INFO").upper())
