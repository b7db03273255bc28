"""The commands that act on deployed APIs: deploy, get, describe, delete, pause and resume, dead letters and replay,
webhook-secret rotate."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from cortado.cli.connection import connect_scheduler
from cortado.cli.errors import fail
from cortado.cli.output import API_STATES, PRIORITY_LEVELS, progress, show, status_dict, table
from cortado.client import SchedulerClient
from cortado.project import ConfigError, collect_files, find_config, human_size, pack_project, parse_duration
from cortado.records import rfc3339
from cortado.v1 import control_pb2


def _serving(status: control_pb2.ApiStatus) -> bool:
    """Whether the API takes requests now: a replica is ready, or it is idle at zero and wakes on the first one."""
    return bool(status.ready_replicas) or status.state == control_pb2.API_STATE_IDLE


def cmd_deploy(options: argparse.Namespace) -> int:
    """Package the project folder, deploy its APIs and wait until they serve (or are idle at zero replicas)."""
    project = Path(options.dir).resolve()
    if not project.is_dir():
        fail(f"{options.dir} is not a folder")
    config = find_config(project)
    files = collect_files(project, config.name)
    count = len(files)
    progress(
        f"packaging {count} file{'' if count == 1 else 's'} "
        f"({human_size(sum(size for _, size in files))}) from {project}"
    )
    bundle = pack_project(project, config.name)
    with connect_scheduler(options) as scheduler:
        progress(f"uploading {human_size(len(bundle))} to the scheduler ...")
        reply = scheduler.deploy_bundle(config.name, config.read_bytes(), bundle)
        for notice in reply.notices:
            progress(f"notice: {notice}")
        secrets = dict(reply.webhook_secrets)
        if options.output != "json":
            # At once, with the progress (stdout keeps the APIs' states): the secret is shown this one time,
            # whatever happens while waiting. With -o json it is in the JSON, each API's `webhook_secret`.
            _print_webhook_secrets(secrets, sys.stderr)
        names = [api.name for api in reply.apis]
        try:
            statuses = (
                _wait_for(scheduler, names, options.timeout) if options.wait else [scheduler.describe(n) for n in names]
            )
        except BaseException:
            if options.output == "json":
                _print_webhook_secrets(secrets, sys.stderr)
            raise
    data = [status_dict(s) for s in statuses]
    for entry in data:
        if entry["name"] in secrets:
            entry["webhook_secret"] = secrets[entry["name"]]

    def human() -> None:
        for status in statuses:
            state = API_STATES.get(status.state, "unknown")
            print(
                f"{status.name}: {state} (version {status.version})" + (f": {status.message}" if status.message else "")
            )

    show(options, data, human)
    bad = [s for s in statuses if s.state in (control_pb2.API_STATE_FAILED, control_pb2.API_STATE_UNPLACEABLE)]
    return 1 if bad or (options.wait and not all(_serving(s) for s in statuses)) else 0


def _print_webhook_secrets(secrets: dict[str, str], out: TextIO) -> None:
    """Each new webhook signing secret, with what to do with it (it is never shown again)."""
    for api, secret in sorted(secrets.items()):
        print(f"{api}: webhook signing secret {secret}", file=out)
        print(
            f"  keep it now, where your webhook receiver can read it: it is shown only this once "
            f"(`cortado webhook-secret rotate {api}` makes a new one)",
            file=out,
            flush=True,
        )


def _wait_for(scheduler: SchedulerClient, names: list[str], timeout: float) -> list[control_pb2.ApiStatus]:
    """The APIs' statuses once each serves, failed or cannot be placed, or once timeout seconds have passed;
    each change of state is shown as progress meanwhile."""
    deadline = time.monotonic() + timeout
    shown: dict[str, str] = {}
    while True:
        statuses = [scheduler.describe(name) for name in names]
        for status in statuses:
            line = API_STATES.get(status.state, "unknown")
            if shown.get(status.name) != line:
                progress(f"{status.name}: {line}")
                shown[status.name] = line
        settled = all(
            _serving(s) or s.state in (control_pb2.API_STATE_FAILED, control_pb2.API_STATE_UNPLACEABLE)
            for s in statuses
        )
        if settled or time.monotonic() > deadline:
            return statuses
        time.sleep(0.25)


def cmd_get(options: argparse.Namespace) -> int:
    """Status of every API, or of one."""
    with connect_scheduler(options) as scheduler:
        statuses = [scheduler.describe(options.api)] if options.api else scheduler.list()
    data: Any = status_dict(statuses[0]) if options.api else [status_dict(s) for s in statuses]

    def human() -> None:
        if not statuses:
            print("no APIs are deployed")
            return
        header: list[object] = ["NAME", "STATUS", "REPLICAS", "QUEUED", "HIGH/NORMAL/LOW", "IN FLIGHT"]
        rows: list[list[object]] = [[*header, "COMPLETED", "FAILED", "VERSION", "MESSAGE"]]
        for s in statuses:
            message = s.message.strip().splitlines()[-1] if s.message.strip() else ""
            rows.append(
                [
                    s.name,
                    API_STATES.get(s.state, "unknown") + (" (paused)" if s.paused else ""),
                    f"{s.ready_replicas}/{s.desired_replicas}",
                    s.queued,
                    "/".join(str(s.queued_by_priority.get(level, 0)) for level in PRIORITY_LEVELS),
                    s.in_flight,
                    s.completed,
                    s.failed,
                    s.version,
                    message[:80],
                ]
            )
        table(rows, sys.stdout)

    show(options, data, human)
    return 0


def cmd_describe(options: argparse.Namespace) -> int:
    """One API in full, the traceback of a failed start included."""
    with connect_scheduler(options) as scheduler:
        status = scheduler.describe(options.api)
    data = status_dict(status)

    def human() -> None:
        for key in ("name", "status", "version", "deployed_at", "queued", "in_flight", "completed", "failed"):
            print(f"{key + ':':<13}{data[key]}")
            if key == "queued":
                levels = ", ".join(f"{level} {count}" for level, count in data["queued_by_priority"].items())
                print(f"{'':<13}by priority: {levels}")
        print(f"{'replicas:':<13}{status.ready_replicas} ready of {status.desired_replicas}")
        if status.paused:
            print(f"{'dispatch:':<13}paused: queued requests wait (cortado resume {status.name})")
        # Webhooks not delivered yet: waiting for their first attempt, or retrying after failed ones.
        print(f"{'webhooks:':<13}{status.webhooks_undelivered} undelivered (pending or retrying)")
        if status.message:
            print("message:")
            for line in status.message.rstrip().splitlines():
                print(f"  {line}")

    show(options, data, human)
    return 0


def cmd_delete(options: argparse.Namespace) -> int:
    """Delete an API, its queue and its replicas."""
    with connect_scheduler(options) as scheduler:
        scheduler.delete(options.api, force=options.force)
    show(options, {"deleted": options.api}, lambda: print(f"deleted {options.api}"))
    return 0


def cmd_dead_letters(options: argparse.Namespace) -> int:
    """The requests of an API that Cortado gave up on, newest first."""
    with connect_scheduler(options) as scheduler:
        letters = scheduler.dead_letters(options.api)
    data = [
        {
            "id": letter.id,
            "error_type": letter.error_type,
            "error_message": letter.error_message,
            "failed_at": rfc3339(letter.failed_at),
            "submitted_at": rfc3339(letter.submitted_at),
            "content_type": letter.content_type,
        }
        for letter in letters
    ]

    def human() -> None:
        if not data:
            print(f"{options.api} has no dead letters")
            return
        table([("ID", "ERROR", "FAILED AT"), *((d["id"], d["error_type"], d["failed_at"]) for d in data)], sys.stdout)
        print(f"\nreplay one with: cortado replay {options.api} <id>")

    show(options, data, human)
    return 0


def cmd_replay(options: argparse.Namespace) -> int:
    """Queue a dead letter's request again, under a new id."""
    with connect_scheduler(options) as scheduler:
        new_id = scheduler.replay(options.api, options.id)
    show(options, {"id": new_id, "replayed": options.id}, lambda: print(new_id))
    return 0


