"""`python -P -m services.executor.handlerprocess`: the handler process's start, as its executor runs it."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
import traceback

from cortado import _tracing
from cortado._logs import PrintToLog, configure_handler_logging
from cortado._service import run_event_loop
from cortado.v1 import control_pb2, handler_pb2
from services.executor.channel import open_channel
from services.executor.contract import (
    EXIT_INIT_FAILED,
    EXIT_STOPPED,
    is_cortado_variable,
    parse_environment,
)
from services.executor.handlerprocess.loading import load_handler
from services.executor.handlerprocess.loop import Worker
from services.executor.handlerprocess.outbox import Outbox

PR_SET_PDEATHSIG = 1
"""prctl(2): the signal the kernel sends this process when its parent dies."""


def _stop_with_executor(parent_pid: int | None) -> None:
    """Have the kernel send SIGTERM (drain) when the executor dies, so no handler process outlives it."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    # The executor may have died before the request above took effect.
    if parent_pid and os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)


async def main() -> int:
    """Load the handler, tell the executor ready or failed, then run jobs until SIGTERM or the channel closes.

    Returns the process's exit code: EXIT_STOPPED after a drain, EXIT_INIT_FAILED when the handler did not load.
    """
    settings = parse_environment(os.environ)
    _stop_with_executor(settings.parent_pid)
    # What the executor told this process is not the handler's business.
    for name in [n for n in os.environ if is_cortado_variable(n)]:
        del os.environ[name]
    reader, writer = await open_channel(socket.socket(fileno=settings.channel_fd))
    outbox = Outbox(writer)
    spec = control_pb2.ApiSpec.FromString(settings.spec_file.read_bytes())
    labels = {"api": spec.name, "replica": settings.replica}
    _tracing.setup_tracing(f"handler-{spec.name}")
    _tracing.instrument_outbound_http()
    configure_handler_logging(labels, spec.log_level or "info")
    # print() in a handler becomes a log line of its request.
    sys.stdout = PrintToLog()
    try:
        handler = load_handler(spec)
    except BaseException:
        outbox.send_now(handler_pb2.FromHandler(failed=traceback.format_exc()))
        await outbox.drained()
        return EXIT_INIT_FAILED
    worker = Worker(spec, handler, outbox, settings.grace_seconds)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    outbox.send_now(handler_pb2.FromHandler(ready=True, room=worker.room))
    receiving = asyncio.create_task(worker.receive(reader))
    await worker.run()
    receiving.cancel()
    writer.close()
    _tracing.shutdown_tracing()
    return EXIT_STOPPED


if __name__ == "__main__":
    sys.exit(run_event_loop(main()))
