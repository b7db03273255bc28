"""Cortado: run Python handlers as asynchronous APIs.

`from cortado import log` gives handlers the JSON logger; `from cortado import cancelled` tells a
running handler whether its request was cancelled (`cancelled(request_id) -> bool`).
"""

from cortado.cancellation import cancelled
from cortado.logs import handler_logger as log

__all__ = ["cancelled", "log"]
