"""`cortado`: deploy and inspect APIs, submit requests and read results, run the local mesh."""

# ruff: noqa: E402 (gRPC's log level is set before the imports that load gRPC: see below)
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

# gRPC's core would log a failed TLS handshake on stderr at INFO; the CLI says in one line what went wrong instead.
# It reads the level once, when imported: hence before the imports that load it. (`cortado up` starts the mesh
# with the caller's own setting.)
_GRPC_VERBOSITY = os.environ.get("GRPC_VERBOSITY")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import grpc

from cortado import mesh, names, webhooks
from cortado.client import Client, SchedulerClient
from cortado.mesh import cortado_home, read_state
from cortado.project import (
    ConfigError,
    ProjectError,
    collect_files,
    find_config,
    human_size,
    pack_project,
    parse_duration,
)
from cortado.records import STATUS_NAMES, result_reference, rfc3339
from cortado.runtime import dumps_json, loads_json
from cortado.tls import CA_SETTING, TlsError
from cortado.v1 import control_pb2, records_pb2

API_STATES = {
    control_pb2.API_STATE_STARTING: "starting",
    control_pb2.API_STATE_LIVE: "live",
    control_pb2.API_STATE_FAILED: "failed",
    control_pb2.API_STATE_UNPLACEABLE: "unplaceable",
    control_pb2.API_STATE_IDLE: "idle",
}


def _serving(status: control_pb2.ApiStatus) -> bool:
    """Whether the API takes requests now: a replica is ready, or it is idle at zero and wakes on the first one."""
    return bool(status.ready_replicas) or status.state == control_pb2.API_STATE_IDLE


class CliError(Exception):
    """A user-facing failure: printed as `error: <message>`, exit code 1."""


def _fail(message: str) -> NoReturn:
    raise CliError(message)


def _progress(message: str) -> None:
    # Progress goes to stderr so that stdout stays parseable (`--output json`).
    print(message, file=sys.stderr, flush=True)


def _endpoints(options: argparse.Namespace) -> tuple[str, str]:
    """(scheduler address, public gRPC address): flags, then environment, then the running local mesh."""
    state = read_state() or {}
    scheduler = options.scheduler or os.environ.get("CORTADO_SCHEDULER") or state.get("scheduler")
    public = options.endpoint or os.environ.get("CORTADO_ENDPOINT") or state.get("grpc_address")
    return scheduler or "127.0.0.1:50053", public or "127.0.0.1:8888"


TOKEN_FILE = "token"


def _token() -> str:
    """The control-plane token: $CORTADO_SCHEDULER_TOKEN, else the file $CORTADO_HOME/token (empty: none)."""
    token = os.environ.get("CORTADO_SCHEDULER_TOKEN", "")
    if not token:
        with contextlib.suppress(OSError):
            token = (cortado_home() / TOKEN_FILE).read_text().strip()
    return token


def _ca(options: argparse.Namespace) -> str:
    """The CA file the scheduler's certificate must chain to: --ca, else $CORTADO_SCHEDULER_CA (empty: plain text)."""
    return str(options.ca or os.environ.get(CA_SETTING, ""))


def _scheduler(options: argparse.Namespace) -> SchedulerClient:
    return SchedulerClient(_endpoints(options)[0], _token(), _ca(options))


PRIORITY_LEVELS = tuple(names.priority_name(priority) for priority in names.PRIORITIES)
"""high, normal, low: the keys of ApiStatus.queued_by_priority, in dispatch order."""


def _status_dict(status: control_pb2.ApiStatus) -> dict[str, Any]:
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


def _table(rows: Sequence[Sequence[object]], out: TextIO) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=out)


def _print(options: argparse.Namespace, data: Any, human: Callable[[], None]) -> None:
    if options.output == "json":
        print(json.dumps(data, indent=2))
    else:
        human()


# ---------------------------------------------------------------------------------------------
# Commands


