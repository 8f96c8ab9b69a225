"""`make screenshots`: the storefront's main pages and the operator page, at desktop and phone sizes.

Starts `bookstore up` with its edge on an isolated topology in a temporary directory, shops as a
signed-in user through the edge (so the pages show real orders and best sellers), and writes
docs/screenshots/<page>-desktop.png (1280x800) and <page>-phone.png (390x844).
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright

from tests.browser.storefront import (
    DESKTOP,
    PHONE,
    add_from_grid,
    add_user,
    launch,
    operator_link,
    sign_in,
    unique_email,
)
from tests.support.regions import System, system_up

OUT = Path("docs/screenshots")
SIZES: dict[str, ViewportSize] = {"desktop": DESKTOP, "phone": PHONE}
# Toasts come and go; a still picture shows the page without them, and without a hovered link. Set
# through the CSSOM: the pages' Content-Security-Policy refuses an injected <style>.
STILL = """() => document.querySelectorAll(".toasts").forEach(
    (el) => el.style.setProperty("display", "none", "important"))"""


def settle(page: Page) -> None:
    """Wait until the page's requests are done and every cover in view has loaded."""
    page.wait_for_load_state("networkidle")
    page.wait_for_function(
        """() => [...document.images].every(img => img.complete ||
             img.getBoundingClientRect().top > innerHeight)"""
    )
    page.mouse.move(0, 0)
    page.evaluate("window.scrollTo(0, 0)")
    page.evaluate(STILL)


def shoot(page: Page, name: str, size: str, out: Path) -> None:
    settle(page)
    path = out / f"{name}-{size}.png"
    page.screenshot(path=str(path))
    print(f"wrote {path}", flush=True)


def storefront(browser: Browser, system: System, email: str, size: str, out: Path) -> None:
    base = system.topology.edge.url
    context = browser.new_context(viewport=SIZES[size])
    page = context.new_page()
    page.goto(base)
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    shoot(page, "landing", size, out)
    sign_in(page, email)
    shoot(page, "home", size, out)

    page.goto(f"{base}/#/category/Cookbooks")
    expect(page.get_by_role("heading", name=re.compile("^Cookbooks"))).to_be_visible()
    shoot(page, "category", size, out)
    page.goto(f"{base}/#/search?q=database")
    expect(page.get_by_role("heading", name=re.compile("^Results"))).to_be_visible()
    shoot(page, "search", size, out)
    page.goto(f"{base}/#/book/bk-cook-003")
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    shoot(page, "book", size, out)

    fill_cart(page, base, [("Database", 2)])
    page.goto(f"{base}/#/cart")
    expect(page.get_by_role("heading", name="Your cart")).to_be_visible()
    shoot(page, "cart", size, out)
    page.get_by_role("link", name=re.compile(r"^Check out")).click()
    page.get_by_label("Name on card").fill("Ada Shopper")
    shoot(page, "checkout", size, out)
    page.get_by_role("button", name=re.compile(r"^Pay")).click()
    expect(page.get_by_role("heading", name="Thank you for your order")).to_be_visible()
    shoot(page, "confirmation", size, out)
    page.goto(f"{base}/#/orders")
    expect(page.locator("li.order").first).to_be_visible()
    shoot(page, "orders", size, out)
    page.goto(f"{base}/#/bestsellers")
    expect(page.locator(".book-grid").first).to_be_visible()
    shoot(page, "bestsellers", size, out)
    context.close()


def fill_cart(page: Page, base: str, picks: list[tuple[str, int]]) -> None:
    """Add the first `count` books of each category, waiting for each to be in the cart."""
    added = 0
    for category, count in picks:
        page.goto(f"{base}/#/category/{category.replace(' ', '%20')}")
        expect(page.get_by_role("heading", name=re.compile(f"^{category}"))).to_be_visible()
        for title in page.locator(".book-grid .book-title").all_inner_texts()[:count]:
            add_from_grid(page, title)
            added += 1
            expect(page.locator("#cart-count")).to_have_text(str(added))


def first_order(browser: Browser, system: System, email: str) -> None:
    """Orders of a few books, so the best sellers have a ranking before the pictures are taken."""
    base = system.topology.edge.url
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.goto(base)
    sign_in(page, email)
    fill_cart(page, base, [("Cookbooks", 3), ("Fairy Tales", 2), ("Science Fiction", 1)])
    page.goto(f"{base}/#/checkout")
    page.get_by_label("Name on card").fill("Ada Shopper")
    page.get_by_role("button", name=re.compile(r"^Pay")).click()
    expect(page.get_by_role("heading", name="Thank you for your order")).to_be_visible()
    context.close()
    time.sleep(1.0)  # the best sellers are fed by the orders' stream


def operator(browser: Browser, system: System, out: Path) -> None:
    base = system.topology.edge.url
    for size, viewport in SIZES.items():
        context = browser.new_context(viewport=viewport)
        page = context.new_page()
        page.goto(operator_link(system))  # the operator's deliberate sign-in step
        expect(page.locator("[data-region='eu-west-1']")).to_contain_text("API healthy")
        shoot(page, "operator", size, out)
        context.close()
    # The failover drill: Ireland's API broken, the edge sends the shoppers to Singapore.
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.goto(operator_link(system))
    page.get_by_role("button", name="Break Ireland's API").click()
    expect(page.locator("[data-region='ap-southeast-1']")).to_contain_text("answers API calls")
    shoot(page, "operator-failover", "desktop", out)
    shop = context.new_page()
    shop.goto(f"{base}/#/bestsellers")
    expect(shop.locator("#region-name")).to_have_text("Singapore")
    shoot(shop, "bestsellers-from-singapore", "desktop", out)
    page.get_by_role("button", name="Repair Ireland's API").click()
    context.close()


def drill_report(browser: Browser, system: System, out: Path) -> None:
    """A short region-outage drill against the running system, and the top of its HTML report."""
    done = system.cli(
        "drill", "region-outage", "--attach", "--duration", "20", "--rate", "30",
        "--data-dir", str(system.data_dir), "--json", check=False,
    )  # fmt: skip
    record = json.loads(done.stdout)
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.goto(Path(record["files"]["report"]).as_uri())
    expect(page.locator("svg").first).to_be_visible()
    path = out / "drill-report-desktop.png"
    page.screenshot(path=str(path), full_page=True)  # the checks and the whole timeline
    print(f"wrote {path}", flush=True)
    context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="bookstore-screenshots-") as tmp,
        system_up(Path(tmp), edge="") as system,
        sync_playwright() as playwright,
    ):
        browser = launch(playwright)
        email = unique_email("ada")
        add_user(system, email)
        first_order(browser, system, email)
        for size in SIZES:
            storefront(browser, system, email, size, args.out)
        operator(browser, system, args.out)
        drill_report(browser, system, args.out)
        browser.close()


if __name__ == "__main__":
    main()
