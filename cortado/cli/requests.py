"""The commands that act on requests: submit, cancel, result; and an API's logs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cortado.cli.connection import connect_public, connect_scheduler
from cortado.cli.errors import fail
from cortado.cli.output import format_log_line, show, view_dict
from cortado.client import Client
from cortado.runtime import dumps_json
from cortado.v1 import records_pb2


def _payload(options: argparse.Namespace) -> tuple[bytes, str]:
    """(payload, its content type) from --json (checked to parse), --text or --file (- for stdin)."""
    if options.json is not None:
        try:
            json.loads(options.json)
        except ValueError as exc:
            fail(f"--json is not valid JSON: {exc}")
        return options.json.encode(), "application/json"
    if options.text is not None:
        return options.text.encode(), "text/plain; charset=utf-8"
    if options.file is not None:
        path = Path(options.file)
        try:
            data = sys.stdin.buffer.read() if options.file == "-" else path.read_bytes()
        except OSError as exc:
            fail(f"cannot read {options.file}: {exc.strerror}")
        content_type = options.content_type or (
            "application/json" if path.suffix == ".json" else "application/octet-stream"
        )
        return data, content_type
    fail("give the payload with --json, --text or --file")


def cmd_submit(options: argparse.Namespace) -> int:
    """Submit one request; print its id."""
    data, content_type = _payload(options)
    with connect_public(options) as client:
        request_id = client.submit(
            options.api,
            data,
            options.content_type or content_type,
            priority=options.priority,
            webhook=options.webhook,
        )
    show(options, {"id": request_id}, lambda: print(request_id))
    return 0


def cmd_cancel(options: argparse.Namespace) -> int:
    """Cancel a request; print its state (cancelled). Exit 1 when it had finished otherwise, or is unknown."""
    with connect_public(options) as client:
        view = client.cancel(options.api, options.id)
    data = view_dict(view, options.api)
    print(dumps_json(data, ensure_ascii=True, indent=2 if options.output == "json" else None, separators=None))
    return 0


def cmd_result(options: argparse.Namespace) -> int:
    """A request's state; with --wait, its final state. Exit 0 completed, 1 failed or not found, 3 unfinished."""
    with connect_public(options) as client:
        if options.wait:
            view = client.wait(options.api, options.id, timeout=options.timeout)
        else:
            view = client.get(options.api, options.id)
        data = view_dict(view, options.api)
        if options.save and view.status == records_pb2.REQUEST_STATUS_COMPLETED:
            data["saved"] = str(_save_result(client, options.api, options.id, Path(options.save)))
    print(dumps_json(data, ensure_ascii=True, indent=2 if options.output == "json" else None, separators=None))
    if view.status == records_pb2.REQUEST_STATUS_COMPLETED:
        return 0
    if view.status in (records_pb2.REQUEST_STATUS_FAILED, records_pb2.REQUEST_STATUS_NOT_FOUND):
        return 1
    return 3


def _save_result(client: Client, api: str, request_id: str, target: Path) -> Path:
    """Write the request's result (streamed, any size) to target, through a temporary file beside it."""
    _, chunks = client.read_result(api, request_id)
    partial = target.with_name(f".{target.name}.partial")
    try:
        with partial.open("wb") as out:
            for chunk in chunks:
                out.write(chunk)
        partial.replace(target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        fail(f"cannot write {target}: {exc.strerror}")
    return target


def cmd_logs(options: argparse.Namespace) -> int:
    """An API's recent log lines; with --follow, new ones as they come (Ctrl-C stops)."""
    with connect_scheduler(options) as scheduler:
        for raw in scheduler.logs(options.api, options.tail, options.follow):
            print(raw.decode("utf-8", "replace") if options.output == "json" else format_log_line(raw), flush=True)
    return 0
