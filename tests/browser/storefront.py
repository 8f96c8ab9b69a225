"""Driving the storefront in Debian's headless Chromium: launch, console watch, and a shopper's steps."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, ViewportSize, expect

from tests.support.prerequisites import require_binary
from tests.support.regions import System

LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
PASSWORD = "a long enough password"


def launch(playwright: Playwright, args: list[str] | None = None) -> Browser:
    """Debian's Chromium (never a browser Playwright downloads), with LAUNCH_ARGS unless `args` are given."""
    chromium = require_binary("chromium")
    return playwright.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS if args is None else args)


@dataclass
class ConsoleWatch:
    """Every console error and uncaught exception of the pages it watches."""

    errors: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> Page:
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        return page

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text} ({message.location.get('url', '')})")


def unique_email(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}@example.com"


def add_user(system: System, email: str, password: str = PASSWORD) -> None:
    """A confirmed account, made as an operator would (`bookstore users add`)."""
    system.cli("users", "add", email, "--password", password, "--data-dir", str(system.data_dir))


def confirmation_code(system: System, email: str) -> str:
    """What `bookstore users confirm-code` prints: there is no mail server."""
    done = system.cli("users", "confirm-code", email, "--data-dir", str(system.data_dir))
    return done.stdout.strip()


def operator_link(system: System) -> str:
    """A one-time sign-in link to the operator page, as `bookstore operator-link` prints it."""
    return system.cli("operator-link").stdout.strip()


def sign_in(page: Page, email: str, password: str = PASSWORD) -> None:
    page.get_by_role("link", name="Sign in", exact=True).first.click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Welcome back")).to_be_visible()


def add_from_grid(page: Page, title: str) -> None:
    """Press "Add to cart" on the card of `title` in the grid shown."""
    page.get_by_role("button", name=f"Add “{title}” to cart").click()


def grid_titles(page: Page) -> list[str]:
    return page.locator(".book-grid .book-title").all_inner_texts()


def sold(page: Page, title: str) -> int:
    """Copies of `title` sold as the best-sellers page shows them (0 when it is not listed)."""
    card = page.locator(".book-card", has=page.get_by_role("link", name=title, exact=True))
    if card.count() == 0:
        return 0
    match = re.search(r"(\d+) sold", card.first.inner_text())
    assert match, card.first.inner_text()
    return int(match.group(1))


def no_visible_error(page: Page) -> None:
    for selector in (".notice.error", ".toast.error"):
        shown = [t for t in page.locator(f"{selector}:visible").all_inner_texts() if t.strip()]
        assert not shown, f"the shopper saw an error: {shown}"
