"""Fixtures of the end-to-end tests, for every test of the folder: the CLI's, and an API that holds requests."""

from tests.e2e.test_cancel import held
from tests.e2e.test_cli import cli

__all__ = ["cli", "held"]
