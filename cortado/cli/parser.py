"""The argument parser of the `cortado` command: its flags, help texts and the function each command runs."""

from __future__ import annotations

import argparse

from cortado._tls import CA_SETTING
from cortado.cli.apis import (
    cmd_dead_letters,
    cmd_delete,
    cmd_deploy,
    cmd_describe,
    cmd_dispatch,
    cmd_get,
    cmd_replay,
    cmd_webhook_secret_rotate,
)
from cortado.cli.keys import cmd_keys_create, cmd_keys_list, cmd_keys_revoke
from cortado.cli.local import cmd_console, cmd_down, cmd_up
from cortado.cli.requests import cmd_cancel, cmd_logs, cmd_result, cmd_submit

DESCRIPTION = "`cortado`: deploy and inspect APIs, submit requests and read results, run the local mesh."
"""`cortado --help`'s description."""


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

    parser = argparse.ArgumentParser(prog="cortado", description=DESCRIPTION)
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