def cmd_deploy(options: argparse.Namespace) -> int:
    """Package the project folder, deploy its APIs and wait until they serve (or are idle at zero replicas)."""
    project = Path(options.dir).resolve()
    if not project.is_dir():
        _fail(f"{options.dir} is not a folder")
    config = find_config(project)
    files = collect_files(project, config.name)
    count = len(files)
    _progress(
        f"packaging {count} file{'' if count == 1 else 's'} "
        f"({human_size(sum(size for _, size in files))}) from {project}"
    )
    bundle = pack_project(project, config.name)
    with _scheduler(options) as scheduler:
        _progress(f"uploading {human_size(len(bundle))} to the scheduler ...")
        reply = scheduler.deploy_bundle(config.name, config.read_bytes(), bundle)
        for notice in reply.notices:
            _progress(f"notice: {notice}")
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
    data = [_status_dict(s) for s in statuses]
    for entry in data:
        if entry["name"] in secrets:
            entry["webhook_secret"] = secrets[entry["name"]]

    def human() -> None:
        for status in statuses:
            state = API_STATES.get(status.state, "unknown")
            print(
                f"{status.name}: {state} (version {status.version})" + (f": {status.message}" if status.message else "")
            )

    _print(options, data, human)
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
    deadline = time.monotonic() + timeout
    shown: dict[str, str] = {}
    while True:
        statuses = [scheduler.describe(name) for name in names]
        for status in statuses:
            line = API_STATES.get(status.state, "unknown")
            if shown.get(status.name) != line:
                _progress(f"{status.name}: {line}")
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
    with _scheduler(options) as scheduler:
        statuses = [scheduler.describe(options.api)] if options.api else scheduler.list()
    data: Any = _status_dict(statuses[0]) if options.api else [_status_dict(s) for s in statuses]

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
        _table(rows, sys.stdout)

    _print(options, data, human)
    return 0


def cmd_describe(options: argparse.Namespace) -> int:
    """One API in full, the traceback of a failed start included."""
    with _scheduler(options) as scheduler:
        status = scheduler.describe(options.api)
    data = _status_dict(status)

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

    _print(options, data, human)
    return 0


def cmd_delete(options: argparse.Namespace) -> int:
    """Delete an API, its queue and its replicas."""
    with _scheduler(options) as scheduler:
        scheduler.delete(options.api, force=options.force)
    _print(options, {"deleted": options.api}, lambda: print(f"deleted {options.api}"))
    return 0


def cmd_dead_letters(options: argparse.Namespace) -> int:
    """The requests of an API that Cortado gave up on, newest first."""
    with _scheduler(options) as scheduler:
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
        _table([("ID", "ERROR", "FAILED AT"), *((d["id"], d["error_type"], d["failed_at"]) for d in data)], sys.stdout)
        print(f"\nreplay one with: cortado replay {options.api} <id>")

    _print(options, data, human)
    return 0


def cmd_replay(options: argparse.Namespace) -> int:
    """Queue a dead letter's request again, under a new id."""
    with _scheduler(options) as scheduler:
        new_id = scheduler.replay(options.api, options.id)
    _print(options, {"id": new_id, "replayed": options.id}, lambda: print(new_id))
    return 0


def cmd_dispatch(options: argparse.Namespace) -> int:
    """`pause`: stop dispatching an API's queued requests (running ones finish, new ones are accepted and wait);
    `resume`: dispatch them again."""
    pausing = options.command == "pause"
    with _scheduler(options) as scheduler:
        status = scheduler.pause(options.api) if pausing else scheduler.resume(options.api)
    if pausing:
        message = f"{options.api}: dispatch paused; {status.queued} queued requests wait (cortado resume {options.api})"
    else:
        message = f"{options.api}: dispatch resumed; {status.queued} queued requests go to its replicas"
    _print(options, _status_dict(status), lambda: print(message))
    return 0


def cmd_webhook_secret_rotate(options: argparse.Namespace) -> int:
    """Give an API a new webhook signing secret and print it; the previous one keeps signing for a while."""
    try:
        keep = parse_duration(options.keep_previous, "--keep-previous")
    except ConfigError as exc:
        _fail(str(exc))
    with _scheduler(options) as scheduler:
        reply = scheduler.rotate_webhook_secret(options.api, keep)
    until = rfc3339(reply.previous_until) if reply.HasField("previous_until") else None
    data = {"api": options.api, "secret": reply.secret, "previous_until": until}

    def human() -> None:
        print(f"{options.api}: webhook signing secret {reply.secret}")
        print("  keep it now, where your webhook receiver can read it: it is shown only this once")
        if until:
            print(f"  webhooks are signed with the previous secret too until {until}")

    _print(options, data, human)
    return 0


