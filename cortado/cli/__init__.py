"""`cortado`: deploy and inspect APIs, submit requests and read results, run the local mesh.

`main` runs one command and turns its failures into one line on stderr. Where each command lives:

| command | module |
| --- | --- |
| deploy, get, describe, delete, pause, resume, dead-letters, replay, webhook-secret rotate | `cortado.cli.apis` |
| keys create, keys list, keys revoke | `cortado.cli.keys` |
| submit, cancel, result, logs | `cortado.cli.requests` |
| up, down, console | `cortado.cli.local` |

The flags of all of them are in `cortado.cli.parser`; what they print, in `cortado.cli.output`; where they connect,
in `cortado.cli.connection`.
"""

from __future__ import annotations

from cortado.cli import grpclog  # noqa: F401 (first: it sets gRPC's log level, read once when gRPC loads)

# isort: split
import sys

import grpc

from cortado._tls import TlsError
from cortado.cli.connection import TOKEN_FILE
from cortado.cli.errors import CliError
from cortado.cli.parser import build_parser
from cortado.mesh import cortado_home
from cortado.project import ConfigError, ProjectError

__all__ = ["CliError", "build_parser", "main"]


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
