"""The demo page in a real browser: Debian's Chromium driven by Playwright, for the browser test and for
`make screenshot` (docs/demo.png), which share this code.

Playwright's own browser download is not used: Chromium comes from the system (`apt-get install
chromium`), launched headless with a fresh profile and no background traffic.

    python scripts/browser.py --out docs/demo.png            # starts the stack itself
    python scripts/browser.py --url http://localhost:8000    # or uses a running one
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import BrowserContext, Page, ViewportSize, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `scripts.stack` importable
    sys.path.insert(0, str(ROOT))

from scripts.stack import ModelServerProcess, OrchestratorProcess, wait_http  # noqa: E402

# Where Chromium is looked for, first found wins; SHINE_CHROMIUM names another binary.
CHROMIUM_NAMES = ("chromium", "chromium-browser")
CHROMIUM_FLAGS = (
    "--no-sandbox",  # CI and containers run as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
PHONE: ViewportSize = {"width": 375, "height": 740}
DESKTOP: ViewportSize = {"width": 1200, "height": 900}
# A public-domain official portrait (see ../shared/data/SOURCES.md) where the model rings two lesions.
SCREENSHOT_PHOTO = ROOT.parent / "shared" / "data" / "faces" / "sn_city_portrait.jpg"  # CC0
RESULT_TIMEOUT_S = 60.0


def chromium_path() -> str | None:
    """The Chromium binary to drive, or None when the system has none."""
    named = os.environ.get("SHINE_CHROMIUM")
    if named:
        return named if Path(named).is_file() else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageLog:
    """What a page did besides rendering: every URL it requested and every console error (a CSP
    violation is reported there)."""

    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("console", lambda message: self._console(message))
        page.on("pageerror", lambda error: self.console_errors.append(str(error)))

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)


@contextmanager
def open_browser(
    viewport: ViewportSize = DESKTOP, user_data_dir: Path | None = None
) -> Iterator[BrowserContext]:
    """A headless Chromium with a fresh profile (a new temporary one unless `user_data_dir` is given);
    raises RuntimeError when the system has no Chromium."""
    executable = chromium_path()
    if executable is None:
        raise RuntimeError("no Chromium found (apt-get install chromium, or set SHINE_CHROMIUM)")
    profile = nullcontext(str(user_data_dir)) if user_data_dir else tempfile.TemporaryDirectory()
    with profile as folder, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            folder,
            executable_path=executable,
            headless=True,
            args=list(CHROMIUM_FLAGS),
            viewport=viewport,
            device_scale_factor=1,
        )
        try:
            yield context
        finally:
            context.close()


def analyse_on_demo(page: Page, url: str, photo: Path, timeout_s: float = RESULT_TIMEOUT_S) -> str:
    """Open the demo page, choose `photo` and wait for its answer; returns "result" or "error",
    whichever the page shows."""
    page.goto(url.rstrip("/") + "/demo")
    page.set_input_files("#photo", str(photo))
    page.wait_for_selector(
        "#result:not([hidden]), #error:not([hidden])", state="visible", timeout=timeout_s * 1000
    )
    return "result" if page.is_visible("#result") else "error"


def take_screenshot(url: str, out: Path, photo: Path = SCREENSHOT_PHOTO) -> None:
    """The demo page after a real analysis of `photo`, as a PNG at `out`."""
    with open_browser(DESKTOP) as browser:
        page = browser.new_page()
        shown = analyse_on_demo(page, url, photo)
        if shown != "result":
            raise RuntimeError(f"the demo page showed an error: {page.inner_text('#error')}")
        page.wait_for_function("document.getElementById('overlay').naturalWidth > 0")
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "demo.png")
    parser.add_argument("--url", help="a running service; by default the stack is started here")
    parser.add_argument("--photo", type=Path, default=SCREENSHOT_PHOTO)
    args = parser.parse_args(argv)
    if args.url:
        take_screenshot(args.url, args.out, args.photo)
    else:
        with tempfile.TemporaryDirectory() as logs:
            model = ModelServerProcess(Path(logs) / "model_server.log")
            orchestrator = OrchestratorProcess(model.address, Path(logs) / "gunicorn.log", workers=1)
            try:
                model.start()
                orchestrator.start()
                wait_http(orchestrator.url + "/health", 200, 60)
                take_screenshot(orchestrator.url, args.out, args.photo)
            finally:
                orchestrator.stop()
                model.stop()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
