"""What the `cortado` command prints: progress on stderr, tables or JSON on stdout, and the dicts behind them."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from cortado import _names, webhooks
from cortado.records import STATUS_NAMES, result_reference, rfc3339
from cortado.runtime import loads_json
from cortado.v1 import control_pb2, records_pb2

API_STATES = {
    control_pb2.API_STATE_STARTING: "starting",
    control_pb2.API_STATE_LIVE: "live",
    control_pb2.API_STATE_FAILED: "failed",
    control_pb2.API_STATE_UNPLACEABLE: "unplaceable",
    control_pb2.API_STATE_IDLE: "idle",
}
"""The word the CLI prints for each API state (`unknown` for any other)."""

PRIORITY_LEVELS = tuple(_names.priority_name(priority) for priority in _names.PRIORITIES)
"""high, normal, low: the keys of ApiStatus.queued_by_priority, in dispatch order."""


def progress(message: str) -> None:
    """Print a progress line on stderr, flushed at once."""
    # Progress goes to stderr so that stdout stays parseable (`--output json`).
    print(message, file=sys.stderr, flush=True)


def show(options: argparse.Namespace, data: Any, human: Callable[[], None]) -> None:
    """With `-o json`, print data as indented JSON on stdout; otherwise call human, which prints for people."""
    if options.output == "json":
        print(json.dumps(data, indent=2))
    else:
        human()


def table(rows: Sequence[Sequence[object]], out: TextIO) -> None:
    """Print rows (the first one a header) to out, each column as wide as its widest cell, trailing blanks cut."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=out)


def status_dict(status: control_pb2.ApiStatus) -> dict[str, Any]:
    """An API's status as `-o json` shows it."""
    return {
        "name": status.name,
        "status": API_STATES.get(status.state, "unknown"),
        "version": status.version,
        "replicas": {"ready": status.ready_replicas, "desired": status.desired_replicas},
        "queued": status.queued,
        "queued_by_priority": {level: status.queued_by_priority.get(level, 0) for level in PRIORITY_LEVELS},
        "in_flight": status.in_flight,
        "completed": status.completed,
        "failed": status.failed,
        "webhooks_undelivered": status.webhooks_undelivered,
        "paused": status.paused,
        "message": status.message,
        "deployed_at": rfc3339(status.deployed_at) if status.HasField("deployed_at") else None,
    }


def view_dict(view: records_pb2.RequestView, api: str) -> dict[str, Any]:
    """A request's state as `result` and `cancel` print it: id, status, then the result or error and webhook."""
    out: dict[str, Any] = {"id": view.id, "status": STATUS_NAMES.get(view.status, "unknown")}
    if view.status == records_pb2.REQUEST_STATUS_COMPLETED and view.result_content_type:
        # Bytes, a file or large JSON: named, as GET /<api>/<id> names it (read it with --save).
        out.update(result_reference(view, api))
    elif view.status == records_pb2.REQUEST_STATUS_COMPLETED:
        # Integers of any size: a result may hold more digits than json.loads reads.
        out["result"] = loads_json(view.result_json)
    if view.HasField("finished_at"):
        out["timestamp"] = rfc3339(view.finished_at)
    if view.status == records_pb2.REQUEST_STATUS_FAILED:
        out["error"] = {"type": view.error.type, "message": view.error.message}
    if view.webhook.url:
        hook = view.webhook
        state = webhooks.STATE_NAMES.get(hook.state, "pending")
        out["webhook"] = {"url": hook.url, "state": state, "attempts": hook.attempts}
        if hook.last_error:
            out["webhook"]["last_error"] = hook.last_error
    return out


def format_log_line(raw: bytes) -> str:
    """A JSON log line for people: time, level, request id, message, then the extra keys."""
    try:
        line = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")
    if not isinstance(line, dict):
        return raw.decode("utf-8", "replace")
    labels = line.get("labels") or {}
    request = labels.get("request_id", "") if isinstance(labels, dict) else ""
    extra = {k: v for k, v in line.items() if k not in {"asctime", "levelname", "message", "process", "labels"}}
    text = f"{line.get('asctime', '')} {line.get('levelname', ''):<7} {request[:12]:<12} {line.get('message', '')}"
    if extra:
        text += " " + json.dumps(extra, ensure_ascii=False, default=str)
    return text
