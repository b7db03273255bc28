"""Fixtures of the end-to-end tests: the CLI's, for every test of the folder."""

from tests.e2e.test_cli import cli

__all__ = ["cli"]
