"""The web console in a real headless chromium, on the session's mesh, as an operator uses it.

Two APIs are deployed: one whose requests complete or fail at once, and one that holds its requests (one runs,
the others wait in its queue). The test opens the console's address and checks that it shows each API and each
kind of request, that a failed request shows its traceback, that a queued request is cancelled from its page,
that dispatch pauses and resumes, that the charts move when load arrives (without reloading), and that the pages
fit a phone. It writes a screenshot of each page (tests/browser/conftest.py says where).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from cortado.client import SchedulerClient
from cortado.mesh import LocalMesh
from tests.e2e.test_cancel import Held
from tests.e2e.test_console_api import FAILING
from tests.helpers import eventually
from tests.meshcalls import Deploy, result, submit

pytestmark = pytest.mark.browser

T = TypeVar("T")

WAIT_SECONDS = 30

HOSTILE = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
"""What a client may put in a body: the console shows it as text and runs none of it."""


def wait_for(driver: webdriver.Chrome, check: Callable[[webdriver.Chrome], T], what: str) -> T:
    """check(driver) once it answers something true (page elements may be re-rendered meanwhile)."""

    def attempt(d: webdriver.Chrome) -> T | Literal[False]:
        try:
            return check(d) or False
        except (StaleElementReferenceException, WebDriverException):
            return False

    found: T = WebDriverWait(driver, WAIT_SECONDS, poll_frequency=0.1).until(attempt, message=f"waiting for {what}")
    return found


def by_id(driver: webdriver.Chrome, testid: str) -> WebElement:
    """The element with that data-testid, once it is there."""
    element: WebElement = wait_for(
        driver, lambda d: d.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]'), f"[data-testid={testid}]"
    )
    return element


def text_of(driver: webdriver.Chrome, testid: str, contains: str) -> str:
    """The element's text once it contains `contains`."""
    return str(
        wait_for(
            driver,
            lambda d: (t := d.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]').text) and contains in t and t,
            f"{testid!r} to show {contains!r}",
        )
    )


def confirm(driver: webdriver.Chrome) -> None:
    """Accept the open confirmation dialog."""
    dialog = by_id(driver, "confirm-dialog")
    wait_for(driver, lambda d: dialog.get_attribute("open") is not None, "the confirmation dialog")
    by_id(driver, "confirm-button").click()
    wait_for(driver, lambda d: dialog.get_attribute("open") is None, "the dialog to close")


