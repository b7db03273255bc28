"""`cortado keys`: the API keys of the front door (create, list, revoke)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cortado.cli.connection import connect_scheduler
from cortado.cli.errors import fail
from cortado.cli.output import show, table
from cortado.project import ConfigError, parse_duration
from cortado.records import rfc3339
from cortado.v1 import control_pb2


def _key_dict(record: control_pb2.ApiKey) -> dict[str, Any]:
    """An API key's record as `-o json` shows it (never the key itself)."""
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
        fail(str(exc))
    with connect_scheduler(options) as scheduler:
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

    show(options, data, human)
    return 0


def cmd_keys_list(options: argparse.Namespace) -> int:
    """Every API key: id, name, APIs, expiry, whether it was revoked (never the key)."""
    with connect_scheduler(options) as scheduler:
        records = scheduler.api_keys()
    data = [_key_dict(record) for record in records]

    def human() -> None:
        rows: list[list[object]] = [["ID", "NAME", "APIS", "EXPIRES", "REVOKED"]]
        for d in data:
            rows.append([d["id"], d["name"], ",".join(d["apis"]), d["expires_at"] or "never", d["revoked_at"] or "-"])
        table(rows, sys.stdout)

    show(options, data, human)
    return 0


def cmd_keys_revoke(options: argparse.Namespace) -> int:
    """Revoke an API key by its id or name: it is refused from then on."""
    with connect_scheduler(options) as scheduler:
        record = scheduler.revoke_api_key(options.key)
    data = _key_dict(record)
    show(options, data, lambda: print(f"API key {record.name!r} ({record.id}) revoked at {data['revoked_at']}"))
    return 0
