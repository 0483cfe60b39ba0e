"""The demo page in a real browser (Debian's Chromium driven by Playwright) against the real stack: a
real face shows its scores and the overlay, a non-face shows its error message, a phone-width screen
needs no sideways scrolling, and the page loads nothing from other sites and breaks no security policy.

Without Chromium the tests skip and say why; under CI=true they fail instead, unless .ci/run could not
use apt-get there and says so in SHINE_CHROMIUM_OPTIONAL.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

pytest.importorskip("playwright.sync_api")

from playwright.sync_api import BrowserContext, Page

from scripts.browser import PHONE, PageLog, analyse_on_demo, chromium_path, open_browser
from scripts.stack import ModelServerProcess, OrchestratorProcess
from tests.conftest import IN_CI, data_dir, missing

pytestmark = pytest.mark.e2e

Stack = tuple[ModelServerProcess, OrchestratorProcess]
FACE = "congress_B001270.jpg"
NONFACE = "skimage_coffee.png"


# Checked at collection, before the stack is started for nothing.
if chromium_path() is None:
    _REASON = "Chromium not found (apt-get install chromium, or set SHINE_CHROMIUM to its path)"
    _OPTIONAL = os.environ.get("SHINE_CHROMIUM_OPTIONAL", "")
    if IN_CI and not _OPTIONAL:
        missing(_REASON)
    pytest.skip(f"{_REASON}; {_OPTIONAL}" if _OPTIONAL else _REASON, allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserContext]:
    with open_browser() as context:
        yield context


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    page = browser.new_page()
    try:
        yield page
    finally:
        page.close()


def _api(url: str, photo: Path) -> tuple[int, dict[str, Any]]:
    """What the API itself answers for `photo` (answers are deterministic for a photo)."""
    with photo.open("rb") as image:
        response = requests.post(url + "/api/v2/analyze/guest", files={"image": image}, timeout=60)
    return response.status_code, response.json()


def _stays_home(log: PageLog, url: str) -> None:
    """Nothing was asked of another site and nothing was refused or failed on the page."""
    assert log.requests and all(r.startswith((url + "/", "data:")) for r in log.requests), log.requests
    assert log.console_errors == []


def test_a_face_shows_its_scores_and_the_overlay(live_stack: Stack, page: Page) -> None:
    url = live_stack[1].url
    photo = data_dir("faces") / FACE
    log = PageLog()
    log.watch(page)
    assert analyse_on_demo(page, url, photo) == "result"
    status, report = _api(url, photo)
    assert status == 200

    overlay = page.locator("#overlay")
    assert (overlay.get_attribute("src") or "").startswith("data:image/png;base64,")
    page.wait_for_function("document.getElementById('overlay').naturalWidth > 0")
    natural = page.evaluate(
        "(img => [img.naturalWidth, img.naturalHeight])(document.getElementById('overlay'))"
    )
    assert natural[0] > 100 and natural[1] > 100 and max(natural) <= 1024
    shown = overlay.bounding_box()
    assert shown and shown["width"] > 200

    assert page.inner_text("#overall-score") == f"{report['overall']['score']:.0f}"
    items = page.locator("#concerns li.concern")
    assert items.count() == len(report["concerns"])
    for index, (name, concern) in enumerate(report["concerns"].items()):
        item = items.nth(index)
        assert item.get_attribute("data-concern") == name
        if concern["score"] is None:
            # Not scored (pores below their scale on a portrait): said so, with the answer's reason.
            assert item.locator(".concern-score").inner_text() == "n/a"
            assert item.locator(".concern-note").first.inner_text() == concern["reason"]
            continue
        assert item.locator(".concern-score").inner_text() == f"{concern['score']:.0f}"
        assert item.locator(".badge").inner_text() == concern["severity"].replace("_", " ")
        # The bar is as long as the score: its fill's share of the track.
        track = item.locator(".bar").bounding_box()
        fill = item.locator(".fill").bounding_box()
        assert track and fill
        assert abs(fill["width"] / track["width"] * 100 - concern["score"]) < 2, name
    suggestions = page.locator("#recommendations > li")
    assert suggestions.count() == len(report["recommendations"]) > 0
    shown_codes = page.locator("#warnings li[data-code]").evaluate_all(
        "items => items.map(i => i.dataset.code)"
    )
    assert shown_codes == report["quality"]["warnings"]
    if not report["quality"]["warnings"]:
        assert page.inner_text("#warnings") == "No problems with the photo."
    assert page.is_hidden("#error")
    _stays_home(log, url)


def test_a_non_face_shows_its_error_message(live_stack: Stack, page: Page) -> None:
    url = live_stack[1].url
    photo = data_dir("nonfaces") / NONFACE
    log = PageLog()
    log.watch(page)
    assert analyse_on_demo(page, url, photo) == "error"
    status, answer = _api(url, photo)
    assert status == 422
    assert page.inner_text("#error-message") == answer["error"]["message"]
    assert page.inner_text("#error-code").startswith("NO_FACE_FOUND")
    assert page.is_hidden("#result")
    # The 422 itself is the only failed load the browser reports.
    log.console_errors = [e for e in log.console_errors if "status of 422" not in e]
    _stays_home(log, url)


def test_a_dropped_photo_is_analysed_after_an_error(live_stack: Stack, page: Page) -> None:
    """Dropping a photo anywhere on the page analyses it; a result replaces the earlier error."""
    url = live_stack[1].url
    assert analyse_on_demo(page, url, data_dir("nonfaces") / NONFACE) == "error"
    data = base64.b64encode((data_dir("faces") / FACE).read_bytes()).decode("ascii")
    page.evaluate(
        """(data) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "dropped.jpg", { type: "image/jpeg" }));
            document.getElementById("drop").dispatchEvent(
                new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
        }""",
        data,
    )
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    assert page.is_hidden("#error")
    assert page.inner_text("#status") == "Analysed dropped.jpg."


def test_a_phone_width_screen_needs_no_sideways_scrolling(live_stack: Stack, page: Page) -> None:
    page.set_viewport_size(PHONE)
    url = live_stack[1].url
    page.goto(url + "/demo")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert analyse_on_demo(page, url, data_dir("faces") / FACE) == "result"
    page.wait_for_function("document.getElementById('overlay').naturalWidth > 0")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    # One column: the picture and the report each take the screen's width, one above the other.
    picture = page.locator(".picture").bounding_box()
    report = page.locator(".report").bounding_box()
    assert picture and report
    assert picture["x"] >= 0 and picture["x"] + picture["width"] <= PHONE["width"]
    assert report["y"] >= picture["y"] + picture["height"]
    chooser = page.locator("#photo").bounding_box()
    assert chooser and chooser["x"] >= 0 and chooser["x"] + chooser["width"] <= PHONE["width"]
