"""Fixtures of the end-to-end tests, for every test of the folder: the CLI's, and an API that holds requests."""

from tests.e2e.cli_support import apis, cli
from tests.e2e.test_cancel import held

__all__ = ["apis", "cli", "held"]
