"""Headless Chromium for the browser tests (Debian's ``chromium`` and ``chromedriver``, driven
by Selenium): one set of flags and one skip rule for every test that needs a real browser.

- ``chromium(profile=None)``: a new browser, with its own profile (cookies, storage): a fresh
  temporary one, or the folder given. Skips the test when Selenium, chromium or chromedriver
  is missing (.ci/run installs them). The caller quits it.
- ``wait_js(driver, script, timeout, what)``: poll a JS expression in the page until truthy.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

__all__ = ["FLAGS", "chromium", "wait_js"]

#: headless, and what a root container without a GPU or a big /dev/shm needs
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--disable-extensions")


def chromium(profile: Path | None = None) -> Any:
    webdriver = pytest.importorskip("selenium.webdriver")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.skip("chromium and chromedriver are needed (apt-get install chromium "
                    "chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in FLAGS:
        opts.add_argument(arg)
    if profile is not None:
        opts.add_argument(f"--user-data-dir={profile}")
    return webdriver.Chrome(service=Service(driver_path), options=opts)


def wait_js(driver: Any, script: str, timeout: float, what: str) -> tuple[Any, float]:
    """Poll a JS expression in the page until truthy; (value, seconds it took)."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        value = driver.execute_script(script)
        if value:
            return value, time.monotonic() - t0
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.1f} s waiting for {what}; page:\n"
                                 + driver.execute_script("return document.body.innerText"))
        time.sleep(0.02)
