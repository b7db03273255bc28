"""Cortado: run Python handlers as asynchronous APIs.

`from cortado import log` gives handlers the JSON logger; `from cortado import cancelled` tells a
running handler whether its request was cancelled (`cancelled(request_id) -> bool`); a handler
returns binary output (bytes or a file, with its media type) as `cortado.Result`.
"""

from cortado.cancellation import cancelled
from cortado.logs import handler_logger as log
from cortado.result import Result

__all__ = ["Result", "cancelled", "log"]
