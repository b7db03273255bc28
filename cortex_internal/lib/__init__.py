"""Compatibility with Cortex projects."""
