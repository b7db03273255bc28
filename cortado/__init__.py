"""Cortado: run Python handlers as asynchronous APIs.

`from cortado import log` gives handlers the JSON logger.
"""

from cortado.logs import handler_logger as log

__all__ = ["log"]
