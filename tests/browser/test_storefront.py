"""The storefront and the operator page in headless Chromium, through the edge of a real `bookstore up`."""

from __future__ import annotations

import re
import time

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, Route, expect

from tests.browser.storefront import (
    PASSWORD,
    PHONE,
    ConsoleWatch,
    add_from_grid,
    add_user,
    confirmation_code,
    grid_titles,
    no_visible_error,
    operator_link,
    sign_in,
    sold,
    unique_email,
)
from tests.support.regions import System

pytestmark = [pytest.mark.browser, pytest.mark.system, pytest.mark.xdist_group("browser")]

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
FIRST_PAGE_BUDGET_BYTES = 300_000


def edge(system: System) -> str:
    return system.topology.edge.url


def price(text: str) -> int:
    """Cents of the first "$12.34" in `text`."""
    match = re.search(r"\$(\d+)\.(\d\d)", text)
    assert match, text
    return int(match.group(1)) * 100 + int(match.group(2))


def open_store(context: BrowserContext, console: ConsoleWatch, system: System, route: str = "") -> Page:
    page = console.watch(context.new_page())
    page.goto(f"{edge(system)}/{route}")
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    return page


def test_the_first_page_is_light_lazy_and_served_from_the_bucket(
    system: System, context: BrowserContext, console: ConsoleWatch
) -> None:
    page = open_store(context, console, system)
    expect(page.locator("#region-name")).to_have_text("Ireland")
    expect(page.get_by_role("link", name="Book Blog").first).to_have_attribute("href", "/blog/")
    page.wait_for_load_state("networkidle")
    transferred = page.evaluate(
        """() => performance.getEntriesByType("navigation")[0].transferSize +
                 performance.getEntriesByType("resource").reduce((sum, r) => sum + r.transferSize, 0)"""
    )
    assert 0 < transferred < FIRST_PAGE_BUDGET_BYTES
    covers = page.locator("img.cover")
    assert covers.count() >= 8
    assert set(covers.evaluate_all("els => els.map(e => e.loading)")) == {"lazy"}

    # `bookstore publish` put the packaged storefront in the home bucket with the types browsers need.
    with httpx.Client(base_url=edge(system), timeout=10) as client:
        for path, wanted in (
            ("/", "text/html"),
            ("/app.css", "text/css"),
            ("/js/app.js", "text/javascript"),
            ("/flags/sg.svg", "image/svg+xml"),
            ("/covers/bk-cook-001.svg", "image/svg+xml"),
            ("/some/page/of/the/app", "text/html"),
        ):
            answer = client.get(path)
            assert answer.status_code == 200, path
            assert answer.headers["content-type"].startswith(wanted), path
            # The storefront's own files, under a policy that runs no inline script.
            policy = answer.headers["content-security-policy"]
            assert "script-src 'self'" in policy and "unsafe-inline" not in policy, path
        # The operator page is the edge's, not the bucket's.
        assert client.get("/operator/index.html").status_code == 404

    phone = console.watch(context.new_page())
    phone.set_viewport_size(PHONE)
    phone.goto(edge(system))
    expect(phone.get_by_role("heading", level=1)).to_be_visible()
    expect(phone.get_by_role("button", name="Sign up")).to_be_visible()
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert console.errors == []


