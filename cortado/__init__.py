"""Cortado: run Python handlers as asynchronous APIs."""