API_KEY_SETTING = "CORTADO_API_KEY"
"""The API key `submit`, `result` and `cancel` send when the front door requires one."""
ENDPOINT_CA_SETTING = "CORTADO_ENDPOINT_CA"
"""The CA (PEM file) `submit`, `result` and `cancel` trust when the public port serves TLS."""


def _key_dict(record: control_pb2.ApiKey) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "apis": list(record.apis),
        "created_at": rfc3339(record.created_at),
        "expires_at": rfc3339(record.expires_at) if record.HasField("expires_at") else None,
        "revoked_at": rfc3339(record.revoked_at) if record.HasField("revoked_at") else None,
        "rate_per_second": record.rate_per_second or None,
        "burst": record.burst or None,
    }


def cmd_keys_create(options: argparse.Namespace) -> int:
    """Make an API key for the APIs named and print it (shown only this once)."""
    try:
        expires = parse_duration(options.expires, "--expires") if options.expires else None
    except ConfigError as exc:
        _fail(str(exc))
    with _scheduler(options) as scheduler:
        reply = scheduler.create_api_key(options.api, options.name, expires, options.rate, options.burst)
    data = {"key": reply.key, **_key_dict(reply.record)}

    def human() -> None:
        print(f"API key {reply.record.name!r} for {', '.join(reply.record.apis)}: {reply.key}")
        print("  keep it now: it is shown only this once (Cortado keeps only its hash)")
        if reply.record.HasField("expires_at"):
            print(f"  it expires at {rfc3339(reply.record.expires_at)}")
        if reply.record.rate_per_second:
            rate, burst = reply.record.rate_per_second, reply.record.burst
            print(f"  it may submit {rate:g} request{'' if rate == 1 else 's'} a second (burst {burst})")

    _print(options, data, human)
    return 0


def cmd_keys_list(options: argparse.Namespace) -> int:
    """Every API key: id, name, APIs, expiry, whether it was revoked (never the key)."""
    with _scheduler(options) as scheduler:
        records = scheduler.api_keys()
    data = [_key_dict(record) for record in records]

    def human() -> None:
        rows: list[list[object]] = [["ID", "NAME", "APIS", "EXPIRES", "REVOKED"]]
        for d in data:
            rows.append([d["id"], d["name"], ",".join(d["apis"]), d["expires_at"] or "never", d["revoked_at"] or "-"])
        _table(rows, sys.stdout)

    _print(options, data, human)
    return 0


def cmd_keys_revoke(options: argparse.Namespace) -> int:
    """Revoke an API key by its id or name: it is refused from then on."""
    with _scheduler(options) as scheduler:
        record = scheduler.revoke_api_key(options.key)
    data = _key_dict(record)
    _print(options, data, lambda: print(f"API key {record.name!r} ({record.id}) revoked at {data['revoked_at']}"))
    return 0


def _payload(options: argparse.Namespace) -> tuple[bytes, str]:
    if options.json is not None:
        try:
            json.loads(options.json)
        except ValueError as exc:
            _fail(f"--json is not valid JSON: {exc}")
        return options.json.encode(), "application/json"
    if options.text is not None:
        return options.text.encode(), "text/plain; charset=utf-8"
    if options.file is not None:
        path = Path(options.file)
        try:
            data = sys.stdin.buffer.read() if options.file == "-" else path.read_bytes()
        except OSError as exc:
            _fail(f"cannot read {options.file}: {exc.strerror}")
        content_type = options.content_type or (
            "application/json" if path.suffix == ".json" else "application/octet-stream"
        )
        return data, content_type
    _fail("give the payload with --json, --text or --file")


def cmd_submit(options: argparse.Namespace) -> int:
    """Submit one request; print its id."""
    data, content_type = _payload(options)
    with Client(
        _endpoints(options)[1], os.environ.get(API_KEY_SETTING, ""), os.environ.get(ENDPOINT_CA_SETTING, "")
    ) as client:
        request_id = client.submit(
            options.api,
            data,
            options.content_type or content_type,
            priority=options.priority,
            webhook=options.webhook,
        )
    _print(options, {"id": request_id}, lambda: print(request_id))
    return 0


def _view_dict(view: records_pb2.RequestView, api: str) -> dict[str, Any]:
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


