"""gRPC's core log level in the `cortado` command: quiet unless the caller set one.

gRPC's core would log a failed TLS handshake on stderr at INFO; the CLI says in one line what went wrong instead.
It reads the level once, when imported: `cortado.cli` imports this module before anything that loads gRPC.
(`cortado up` starts the mesh with the caller's own setting: `CALLER_GRPC_VERBOSITY`.)
"""

from __future__ import annotations

import os

CALLER_GRPC_VERBOSITY = os.environ.get("GRPC_VERBOSITY")
"""$GRPC_VERBOSITY as the caller set it (None: unset), before this module set it to ERROR."""

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