def test_a_shopper_signs_up_shops_checks_out_and_moves_the_best_sellers(
    system: System, context: BrowserContext, console: ConsoleWatch
) -> None:
    page = open_store(context, console, system)
    email = unique_email("journey")

    # Sign up on the landing page; the code comes from the operator's command, as there is no mail.
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_role("heading", name="Confirm your email")).to_be_visible()
    expect(page.get_by_text("bookstore users confirm-code YOUR-EMAIL")).to_be_visible()
    expect(page.get_by_label("Email")).to_have_value(email)
    page.get_by_label("Confirmation code").fill(confirmation_code(system, email))
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_label("Email")).to_have_value(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Welcome back")).to_be_visible()
    expect(page.locator("#account")).to_contain_text(email)

    # Browse a category and add its first book.
    categories = page.get_by_role("navigation", name="Categories")
    categories.get_by_role("link", name=re.compile("^Database")).click()
    expect(page.get_by_role("heading", name=re.compile("^Database"))).to_be_visible()
    first = grid_titles(page)[0]
    add_from_grid(page, first)
    expect(page.locator("#cart-count")).to_have_text("1")

    # Search, and add the first result.
    page.get_by_role("search").first.get_by_label("Search books").fill("bread")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name=re.compile("Results for “bread”"))).to_be_visible()
    found = grid_titles(page)
    assert found and first not in found
    second = found[0]
    add_from_grid(page, second)
    expect(page.locator("#cart-count")).to_have_text("2")

    # The best sellers before this order.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Best sellers").click()
    expect(page.get_by_role("heading", name=re.compile("^Best sellers"))).to_be_visible()
    sold_before = sold(page, first)

    # The cart: three of the first book, none of the second.
    page.get_by_role("navigation", name="Main").get_by_role("link", name=re.compile("^Cart")).click()
    expect(page.get_by_role("heading", name="Your cart")).to_be_visible()
    expect(page.locator(".cart-table tbody tr")).to_have_count(2)
    quantity = page.get_by_label(f"Quantity of {first}")
    quantity.fill("3")
    quantity.press("Tab")
    expect(page.locator("#cart-count")).to_have_text("4")
    page.get_by_role("button", name=f"Remove {second}").click()
    expect(page.locator(".cart-table tbody tr")).to_have_count(1)
    expect(page.locator("#cart-count")).to_have_text("3")
    row = page.locator(".cart-table tbody tr").first
    unit = price(row.locator("td").nth(1).inner_text())
    expect(page.locator("#cart-total")).to_contain_text(f"${unit * 3 // 100}.{unit * 3 % 100:02d}")

    # Checkout with the dummy card; the order carries an Idempotency-Key.
    page.get_by_role("link", name=re.compile(r"^Check out")).click()
    expect(page.get_by_role("heading", name="Checkout")).to_be_visible()
    pay = page.get_by_role("button", name=re.compile(r"^Pay \(\$"))
    assert price(pay.inner_text()) == unit * 3
    page.get_by_label("Name on card").fill("Ada Shopper")
    with page.expect_request(lambda r: r.url.endswith("/api/orders") and r.method == "POST") as sent:
        pay.click()
    assert UUID.match(sent.value.headers["idempotency-key"])
    expect(page.get_by_role("heading", name="Thank you for your order")).to_be_visible()
    expect(page.locator("#cart-count")).to_be_hidden()

    # Past orders, newest first, with "buy again".
    page.get_by_role("link", name="Past orders").click()
    expect(page.get_by_role("heading", name=re.compile("^Past orders"))).to_be_visible()
    orders = page.locator("li.order")
    expect(orders).to_have_count(1)
    expect(orders.first).to_contain_text(first)
    expect(orders.first).to_contain_text("\u00d7 3")  # "times 3"
    orders.first.get_by_role("button", name="Buy again").click()
    expect(page.get_by_role("heading", name="Your cart")).to_be_visible()
    expect(page.locator("#cart-count")).to_have_text("3")

    # The best sellers count the order once its stream has been read.
    page.goto(f"{edge(system)}/#/bestsellers")
    deadline = time.monotonic() + 30
    while True:
        expect(page.get_by_role("heading", name=re.compile("^Best sellers"))).to_be_visible()
        if sold(page, first) == sold_before + 3:
            break
        assert time.monotonic() < deadline, f"the best sellers never counted the order of {first}"
        time.sleep(0.5)
        page.reload()
    no_visible_error(page)
    assert console.errors == []


def test_the_store_works_from_the_keyboard(
    system: System, context: BrowserContext, console: ConsoleWatch
) -> None:
    page = open_store(context, console, system)
    page.keyboard.press("Tab")
    expect(page.locator(".skip-link")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    page.locator("#search-input").focus()
    page.keyboard.type("bread")
    page.keyboard.press("Enter")
    heading = page.get_by_role("heading", name=re.compile("Results for “bread”"))
    expect(heading).to_be_focused()
    # From the heading, the next stop is the first result's title (its cover is not a second stop).
    title = grid_titles(page)[0]
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name=title, exact=True)).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name=title, level=1)).to_be_focused()
    assert console.errors == []


def test_a_failed_call_shows_the_shopper_a_message(
    system: System, context: BrowserContext, console: ConsoleWatch
) -> None:
    page = open_store(context, console, system, "#/book/no-such-book")
    expect(page.get_by_role("heading", name="Sorry, that did not work")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("No book with id no-such-book")
    expect(page.get_by_role("button", name="Try again")).to_be_visible()

    page.goto(f"{edge(system)}/#/signin")
    page.get_by_label("Email").fill(unique_email("nobody"))
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Wrong email or password")

    page.goto(f"{edge(system)}/#/cart")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("status").filter(has_text="Please sign in first")).to_be_visible()
    # The browser reports the 404 and 401 answers themselves; nothing else may go wrong.
    assert [e for e in console.errors if "Failed to load resource" not in e] == []
    assert len(console.errors) == 2


def test_a_rejected_access_token_is_refreshed_once_and_the_call_repeated(
    system: System, context: BrowserContext, console: ConsoleWatch
) -> None:
    email = unique_email("refresh")
    add_user(system, email)
    page = open_store(context, console, system)
    sign_in(page, email)
    stale = page.evaluate(
        """() => {
            const s = JSON.parse(sessionStorage.getItem("bookstore.session"));
            s.accessToken = "stale." + s.accessToken;
            sessionStorage.setItem("bookstore.session", JSON.stringify(s));
            return s.accessToken;
        }"""
    )
    refreshes: list[str] = []
    page.on("request", lambda r: refreshes.append(r.url) if r.url.endswith("/api/auth/refresh") else None)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Orders").click()
    expect(page.get_by_role("heading", name=re.compile("^Past orders"))).to_be_visible()
    expect(page.get_by_text("No orders yet.")).to_be_visible()
    assert len(refreshes) == 1
    fresh = page.evaluate("JSON.parse(sessionStorage.getItem('bookstore.session')).accessToken")
    assert fresh != stale
    expect(page.locator("#account")).to_contain_text(email)
    # The rejected call is the one failed load the browser reports.
    assert len(console.errors) == 1 and "401" in console.errors[0]


