"""`from cortex_internal.lib.log import logger as log` works in Cortex handlers: it is Cortado's handler logger."""

from cortado._logs import handler_logger as logger

__all__ = ["logger"]
