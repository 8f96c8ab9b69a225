"""Fixtures of the browser tests: one `bookstore up` with its edge and one Chromium per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, sync_playwright

from tests.browser.storefront import DESKTOP, ConsoleWatch, launch
from tests.support.prerequisites import require_binary
from tests.support.regions import System, system_up


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: headless Chromium driving the storefront through the edge")


@pytest.fixture(scope="session", autouse=True)
def chromium_installed() -> None:
    """Before any system starts: without Chromium skip with the reason, or fail in CI (CI=true)."""
    require_binary("chromium")


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """`bookstore up` with the edge: the storefront published to the home bucket, /api and /blog behind it."""
    with system_up(tmp_path_factory.mktemp("browser"), edge="") as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def console() -> ConsoleWatch:
    return ConsoleWatch()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile per test (its own sessionStorage), at desktop size."""
    ctx = browser.new_context(viewport=DESKTOP)
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()