def cmd_cancel(options: argparse.Namespace) -> int:
    """Cancel a request; print its state (cancelled). Exit 1 when it had finished otherwise, or is unknown."""
    with Client(
        _endpoints(options)[1], os.environ.get(API_KEY_SETTING, ""), os.environ.get(ENDPOINT_CA_SETTING, "")
    ) as client:
        view = client.cancel(options.api, options.id)
    data = _view_dict(view, options.api)
    print(dumps_json(data, ensure_ascii=True, indent=2 if options.output == "json" else None, separators=None))
    return 0


def cmd_result(options: argparse.Namespace) -> int:
    """A request's state; with --wait, its final state. Exit 0 completed, 1 failed or not found, 3 unfinished."""
    with Client(
        _endpoints(options)[1], os.environ.get(API_KEY_SETTING, ""), os.environ.get(ENDPOINT_CA_SETTING, "")
    ) as client:
        if options.wait:
            view = client.wait(options.api, options.id, timeout=options.timeout)
        else:
            view = client.get(options.api, options.id)
        data = _view_dict(view, options.api)
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
        _fail(f"cannot write {target}: {exc.strerror}")
    return target


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


def cmd_logs(options: argparse.Namespace) -> int:
    """An API's recent log lines; with --follow, new ones as they come (Ctrl-C stops)."""
    with _scheduler(options) as scheduler:
        for raw in scheduler.logs(options.api, options.tail, options.follow):
            print(raw.decode("utf-8", "replace") if options.output == "json" else format_log_line(raw), flush=True)
    return 0


