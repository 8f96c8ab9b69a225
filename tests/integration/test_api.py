"""The Bookstore API of one region, end to end over HTTP (in-process ASGI), on the embedded default."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from starlette.testclient import TestClient

from bookstore.region.services import RegionServices

PASSWORD = "correct horse battery"


def sign_in(client: TestClient, services: RegionServices, email: str) -> dict[str, str]:
    services.identity.add_user(email, PASSWORD)
    r = client.post("/auth/signin", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['accessToken']}"}


@pytest.fixture
def alice(client: TestClient, services: RegionServices) -> dict[str, str]:
    return sign_in(client, services, "alice@example.com")


@pytest.fixture
def bob(client: TestClient, services: RegionServices) -> dict[str, str]:
    return sign_in(client, services, "bob@example.com")


def eventually(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def assert_error(r: Any, status: int, code: str | None = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "message"} and body["message"], body
    if code:
        assert body["error"] == code


# ---- catalog -------------------------------------------------------------------------------------------


def test_books_lists_the_seed_catalog(client: TestClient) -> None:
    books = client.get("/books").json()
    assert len(books) == 56
    assert set(books[0]) == {"id", "name", "author", "category", "price", "rating", "cover"}


def test_books_by_category(client: TestClient) -> None:
    cookbooks = client.get("/books", params={"category": "Cookbooks"}).json()
    assert len(cookbooks) == 26 and {b["category"] for b in cookbooks} == {"Cookbooks"}
    assert client.get("/books", params={"category": "Poetry"}).json() == []


def test_one_book(client: TestClient) -> None:
    first = client.get("/books").json()[0]
    assert client.get(f"/books/{first['id']}").json() == first
    assert_error(client.get("/books/no-such-book"), 404, "NotFound")
    assert_error(client.get("/books/bad%20id!"), 400, "ValidationError")


def test_truth_health_openapi_and_metrics(client: TestClient) -> None:
    truth = client.get("/truth")
    assert truth.json() == {"regionId": "eu-west-1", "regionName": "Ireland", "flag": "🇮🇪"}
    assert truth.headers["x-bookstore-region"] == "eu-west-1"
    assert client.get("/health").json()["status"] == "ok"
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/books", "/books/{book_id}", "/cart", "/orders", "/bestsellers", "/search", "/truth"} <= set(
        paths
    )
    metrics = client.get("/metrics").text
    assert 'bookstore_http_requests_total{method="GET",route="/truth",status="200"}' in metrics
    assert "bookstore_stream_consumer_lag_seconds" in metrics


def test_unknown_route_is_json_404(client: TestClient) -> None:
    assert_error(client.get("/nowhere"), 404)
    assert_error(client.patch("/books"), 405)


# ---- identity ------------------------------------------------------------------------------------------


def test_signup_confirm_signin_refresh_signout(client: TestClient, services: RegionServices) -> None:
    email = "carol@example.com"
    first = client.post("/auth/signup", json={"email": email, "password": PASSWORD})
    assert first.status_code == 201
    # Signing up again answers exactly alike: the answer does not tell that the account exists.
    again = client.post("/auth/signup", json={"email": email, "password": PASSWORD})
    assert (again.status_code, again.json()) == (first.status_code, first.json())
    assert_error(client.post("/auth/signin", json={"email": email, "password": PASSWORD}), 403)
    assert_error(client.post("/auth/confirm", json={"email": email, "code": "000000x"}), 400)
    code = services.identity.confirmation_code(email)
    assert client.post("/auth/confirm", json={"email": email, "code": code}).status_code == 200
    tokens = client.post("/auth/signin", json={"email": email, "password": PASSWORD}).json()
    assert set(tokens) == {"accessToken", "refreshToken", "expiresIn"}
    auth = {"Authorization": f"Bearer {tokens['accessToken']}"}
    assert client.get("/cart", headers=auth).json() == []
    refreshed = client.post("/auth/refresh", json={"refreshToken": tokens["refreshToken"]})
    assert refreshed.status_code == 200 and refreshed.json()["accessToken"]
    assert client.post("/auth/signout", headers=auth).status_code == 200
    assert_error(client.post("/auth/refresh", json={"refreshToken": refreshed.json()["refreshToken"]}), 401)


def test_wrong_password_and_unknown_user(client: TestClient, services: RegionServices) -> None:
    services.identity.add_user("dave@example.com", PASSWORD)
    assert_error(
        client.post("/auth/signin", json={"email": "dave@example.com", "password": "wrong-password"}), 401
    )
    assert_error(client.post("/auth/signin", json={"email": "nobody@example.com", "password": PASSWORD}), 401)


def test_short_password_refused(client: TestClient) -> None:
    assert_error(client.post("/auth/signup", json={"email": "e@example.com", "password": "short"}), 400)


def test_jwks_publishes_the_signing_key(client: TestClient, alice: dict[str, str]) -> None:
    keys = client.get("/.well-known/jwks.json").json()["keys"]
    assert keys and all(k["kty"] == "OKP" and k["alg"] == "EdDSA" and "d" not in k for k in keys)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer not.a.token",
        # alg none: header {"alg":"none","typ":"JWT"}, a payload with a plausible subject, no signature.
        "Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4IiwiZW1haWwiOiJ4QHkueiJ9.",
    ],
)
def test_cart_needs_a_valid_token(client: TestClient, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    assert_error(client.get("/cart", headers=headers), 401, "Unauthorized")


def test_forged_token_refused(client: TestClient, alice: dict[str, str]) -> None:
    token = alice["Authorization"].split()[1]
    head, payload, sig = token.split(".")
    forged = f"{head}.{payload}.{sig[:-4]}AAAA"
    assert_error(client.get("/cart", headers={"Authorization": f"Bearer {forged}"}), 401)


# ---- cart ----------------------------------------------------------------------------------------------


def book_ids(client: TestClient, n: int = 3) -> list[str]:
    return [b["id"] for b in client.get("/books").json()[:n]]


def test_cart_rows_priced_from_the_catalog(client: TestClient, alice: dict[str, str]) -> None:
    one, two, _ = book_ids(client)
    price = client.get(f"/books/{one}").json()["price"]
    r = client.post("/cart", json={"bookId": one, "quantity": 2, "price": 0.01}, headers=alice)
    assert r.status_code == 201 and r.json() == {"bookId": one, "quantity": 2, "price": price}
    client.post("/cart", json={"bookId": two, "quantity": 1}, headers=alice)
    assert {row["bookId"] for row in client.get("/cart", headers=alice).json()} == {one, two}
    assert client.get(f"/cart/{one}", headers=alice).json()["quantity"] == 2
    assert client.put("/cart", json={"bookId": one, "quantity": 5}, headers=alice).json()["quantity"] == 5
    # DELETE /cart takes the book as a query parameter, not a body (issue 18).
    assert client.delete("/cart", params={"bookId": one}, headers=alice).json() == {"removed": one}
    assert client.delete(f"/cart/{two}", headers=alice).status_code == 200
    assert client.get("/cart", headers=alice).json() == []
    assert_error(client.get(f"/cart/{one}", headers=alice), 404)
    assert_error(client.put("/cart", json={"bookId": one, "quantity": 1}, headers=alice), 404)
    assert_error(client.delete(f"/cart/{one}", headers=alice), 404)


@pytest.mark.parametrize("quantity", [0, -1, 100, 10**9, 10**30, "1", True, 1.5, None])
def test_cart_refuses_bad_quantities(client: TestClient, alice: dict[str, str], quantity: Any) -> None:
    one = book_ids(client, 1)[0]
    assert_error(client.post("/cart", json={"bookId": one, "quantity": quantity}, headers=alice), 400)


def test_cart_refuses_unknown_books_and_bad_bodies(client: TestClient, alice: dict[str, str]) -> None:
    assert_error(client.post("/cart", json={"bookId": "nope", "quantity": 1}, headers=alice), 404)
    assert_error(client.post("/cart", json={"quantity": 1}, headers=alice), 400)
    assert_error(client.post("/cart", json=["bookId"], headers=alice), 400)
    bad = client.post("/cart", content=b'{"bookId": ', headers={**alice, "Content-Type": "application/json"})
    assert_error(bad, 400, "ValidationError")
    assert "JSON" in bad.json()["message"]


def test_users_never_see_each_others_rows(
    client: TestClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    one = book_ids(client, 1)[0]
    client.post("/cart", json={"bookId": one, "quantity": 3}, headers=alice)
    client.post("/orders", json={"books": [{"bookId": one, "quantity": 1}]}, headers=alice)
    assert client.get("/cart", headers=bob).json() == []
    assert_error(client.get(f"/cart/{one}", headers=bob), 404)
    assert_error(client.delete(f"/cart/{one}", headers=bob), 404)
    assert client.get("/orders", headers=bob).json() == []
    assert len(client.get("/orders", headers=alice).json()) == 1


# ---- orders --------------------------------------------------------------------------------------------


def test_checkout_prices_from_catalog_and_empties_the_cart(client: TestClient, alice: dict[str, str]) -> None:
    one, two, three = book_ids(client)
    prices = {b: client.get(f"/books/{b}").json()["price"] for b in (one, two)}
    for b in (one, two, three):
        client.post("/cart", json={"bookId": b, "quantity": 1}, headers=alice)
    order = {"books": [{"bookId": one, "quantity": 2, "price": 0}, {"bookId": two, "quantity": 1}]}
    r = client.post("/orders", json=order, headers=alice)
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"orderId", "orderDate", "books", "total"}
    assert body["books"] == [
        {"bookId": one, "quantity": 2, "price": prices[one]},
        {"bookId": two, "quantity": 1, "price": prices[two]},
    ]
    assert body["total"] == round(2 * prices[one] + prices[two], 2)
    assert [row["bookId"] for row in client.get("/cart", headers=alice).json()] == [three]


def test_orders_newest_first(client: TestClient, alice: dict[str, str]) -> None:
    one = book_ids(client, 1)[0]
    ids = []
    for _ in range(3):
        ids.append(
            client.post("/orders", json={"books": [{"bookId": one, "quantity": 1}]}, headers=alice).json()
        )
        time.sleep(0.002)
    listed = client.get("/orders", headers=alice).json()
    assert [o["orderId"] for o in listed] == [o["orderId"] for o in reversed(ids)]


def test_checkout_is_idempotent_with_a_key(client: TestClient, alice: dict[str, str]) -> None:
    one = book_ids(client, 1)[0]
    order = {"books": [{"bookId": one, "quantity": 1}]}
    key = {**alice, "Idempotency-Key": "checkout-42"}
    first = client.post("/orders", json=order, headers=key)
    again = client.post("/orders", json=order, headers=key)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json() == first.json()
    assert len(client.get("/orders", headers=alice).json()) == 1
    different = {"books": [{"bookId": one, "quantity": 2}]}
    assert_error(client.post("/orders", json=different, headers=key), 409)
    assert_error(client.post("/orders", json=order, headers={**alice, "Idempotency-Key": "a b"}), 400)


@pytest.mark.parametrize(
    "body",
    [
        {"books": []},
        {"books": [{"bookId": "nope", "quantity": 1}]},
        {"books": [{"bookId": "x", "quantity": 0}]},
        {"books": "all"},
        {},
    ],
)
def test_checkout_refuses_bad_orders(client: TestClient, alice: dict[str, str], body: Any) -> None:
    r = client.post("/orders", json=body, headers=alice)
    assert 400 <= r.status_code < 500 and r.json()["message"]


def test_duplicate_lines_refused(client: TestClient, alice: dict[str, str]) -> None:
    one = book_ids(client, 1)[0]
    lines = [{"bookId": one, "quantity": 1}, {"bookId": one, "quantity": 2}]
    assert_error(client.post("/orders", json={"books": lines}, headers=alice), 400)


def test_a_ten_megabyte_body_is_refused(client: TestClient, alice: dict[str, str]) -> None:
    big = b'{"books": [' + b" " * (10 * 1024 * 1024) + b"]}"
    r = client.post("/orders", content=big, headers={**alice, "Content-Type": "application/json"})
    assert_error(r, 413, "PayloadTooLarge")


# ---- best sellers and search ---------------------------------------------------------------------------


def test_best_sellers_count_every_order(
    client: TestClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    one, two, _ = book_ids(client)
    client.post(
        "/orders",
        json={"books": [{"bookId": one, "quantity": 3}, {"bookId": two, "quantity": 1}]},
        headers=alice,
    )
    client.post("/orders", json={"books": [{"bookId": two, "quantity": 5}]}, headers=bob)

    def ranked() -> None:
        assert client.get("/bestsellers").json() == [
            {"bookId": two, "quantity": 6},
            {"bookId": one, "quantity": 3},
        ]

    eventually(ranked)


def test_search_by_title_author_and_category(client: TestClient) -> None:
    book = client.get("/books", params={"category": "Database"}).json()[0]
    title_word = max(book["name"].split(), key=len)
    author_word = book["author"].split()[-1]
    for query in (title_word, author_word):
        found = eventually(partial(_found, client, query))
        assert book["id"] in [b["id"] for b in found]
    by_category = eventually(lambda: _found(client, "database"))
    assert {b["category"] for b in by_category} >= {"Database"}
    assert client.get("/search", params={"q": 'AND( "*'}).status_code in (200, 400)


def _found(client: TestClient, q: str) -> list[dict[str, Any]]:
    r = client.get("/search", params={"q": q})
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()
    assert found
    return found


def test_every_answer_carries_its_request_id_the_clients_when_usable(client: TestClient) -> None:
    given = client.get("/books", headers={"X-Request-Id": "shopper-42"})
    assert given.headers["x-request-id"] == "shopper-42"
    fresh = client.get("/books/nope", headers={"X-Request-Id": "bad id with spaces"})
    assert fresh.status_code == 404
    assert fresh.headers["x-request-id"] != "bad id with spaces" and len(fresh.headers["x-request-id"]) == 16
    assert client.get("/health").headers["x-request-id"] != client.get("/health").headers["x-request-id"]


def test_metrics_that_only_go_up_are_counters_named_as_prometheus_asks(
    client: TestClient, alice: dict[str, str]
) -> None:
    """Group commit's figures are Counters (`_total`); durations end in `_seconds` (issue 18)."""
    from prometheus_client.parser import text_string_to_metric_families

    added = client.post("/cart", json={"bookId": "bk-cook-001", "quantity": 1}, headers=alice)
    assert added.status_code == 201
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    for name in ("bookstore_group_commit_transactions", "bookstore_group_commit_units"):
        assert families[name].type == "counter"
        assert families[name].samples[0].name == f"{name}_total"
        assert families[name].samples[0].value >= 1
    assert families["bookstore_http_requests"].type == "counter"
    assert families["bookstore_http_request_duration_seconds"].type == "histogram"
    # The cart's one request, counted and timed under its route template: every bucket up to +Inf.
    route = {"method": "POST", "route": "/cart"}
    counted = [
        s for s in families["bookstore_http_requests"].samples if s.labels == {**route, "status": "201"}
    ]
    assert [(s.name, s.value) for s in counted] == [("bookstore_http_requests_total", 1)]
    timed = {
        (s.name, s.labels.get("le")): s.value
        for s in families["bookstore_http_request_duration_seconds"].samples
        if {k: v for k, v in s.labels.items() if k != "le"} == route
    }
    assert timed[("bookstore_http_request_duration_seconds_count", None)] == 1
    assert timed[("bookstore_http_request_duration_seconds_bucket", "+Inf")] == 1
    assert timed[("bookstore_http_request_duration_seconds_bucket", "5.0")] == 1
    assert 0 < timed[("bookstore_http_request_duration_seconds_sum", None)] < 5
    assert families["bookstore_stream_consumer_rebuilds"].type == "counter"
    for family in families.values():
        if family.type == "gauge":
            assert not family.name.endswith("_total"), family.name
