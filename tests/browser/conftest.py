"""Fixtures of the browser tests: Debian's chromium, headless, driven by its chromedriver through Selenium."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.e2e.test_cancel import held

__all__ = ["held"]

ROOT = Path(__file__).resolve().parents[2]

SCREENSHOTS = Path(os.environ.get("CORTADO_SCREENSHOTS") or ROOT / "build" / "console-screenshots")
"""Where the tests write a screenshot of each page (docs/images holds the ones the docs show)."""


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: `make install-browser` installs Debian's chromium and chromedriver")
    return found


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    """A headless chromium with a fresh profile, a laptop-sized window, and its console messages kept."""
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=_binary("chromedriver")))
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """The folder the screenshots go to (created)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
