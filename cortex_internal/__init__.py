"""Compatibility with Cortex projects: `cortex_internal.lib.log.logger`."""