def test_breaking_irelands_api_from_the_operator_page_keeps_the_store_working(
    system: System, context: BrowserContext, console: ConsoleWatch
) -> None:
    email = unique_email("failover")
    add_user(system, email)
    shop = open_store(context, console, system)
    expect(shop.locator("#region-name")).to_have_text("Ireland")
    sign_in(shop, email)
    shop.get_by_role("navigation", name="Categories").get_by_role("link", name=re.compile("^Cars")).click()
    title = grid_titles(shop)[0]
    add_from_grid(shop, title)
    expect(shop.locator("#cart-count")).to_have_text("1")
    token = shop.evaluate("JSON.parse(sessionStorage.getItem('bookstore.session')).accessToken")
    with system.api("ap-southeast-1") as singapore:
        deadline = time.monotonic() + 20
        while not singapore.get("/cart", headers={"authorization": f"Bearer {token}"}).json():
            assert time.monotonic() < deadline, "the cart never reached Singapore"
            time.sleep(0.2)

    operator = console.watch(context.new_page())
    # Without signing in, the page shows how to, and nothing of the system.
    operator.goto(f"{edge(system)}/edge/ui/")
    expect(operator.get_by_role("heading", name="Sign in as the operator")).to_be_visible()
    expect(operator.get_by_role("button", name="Break Ireland's API")).to_have_count(0)
    # The deliberate step: the one-time link the operator's command prints.
    link = operator_link(system)
    operator.goto(link)
    expect(operator.get_by_role("heading", name="Sign in as the operator")).to_be_hidden()
    assert "#login=" not in operator.url  # the code leaves the address bar (and the history)
    ireland = operator.locator("[data-region='eu-west-1']")
    singapore_card = operator.locator("[data-region='ap-southeast-1']")
    expect(ireland).to_contain_text("API healthy")
    expect(ireland).to_contain_text("answers API calls")
    try:
        operator.get_by_role("button", name="Break Ireland's API").click()
        expect(ireland).to_contain_text("API broken")
        expect(singapore_card).to_contain_text("answers API calls")
        expect(operator.locator("#events")).to_contain_text("now answers ap-southeast-1")

        shop.bring_to_front()
        shop.get_by_role("navigation", name="Main").get_by_role("link", name=re.compile("^Cart")).click()
        expect(shop.get_by_role("heading", name="Your cart")).to_be_visible()
        expect(shop.get_by_role("link", name=title, exact=True)).to_be_visible()
        shop.get_by_role("link", name=re.compile(r"^Check out")).click()
        shop.get_by_label("Name on card").fill("Grace Failover")
        checkout = shop.expect_response(
            lambda r: r.url.endswith("/api/orders") and r.request.method == "POST"
        )
        with checkout as paid:
            shop.get_by_role("button", name=re.compile(r"^Pay \(\$")).click()
        assert paid.value.status == 201
        assert paid.value.headers["x-bookstore-region"] == "ap-southeast-1"
        expect(shop.get_by_role("heading", name="Thank you for your order")).to_be_visible()
        expect(shop.locator("#region-name")).to_have_text("Singapore")
        no_visible_error(shop)
    finally:
        operator.get_by_role("button", name="Repair Ireland's API").click()
    expect(ireland).to_contain_text("API healthy")
    expect(ireland).to_contain_text("answers API calls", timeout=20_000)
    # The link was good for one sign-in: opened again, in another tab, it is refused.
    again = console.watch(context.new_page())
    again.goto(link)
    expect(again.get_by_role("heading", name="Sign in as the operator")).to_be_visible()
    expect(again.locator("#signin-reason")).to_contain_text("expired or was used already")
    # The browser reports the refused sign-in (401) itself; nothing else may go wrong.
    assert [e for e in console.errors if "Failed to load resource" not in e] == []
    assert len(console.errors) == 1 and "401" in console.errors[0]


def test_the_storefront_follows_the_api_s_pages_to_the_last(
    system: System, context: BrowserContext, console: ConsoleWatch
) -> None:
    # The real API pages at 5 books here (each of the storefront's /api/books calls gets limit=5 added
    # on its way): the category page must follow X-Next-Cursor to show all 26 cookbooks.
    calls: list[str] = []

    def five_at_a_time(route: Route) -> None:
        url = route.request.url
        calls.append(url)
        separator = "&" if "?" in url else "?"
        route.continue_(url=f"{url}{separator}limit=5")

    context.route(re.compile(r".*/api/books(\?.*)?$"), five_at_a_time)
    page = open_store(context, console, system, "#/category/Cookbooks")
    expect(page.locator(".book-grid .book-title")).to_have_count(26)
    titles = grid_titles(page)
    assert len(set(titles)) == 26
    assert sum("category=Cookbooks" in call for call in calls) == 6  # 5 + 5 + 5 + 5 + 5 + 1
    assert any("cursor=" in call for call in calls)
    assert console.errors == []