def cmd_up(options: argparse.Namespace) -> int:
    """Start the local mesh in the background (NATS, the services, Envoy)."""
    state = read_state()
    if state:
        _progress(f"the local mesh already runs: {state['http_url']}")
        return 0
    home = cortado_home()
    home.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "cortado.mesh", "--port", str(options.port)]
    for project in options.deploy:
        argv += ["--deploy", str(Path(project).resolve())]
    if options.fresh:
        argv.append("--fresh")
    log_path = home / "mesh.log"
    env = dict(os.environ)
    if _GRPC_VERBOSITY is None:
        env.pop("GRPC_VERBOSITY", None)
    with log_path.open("ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    kept = "cleared first" if options.fresh else "APIs and requests of earlier runs kept; --fresh starts empty"
    _progress(f"starting the local mesh (state: {home / 'mesh'}, {kept}; log: {log_path}) ...")
    deadline = time.monotonic() + options.timeout
    while (state := read_state()) is None or state.get("pid") != str(process.pid):
        if process.poll() is not None or time.monotonic() > deadline:
            _fail(f"the local mesh did not start; see {log_path}")
        time.sleep(0.2)

    def human() -> None:
        print(f"Cortado is serving on {state['http_url']}")
        if state.get("console_url"):
            print(f"The web console is at {state['console_url']}")

    _print(options, state, human)
    return 0


def cmd_down(options: argparse.Namespace) -> int:
    """Stop the local mesh started by `cortado up` (or `make run`)."""
    state = read_state()
    if not state:
        _progress("no local mesh is running")
        return 0
    pid = int(state["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + options.timeout
    while read_state() is not None:
        if time.monotonic() > deadline:
            _fail(f"the local mesh (pid {pid}) did not stop within {options.timeout:.0f}s")
        time.sleep(0.2)
    _progress("stopped")
    return 0


def cmd_console(options: argparse.Namespace) -> int:
    """Serve the web console on loopback for any scheduler (a port-forwarded one, say) until Ctrl-C or SIGTERM."""
    scheduler, ca = _endpoints(options)[0], _ca(options)
    if ca and not Path(ca).is_file():
        _fail(f"the CA file {ca!r} does not exist")
    stop = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    # Set explicitly: a process started in the background by a shell inherits SIGINT ignored.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stop)
    with tempfile.TemporaryDirectory(prefix="cortado-console-") as folder:
        config = Path(folder) / "envoy.yaml"
        admin = mesh.free_port()
        config.write_text(mesh.render_console_config(options.port, admin, scheduler, ca))
        envoy = mesh.envoy_process(config, Path(folder) / "envoy.log")
        envoy.start()
        try:
            deadline = time.monotonic() + 30
            while not mesh.envoy_ready(admin):
                if not envoy.alive() or time.monotonic() > deadline:
                    _fail(f"the console's Envoy did not start; its log ends:\n{envoy.log_tail()}")
                time.sleep(0.1)
            url = f"http://localhost:{options.port}/"
            _print(
                options,
                {"console_url": url, "scheduler": scheduler},
                lambda: print(f"The web console is at {url} (scheduler {scheduler}); Ctrl-C stops it", flush=True),
            )
            while not stop:
                if not envoy.alive():
                    _fail(f"the console's Envoy stopped; its log ends:\n{envoy.log_tail()}")
                time.sleep(0.2)
            return 0
        finally:
            envoy.stop()


# ---------------------------------------------------------------------------------------------
# Parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-o", "--output", choices=["table", "json"], default="table", help="output format")
    common.add_argument("--scheduler", help="scheduler gRPC address (default: the local mesh's, or $CORTADO_SCHEDULER)")
    common.add_argument("--endpoint", help="public gRPC address (default: the local mesh's, or $CORTADO_ENDPOINT)")
    common.add_argument(
        "--ca",
        metavar="FILE",
        help=f"connect to the scheduler with TLS, trusting the CA certificate (PEM) in FILE (default: ${CA_SETTING}; "
        "neither: plain text, as the local mesh's scheduler serves)",
    )

    parser = argparse.ArgumentParser(prog="cortado", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("up", parents=[common], help="start the local mesh in the background")
    up.add_argument("--port", type=int, default=8888, help="public HTTP port (default 8888)")
    up.add_argument("--deploy", action="append", default=[], metavar="DIR", help="project to deploy once started")
    up.add_argument("--timeout", type=float, default=180)
    up.add_argument("--fresh", action="store_true", help="start with no APIs, requests or logs (clears the state)")
    up.set_defaults(run=cmd_up)

    down = commands.add_parser("down", parents=[common], help="stop the local mesh")
    down.add_argument("--timeout", type=float, default=60)
    down.set_defaults(run=cmd_down)

    deploy = commands.add_parser("deploy", parents=[common], help="deploy the APIs of a project folder")
    deploy.add_argument("dir", nargs="?", default=".", metavar="DIR")
    deploy.add_argument("--no-wait", dest="wait", action="store_false", help="do not wait for replicas")
    deploy.add_argument("--timeout", type=float, default=600, help="seconds to wait for the APIs to serve")
    deploy.set_defaults(run=cmd_deploy)

    get = commands.add_parser("get", parents=[common], help="status of every API, or one")
    get.add_argument("api", nargs="?", metavar="API")
    get.set_defaults(run=cmd_get)

    describe = commands.add_parser("describe", parents=[common], help="one API in full")
    describe.add_argument("api", metavar="API")
    describe.set_defaults(run=cmd_describe)

    delete = commands.add_parser("delete", parents=[common], help="delete an API")
    delete.add_argument("api", metavar="API")
    delete.add_argument("--force", action="store_true", help="delete even while requests are queued (they are dropped)")
    delete.set_defaults(run=cmd_delete)

    submit = commands.add_parser("submit", parents=[common], help="submit a request; prints its id")
    submit.add_argument("api", metavar="API")
    payload = submit.add_mutually_exclusive_group(required=True)
    payload.add_argument("--json", help="a JSON payload")
    payload.add_argument("--text", help="a text payload (UTF-8)")
    payload.add_argument("--file", help="a file's bytes as the payload (- for stdin)")
    submit.add_argument("--content-type", help="override the Content-Type")
    submit.add_argument(
        "--priority", choices=["high", "normal", "low"], default="", help="dispatch order within the API (normal)"
    )
    submit.add_argument("--webhook", default="", help="URL to POST the request's final state to")
    submit.set_defaults(run=cmd_submit)

    cancel = commands.add_parser("cancel", parents=[common], help="cancel a queued or running request")
    cancel.add_argument("api", metavar="API")
    cancel.add_argument("id", metavar="ID")
    cancel.set_defaults(run=cmd_cancel)

    result = commands.add_parser("result", parents=[common], help="a request's state and result")
    result.add_argument("api", metavar="API")
    result.add_argument("id", metavar="ID")
    result.add_argument("--wait", action="store_true", help="wait until the request finishes")
    result.add_argument("--timeout", type=float, default=None, help="seconds to wait at most")
    result.add_argument(
        "--save", metavar="FILE", help="once completed, write the result's bytes to FILE (any result, up to 1 GiB)"
    )
    result.set_defaults(run=cmd_result)
    dead = commands.add_parser(
        "dead-letters", parents=[common], help="requests Cortado gave up on (their process kept dying, say)"
    )
    dead.add_argument("api", metavar="API")
    dead.set_defaults(run=cmd_dead_letters)

    console = commands.add_parser(
        "console",
        parents=[common],
        help="serve the web console on this machine for a scheduler elsewhere (port-forwarded, say)",
    )
    console.add_argument("--port", type=int, default=8889, help="console port on 127.0.0.1 (default 8889)")
    console.set_defaults(run=cmd_console)
    pause = commands.add_parser(
        "pause", parents=[common], help="stop dispatching an API's queued requests (they wait until resume)"
    )
    pause.add_argument("api", metavar="API")
    pause.set_defaults(run=cmd_dispatch)
    resume = commands.add_parser("resume", parents=[common], help="dispatch a paused API's queued requests again")
    resume.add_argument("api", metavar="API")
    resume.set_defaults(run=cmd_dispatch)
    replay = commands.add_parser("replay", parents=[common], help="queue a dead letter again; prints its new id")
    replay.add_argument("api", metavar="API")
    replay.add_argument("id", metavar="ID")
    replay.set_defaults(run=cmd_replay)

    secret = commands.add_parser("webhook-secret", help="an API's webhook signing secret")
    secret_commands = secret.add_subparsers(dest="secret_command", required=True, metavar="COMMAND")
    rotate = secret_commands.add_parser(
        "rotate", parents=[common], help="make a new signing secret; the previous one keeps signing for a while"
    )
    rotate.add_argument("api", metavar="API")
    rotate.add_argument(
        "--keep-previous",
        default="24h",
        metavar="DURATION",
        help="how long webhooks carry a signature made with the previous secret too (default 24h; 0: not at all)",
    )
    rotate.set_defaults(run=cmd_webhook_secret_rotate)

    keys = commands.add_parser("keys", help="API keys for the front door (when CORTADO_API_KEYS=on)")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    create = key_commands.add_parser("create", parents=[common], help="make a key and print it (shown once)")
    create.add_argument("--api", action="append", required=True, metavar="NAME", help="an API it may call (repeat)")
    create.add_argument("--name", default="", help="a label for it (default: its id)")
    create.add_argument(
        "--expires", default="", metavar="DURATION", help="how long it works (e.g. 30d; default: until revoked)"
    )
    create.add_argument("--rate", type=float, default=0.0, help="submissions a second it may make (default: no limit)")
    create.add_argument("--burst", type=int, default=0, help="how many at once above the rate (default: the rate)")
    create.set_defaults(run=cmd_keys_create)
    key_commands.add_parser("list", parents=[common], help="every key (never the key itself)").set_defaults(
        run=cmd_keys_list
    )
    revoke = key_commands.add_parser("revoke", parents=[common], help="revoke a key: refused from then on")
    revoke.add_argument("key", metavar="KEY", help="its id or name")
    revoke.set_defaults(run=cmd_keys_revoke)

    logs = commands.add_parser("logs", parents=[common], help="an API's log lines")
    logs.add_argument("api", metavar="API")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("--tail", type=int, default=100, help="recent lines to print first (default 100)")
    logs.set_defaults(run=cmd_logs)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; exit 0 on success, 1 on a failure explained on stderr, 2 on a usage error."""
    options = build_parser().parse_args(argv)
    try:
        return int(options.run(options))
    except (CliError, ConfigError, ProjectError, TlsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
    except grpc.RpcError as exc:
        code = exc.code()
        if code == grpc.StatusCode.UNAVAILABLE:
            print("error: cannot reach Cortado (is the mesh running? `cortado up` starts it)", file=sys.stderr)
        elif code == grpc.StatusCode.UNAUTHENTICATED:
            print(
                f"error: {exc.details()}: set CORTADO_SCHEDULER_TOKEN or write it to {cortado_home() / TOKEN_FILE}",
                file=sys.stderr,
            )
        else:
            print(f"error: {exc.details()}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
