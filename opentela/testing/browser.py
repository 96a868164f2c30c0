"""Headless Chromium for the status page's browser test and its screenshot script.

The system's Chromium and chromedriver (Debian ``chromium`` + ``chromium-driver``; the repo's
``scripts/chromium-up.sh`` installs them): selenium is handed both paths, so it never looks
for (or downloads) a browser or a driver of its own. selenium comes with the ``test`` extra.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def system_chromium() -> tuple[str, str] | None:
    """(chromium, chromedriver) paths when both are installed, else None."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if driver is None and Path("/usr/lib/chromium/chromedriver").exists():
        driver = "/usr/lib/chromium/chromedriver"
    return (browser, driver) if browser and driver else None


@contextmanager
def open_chromium(
    browser: str, driver: str, width: int = 1280, height: int = 900, log: Path | None = None
) -> Iterator[Any]:
    """A headless Chromium WebDriver, quit on exit (its processes with it)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace sandbox
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--metrics-recording-only",
        f"--window-size={width},{height}",
    ):
        opts.add_argument(arg)
    service = Service(executable_path=driver, log_output=str(log) if log else None)
    drv = webdriver.Chrome(options=opts, service=service)
    try:
        yield drv
    finally:
        drv.quit()


def wait_until(pred: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll ``pred`` (a page query) until it returns something true, with a deadline."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            got = pred()
            if got:
                return got
        except Exception as exc:  # an element replaced by a refresh between two reads
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}: {last!r}")


def full_page_png(drv: Any, path: Path) -> Path:
    """A screenshot of the whole page, below the fold included (Chrome DevTools'
    ``captureBeyondViewport``)."""
    import base64

    size = drv.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = drv.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        },
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    return path