def severe_messages(driver: webdriver.Chrome) -> list[str]:
    """Errors the page logged to the browser's console."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]  # type: ignore[no-untyped-call]


@pytest.fixture
def loaded(deploy: Deploy, held: Held, http: httpx.Client, tmp_path: Path) -> tuple[str, Held, dict[str, Any]]:
    """An API with completed and failed requests, and `held` with one request running and two queued."""
    quick = deploy(FAILING)
    done = [submit(http, quick, json={"name": f"n{i}"}) for i in range(3)]
    failed = submit(http, quick, json={"name": "bad"})
    for request_id in [*done, failed]:
        result(http, quick, request_id)
    running = submit(http, held.name, json={"n": 0})
    eventually(lambda: running in held.called(), what="the held request running")
    queued = [submit(http, held.name, json={"n": i, "note": HOSTILE}) for i in (1, 2, 3)]
    return quick, held, {"done": done, "failed": failed, "running": running, "queued": queued}


def test_the_console_shows_apis_and_requests_and_acts_on_them(
    browser: webdriver.Chrome,
    mesh: LocalMesh,
    loaded: tuple[str, Held, dict[str, Any]],
    http: httpx.Client,
    scheduler: SchedulerClient,
    screenshots: Path,
) -> None:
    quick, held, ids = loaded
    console = f"http://localhost:{mesh.ports['console']}/"
    browser.set_window_size(1280, 900)
    browser.get(console)

    # The APIs page: both APIs, their state, and the held one's queue.
    by_id(browser, "apis-page")
    text_of(browser, f"api-row-{quick}", "live")
    row = text_of(browser, f"api-row-{held.name}", "live")
    assert "1/1" in row
    wait_for(browser, lambda d: "2 (" in by_id(d, f"api-row-{held.name}").text, "two requests queued on the held API")
    assert by_id(browser, f"spark-{quick}").tag_name == "svg"
    text_of(browser, "live-status", "live")

    # An API's page: its requests, newest first, filtered by status; the failed one opens on its traceback.
    browser.find_element(By.LINK_TEXT, quick).click()
    by_id(browser, "api-page")
    for request_id in [*ids["done"], ids["failed"]]:
        by_id(browser, f"request-row-{request_id}")
    assert "ValueError" in by_id(browser, f"request-row-{ids['failed']}").text
    Select(by_id(browser, "status-filter")).select_by_value("failed")
    wait_for(
        browser,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, '[data-testid^="request-row-"]')) == 1,
        "only the failed request listed",
    )
    by_id(browser, f"request-row-{ids['failed']}").find_element(By.TAG_NAME, "a").click()
    by_id(browser, "request-page")
    text_of(browser, "request-status", "failed")
    traceback = text_of(browser, "traceback", 'raise ValueError("names may not be bad")')
    assert traceback.startswith("Traceback (most recent call last):")
    record = json.loads(by_id(browser, "record-json").text)
    assert record == http.get(f"/{quick}/{ids['failed']}").json()
    text_of(browser, "log-lines", "looking at bad")
    browser.save_screenshot(str(screenshots / "request-failed.png"))

    # The charts move when load arrives, without reloading the page.
    browser.get(f"{console}console/index.html#/apis/{quick}")
    chart = by_id(browser, "throughput-chart")
    before = int(wait_for(browser, lambda d: chart.get_attribute("data-total"), "the chart's total") or 0)
    for i in range(20):
        submit(http, quick, json={"name": f"load{i}"})
    wait_for(
        browser,
        lambda d: int(by_id(d, "throughput-chart").get_attribute("data-total") or 0) >= before + 20,
        "the throughput chart to count the new requests",
    )
    assert by_id(browser, "latency-chart") is not None
    browser.save_screenshot(str(screenshots / "api.png"))

    # A queued request of the held API, opened by its id, is cancelled from its page.
    target = ids["queued"][-1]
    browser.get(console)
    form = by_id(browser, "open-request-form")
    Select(by_id(browser, "open-request-api")).select_by_value(held.name)
    id_input = by_id(browser, "open-request-id")
    id_input.send_keys(target)
    id_input.send_keys(Keys.ENTER)
    by_id(browser, "request-page")
    assert form is not None
    text_of(browser, "request-status", "queued")
    assert json.loads(by_id(browser, "payload-preview").find_element(By.TAG_NAME, "pre").text) == {
        "n": 3,
        "note": HOSTILE,
    }
    assert browser.execute_script("return window.pwned") is None
    assert browser.find_elements(By.CSS_SELECTOR, "main img[src=x]") == []
    browser.save_screenshot(str(screenshots / "request-queued.png"))
    by_id(browser, "cancel-button").click()
    confirm(browser)
    text_of(browser, "request-status", "cancelled")
    text_of(browser, "outcome", "cancel")
    assert http.get(f"/{held.name}/{target}").json()["status"] == "cancelled"

    # Pause and resume the held API's dispatch from its page.
    browser.get(f"{console}console/index.html#/apis/{held.name}")
    pause = by_id(browser, "pause-button")
    wait_for(browser, lambda d: by_id(d, "pause-button").text == "Pause dispatch", "the pause button")
    # By keyboard: Enter opens the confirmation, which has the focus; Escape dismisses it and changes nothing.
    pause.send_keys(Keys.ENTER)
    dialog = by_id(browser, "confirm-dialog")
    wait_for(browser, lambda d: dialog.get_attribute("open") is not None, "the confirmation dialog")
    assert browser.execute_script("return arguments[0].contains(document.activeElement)", dialog)
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)
    wait_for(browser, lambda d: dialog.get_attribute("open") is None, "the dialog dismissed by Escape")
    assert not scheduler.describe(held.name).paused
    pause.click()
    confirm(browser)
    wait_for(browser, lambda d: by_id(d, "pause-button").text == "Resume dispatch", "the API shown paused")
    assert scheduler.describe(held.name).paused
    by_id(browser, "pause-button").click()
    confirm(browser)
    wait_for(browser, lambda d: by_id(d, "pause-button").text == "Pause dispatch", "the API shown resumed")
    assert not scheduler.describe(held.name).paused

    # The APIs page as the docs show it: the load counted, the held API's queue waiting.
    browser.get(console)

    def completed_shown(driver: webdriver.Chrome) -> bool:
        cells = by_id(driver, f"api-row-{quick}").find_elements(By.CSS_SELECTOR, "td, th")
        return int(cells[5].text) >= 20

    wait_for(browser, completed_shown, "the APIs page to count the load in its last 15 minutes")
    browser.save_screenshot(str(screenshots / "apis.png"))

    held.release.touch()
    assert result(http, held.name, ids["queued"][0])["status"] == "completed"
    assert severe_messages(browser) == []


CONTRAST = """
// WCAG 2 contrast ratio of each visible text's colour against the first opaque background behind it.
const lum = (rgb) => {
  const [r, g, b] = rgb.map((c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
};
const rgba = (css) => (css.match(/[\\d.]+/g) || []).map(Number);
const background = (el) => {
  for (; el; el = el.parentElement) {
    const c = rgba(getComputedStyle(el).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
  }
  return [255, 255, 255];
};
const low = [];
for (const el of document.querySelectorAll('main *, header *')) {
  const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
  const box = el.getBoundingClientRect();
  if (!own || !box.width || !box.height || getComputedStyle(el).visibility === 'hidden') continue;
  const [a, b] = [lum(rgba(getComputedStyle(el).color).slice(0, 3)), lum(background(el))];
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  const text = el.textContent.trim().slice(0, 30);
  if (ratio < 4.5) low.push(`${el.tagName}.${el.className} "${text}" ${ratio.toFixed(2)}`);
}
return low;
"""
"""Text whose contrast is under WCAG AA's 4.5:1 (a list of descriptions; empty when all pass)."""


def test_the_console_fits_a_phone_and_every_control_is_labelled(
    browser: webdriver.Chrome, mesh: LocalMesh, loaded: tuple[str, Held, dict[str, Any]], screenshots: Path
) -> None:
    quick, held, ids = loaded
    browser.set_window_size(375, 800)
    try:
        for page, testid, shot in (
            ("", "apis-page", "phone-apis.png"),
            (f"#/apis/{quick}", "api-page", "phone-api.png"),
            (f"#/apis/{quick}/requests/{ids['failed']}", "request-page", "phone-request.png"),
        ):
            browser.get(f"http://localhost:{mesh.ports['console']}/console/index.html{page}")
            by_id(browser, testid)
            wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "main table, main pre"), "content")
            width = browser.execute_script("return document.documentElement.scrollWidth")
            wide = browser.execute_script(
                "return [...document.querySelectorAll('body *')].filter(el => el.getBoundingClientRect().right > 376)"
                ".slice(0, 5).map(el => el.tagName + '.' + el.className + ' ' + el.getBoundingClientRect().right)"
            )
            assert width <= 375, f"{testid}: the page is {width}px wide on a 375px screen: {wide}"
            unlabelled = browser.execute_script(
                "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]"
                ".filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')"
                " && !el.textContent.trim()).map(el => el.outerHTML)"
            )
            assert unlabelled == [], f"{testid}: controls without a label: {unlabelled}"
            assert browser.execute_script(CONTRAST) == [], f"{testid}: text under 4.5:1 contrast"
            browser.save_screenshot(str(screenshots / shot))
    finally:
        browser.set_window_size(1280, 900)
        held.release.touch()
    assert severe_messages(browser) == []
