"""Headless Chromium from Debian (`chromium`, `chromium-driver`) driven by Selenium, for the status
page's tests. Never a downloaded browser: the driver and the browser are the system's."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = ("/usr/bin/chromedriver",)


def _first(paths: tuple[str, ...], name: str) -> str | None:
    return next((p for p in paths if os.path.exists(p)), None) or shutil.which(name)


def need_browser() -> tuple[str, str]:
    """(chromium, chromedriver); skips (fails in CI: VIGIL_REQUIRE_BROWSER=1) when one is missing."""
    browser, driver = _first(CHROMIUM, "chromium"), _first(CHROMEDRIVER, "chromedriver")
    missing = [n for n, p in (("chromium", browser), ("chromium-driver", driver)) if p is None]
    try:
        import selenium  # noqa: F401 - only whether it is installed
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        reason = f"no headless browser: install {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("VIGIL_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    assert browser is not None and driver is not None
    return browser, driver


def start_chromium(profile: Path, width: int = 1400, height: int = 1000):
    """A headless Chromium (as the probe of this machine kind starts it: no background networking,
    a fresh profile), driven through the system's chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = need_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(arg)
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    chrome.set_page_load_timeout(30)
    chrome.set_script_timeout(30)
    return chrome
