"""GET /books and GET /orders a page at a time (issue 16): a limit, an opaque cursor in X-Next-Cursor and
Link, every item exactly once across the pages while writes go on, and clear 400s for bad pages."""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import parse_qsl

from starlette.testclient import TestClient

from bookstore.region.services import RegionServices
from bookstore.services.catalog import seed_books
from tests.integration.test_api import assert_error, sign_in


def new_books(n: int, prefix: str) -> list[dict[str, Any]]:
    template = seed_books()[0]
    return [{**template, "id": f"{prefix}-{i:04d}", "name": f"Book {prefix} {i}"} for i in range(n)]


def follow(client: TestClient, path: str, params: dict[str, Any], between: Any, **kw: Any) -> list[Any]:
    """Every page of `path`, calling `between()` after each page (writes going on meanwhile)."""
    items: list[Any] = []
    cursor = None
    while True:
        answer = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})}, **kw)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert len(page) <= params["limit"]
        items += page
        cursor = answer.headers.get("x-next-cursor")
        if cursor is None:
            assert "link" not in answer.headers
            return items
        # Link's relative reference is the next page's whole query.
        link = answer.headers["link"]
        assert link.endswith('>; rel="next"') and link.startswith("<?")
        query = dict(parse_qsl(link[2 : link.index(">")]))
        assert query["cursor"] == cursor and int(query["limit"]) == params["limit"]
        between()


def test_every_book_exactly_once_across_pages_while_books_are_added_and_removed(
    client: TestClient, services: RegionServices
) -> None:
    services.catalog.load(new_books(300, "p"))
    before = {b["id"] for b in client.get("/books", params={"limit": 1000}).json()}
    assert len(before) == 356
    rng = random.Random(7)
    removable = sorted(before)
    removed: set[str] = set()
    added = 0

    def writes() -> None:
        nonlocal added
        services.catalog.load(new_books(3, f"n{added}"))  # ids before and after the cursor
        added += 1
        gone = rng.choice(removable)
        services.catalog.books.delete({"id": gone})
        removed.add(gone)
        services.catalog.forget()

    seen = [b["id"] for b in follow(client, "/books", {"limit": 17}, writes)]
    assert len(seen) == len(set(seen)), "a book was returned twice"
    assert before - removed <= set(seen), "a book present throughout was missed"
    assert seen == sorted(seen), "pages are in id order"


def test_a_category_is_paged_within_itself(client: TestClient) -> None:
    cookbooks = client.get("/books", params={"category": "Cookbooks"}).json()
    paged = follow(client, "/books", {"category": "Cookbooks", "limit": 5}, lambda: None)
    assert paged == cookbooks and len(paged) == 26


def test_the_first_page_stops_at_the_default_limit_and_says_where_to_go_on(
    client: TestClient, services: RegionServices
) -> None:
    # Small answers stay whole, without paging headers (the seed catalog's 56 books).
    whole = client.get("/books")
    assert len(whole.json()) == 56 and "x-next-cursor" not in whole.headers and "link" not in whole.headers
    services.catalog.load(new_books(150, "d"))
    first = client.get("/books")
    assert first.status_code == 200 and len(first.json()) == 100
    assert first.headers["x-next-cursor"]
    second = client.get("/books", params={"cursor": first.headers["x-next-cursor"]})
    assert len(second.json()) == 100
    third = client.get("/books", params={"cursor": second.headers["x-next-cursor"]})
    assert len(third.json()) == 6 and "x-next-cursor" not in third.headers  # 56 + 150 books


def test_every_order_exactly_once_newest_first_while_orders_are_placed(
    client: TestClient, services: RegionServices
) -> None:
    auth = sign_in(client, services, "pages@example.com")
    book = client.get("/books").json()[0]["id"]

    def order() -> str:
        answer = client.post("/orders", json={"books": [{"bookId": book, "quantity": 1}]}, headers=auth)
        assert answer.status_code == 201, answer.text
        return str(answer.json()["orderId"])

    placed = {order() for _ in range(23)}
    seen = follow(client, "/orders", {"limit": 4}, order, headers=auth)
    ids = [o["orderId"] for o in seen]
    assert len(ids) == len(set(ids)) and placed <= set(ids)
    keys = [(o["orderDate"], o["orderId"]) for o in seen]
    assert keys == sorted(keys, reverse=True), "orders come newest first"


def test_bad_pages_are_refused_with_what_was_wrong(client: TestClient, services: RegionServices) -> None:
    auth = sign_in(client, services, "badpages@example.com")
    for params in ({"limit": 0}, {"limit": 1001}, {"limit": "many"}):
        assert_error(client.get("/books", params=params), 400, "ValidationError")
    for cursor in ("not-a-cursor", "%%%", "eyJ4Ijox", "A" * 300):
        answer = client.get("/books", params={"cursor": cursor})
        assert_error(answer, 400, "ValidationError")
        assert "cursor" in answer.json()["message"]
    services.catalog.load(new_books(120, "b"))
    books_cursor = client.get("/books").headers["x-next-cursor"]
    answer = client.get("/orders", params={"cursor": books_cursor}, headers=auth)
    assert_error(answer, 400, "ValidationError")
    assert_error(client.get("/orders", params={"limit": 0}, headers=auth), 400, "ValidationError")


def test_orders_of_one_date_are_paged_exactly_once_by_their_ids(services: RegionServices) -> None:
    # Many orders in one millisecond (group commit, replication): the date index alone cannot order them.
    dates = [1_000] * 7 + [2_000] * 9 + [500] * 2
    for i, date in enumerate(random.Random(16).sample(dates, len(dates))):
        services.checkout.orders.put(
            {"customerId": "c-ties", "orderId": f"k-{i:02d}", "orderDate": date, "books": [], "total": 0.0}
        )
    for limit in (1, 3, 7, 100):
        seen: list[dict[str, Any]] = []
        cursor = None
        while True:
            page, cursor = services.checkout.history_page("c-ties", limit, cursor)
            assert len(page) <= limit
            seen += page
            if cursor is None:
                break
        keys = [(o["orderDate"], o["orderId"]) for o in seen]
        assert len(seen) == len(dates) and keys == sorted(keys, reverse=True) and len(set(keys)) == len(keys)
