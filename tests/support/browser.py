"""Headless Chromium for the browser tier (tests/browser): Debian's ``chromium`` driven by its
``chromium-driver`` through Selenium, started with the flags that work on a closed network
(no background connections, no first-run, no sandbox as root), a fresh profile each, and a
screenshot helper writing into the run's artifacts directory (docs/web.md)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = os.environ.get("SHARDEX_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SHARDEX_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000")  # fmt: skip


def missing() -> str | None:
    """Why no browser can run here (None: both programs are installed)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (Path(path).exists() or shutil.which(path)):
            return f"{path} is not installed (Debian's chromium and chromium-driver)"
    return None


def artifacts_dir(fallback: Path) -> Path:
    """Where screenshots go: $SHARDEX_ARTIFACTS/browser if set, else ``fallback``."""
    root = os.environ.get("SHARDEX_ARTIFACTS")
    out = Path(root) / "browser" if root else fallback
    out.mkdir(parents=True, exist_ok=True)
    return out


class Browser:
    """One headless Chromium with its own empty profile (its own cookies: its own session)."""

    def __init__(self, shots: Path, name: str) -> None:
        self.profile = tempfile.mkdtemp(prefix="shardex-chromium-")
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for flag in (*FLAGS, f"--user-data-dir={self.profile}"):
            opts.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        self.shots, self.name, self.n = shots, name, 0

    def shot(self, what: str) -> Path:
        """A screenshot named by order, browser and step."""
        self.n += 1
        path = self.shots / f"{self.name}-{self.n:02d}-{what}.png"
        self.driver.save_screenshot(str(path))
        return path

    def until(self, pred: Callable[[Any], Any], what: str, timeout: float = 30) -> Any:
        """Wait (bounded) for ``pred(driver)`` to be truthy; on timeout a screenshot, then fail."""
        try:
            # (the page re-renders its tables: an element found a moment ago may be gone)
            return WebDriverWait(self.driver, timeout, poll_frequency=0.2,
                                 ignored_exceptions=(StaleElementReferenceException,)).until(pred)
        except TimeoutException:
            path = self.shot("timeout")
            raise AssertionError(f"{self.name}: {what} within {timeout} s (see {path}; "
                                 f"message: {self.text('message')!r})") from None

    def click(self, css: str) -> bool:
        """Click the first element ``css`` finds; False if there is none (or it was re-rendered
        in between: the caller's wait tries again)."""
        try:
            found = self.driver.find_elements("css selector", css)
            if found:
                found[0].click()
            return bool(found)
        except StaleElementReferenceException:
            return False

    def text(self, element_id: str) -> str:
        try:
            return self.driver.find_element("id", element_id).text
        except Exception:  # noqa: BLE001 - only for a failure's message
            return ""

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)
