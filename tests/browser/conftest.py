"""Fixtures of the browser tests: one `bookstore up` with its edge and one Chromium per module."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, sync_playwright

from tests.browser.storefront import CHROMIUM, DESKTOP, ConsoleWatch, launch
from tests.support.regions import System, system_up


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: headless Chromium driving the storefront through the edge")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Outside CI a missing Chromium skips with the reason; in CI (CI=true) the tests run and fail.
    if os.environ.get("CI") == "true":
        return
    skip = pytest.mark.skip(reason="chromium is not installed (apt-get install -y chromium)")
    for item in items:
        if item.get_closest_marker("browser") and CHROMIUM is None:
            item.add_marker(skip)


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