def cmd_dispatch(options: argparse.Namespace) -> int:
    """`pause`: stop dispatching an API's queued requests (running ones finish, new ones are accepted and wait);
    `resume`: dispatch them again."""
    pausing = options.command == "pause"
    with connect_scheduler(options) as scheduler:
        status = scheduler.pause(options.api) if pausing else scheduler.resume(options.api)
    if pausing:
        message = f"{options.api}: dispatch paused; {status.queued} queued requests wait (cortado resume {options.api})"
    else:
        message = f"{options.api}: dispatch resumed; {status.queued} queued requests go to its replicas"
    show(options, status_dict(status), lambda: print(message))
    return 0


def cmd_webhook_secret_rotate(options: argparse.Namespace) -> int:
    """Give an API a new webhook signing secret and print it; the previous one keeps signing for a while."""
    try:
        keep = parse_duration(options.keep_previous, "--keep-previous")
    except ConfigError as exc:
        fail(str(exc))
    with connect_scheduler(options) as scheduler:
        reply = scheduler.rotate_webhook_secret(options.api, keep)
    until = rfc3339(reply.previous_until) if reply.HasField("previous_until") else None
    data = {"api": options.api, "secret": reply.secret, "previous_until": until}

    def human() -> None:
        print(f"{options.api}: webhook signing secret {reply.secret}")
        print("  keep it now, where your webhook receiver can read it: it is shown only this once")
        if until:
            print(f"  webhooks are signed with the previous secret too until {until}")

    show(options, data, human)
    return 0
