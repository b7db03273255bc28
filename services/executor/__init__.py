"""The executor service: a supervisor of handler processes, and the handler process itself."""

import os

# The executor forks handler processes while gRPC threads run; gRPC's fork handlers are not needed
# for that (the child execs at once) and would log a warning on every start. Set before gRPC loads.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
