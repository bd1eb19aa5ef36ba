"""Headless Chromium (playwright) settings for the web page tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--autoplay-policy=no-user-gesture-required"]


def _require_browser() -> None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright==1.65.2)")
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium)")


def browser_stack(request: pytest.FixtureRequest) -> Any:
    """The shared stack (tests.support.stack), or a skip when there is no browser; use as a
    module's `stack` fixture: `stack = pytest.fixture(browser_stack, scope="module",
    name="stack")`."""
    from tests.support.stack import shared_stack

    _require_browser()
    return shared_stack(request)


def open_page(browser: Any, url: str, ready: str) -> tuple[Any, list[str]]:
    """A 1200x900 page at `url`, once the JS condition `ready` holds, and the list its
    uncaught errors are appended to."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(url)
    page.wait_for_function(ready)
    return page, errors


@contextmanager
def chromium_page(url: str, ready: str) -> Iterator[Any]:
    """A page of a fresh headless Chromium at `url` (see `open_page`); its uncaught errors
    are in `page.errors`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page, errors = open_page(browser, url, ready)
            page.errors = errors
            yield page
        finally:
            browser.close()
