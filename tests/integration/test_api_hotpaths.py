"""The hot paths (api/hotpaths.py) answer exactly as the FastAPI routes that declare them in /openapi.json."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from bookstore.api.app import create_app
from bookstore.region.services import RegionServices
from tests.integration.test_api_fuzz import json_values
from tests.support.openapi_check import CheckedClient

HOT = [
    ("GET", "/books/{book_id}"),
    ("GET", "/books"),
    ("GET", "/cart"),
    ("POST", "/cart"),
    ("POST", "/orders"),
]
BOOK_IDS = ["bk-cook-001", "bk-db-001", "bk-none-999"]
AGREE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def plain(services: RegionServices) -> Iterator[TestClient]:
    """The same region's API over the same services, every request answered by FastAPI itself."""
    app = create_app(services, CollectorRegistry(), hot_paths=False)
    with CheckedClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def token(client: TestClient, services: RegionServices) -> str:
    services.identity.add_user("hot@example.com", "hot-password")
    r = client.post("/auth/signin", json={"email": "hot@example.com", "password": "hot-password"})
    token: str = r.json()["accessToken"]
    return token


def test_every_hot_path_is_documented(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for method, path in HOT:
        operation = paths[path][method.lower()]
        assert operation["responses"], (method, path)
    assert "requestBody" in paths["/cart"]["post"]
    assert "requestBody" in paths["/orders"]["post"]
    documented = {p["name"] for p in paths["/orders"]["post"]["parameters"]}
    assert "idempotency-key" in documented
    # The token is the bearer security scheme, not a header parameter (issue 18).
    assert "authorization" not in documented
    for method, path in (("GET", "/cart"), ("POST", "/cart"), ("POST", "/orders")):
        assert paths[path][method.lower()]["security"] == [{"bearer": []}], (method, path)


def test_hot_paths_are_counted_under_their_route(client: TestClient, token: str) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get("/books/bk-cook-001").status_code == 200
    assert (
        client.post("/cart", json={"bookId": "bk-cook-001", "quantity": 2}, headers=auth).status_code == 201
    )
    metrics = client.get("/metrics").text
    assert 'route="/books/{book_id}",status="200"' in metrics
    assert 'method="POST",route="/cart",status="201"' in metrics


def test_a_hot_path_frames_its_refusals_and_failures_as_the_api_does(
    client: TestClient, token: str, services: RegionServices, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In front of FastAPI's stack, the hot paths keep its body limit and its JSON 500, with the headers."""
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def streamed() -> Iterator[bytes]:
        # No Content-Length: the limit is met while the body arrives.
        yield b'{"bookId": "bk-cook-001", "quantity": 1, "pad": "'
        for _ in range(17):
            yield b"x" * 65_536
        yield b'"}'

    big = client.post("/cart", content=streamed(), headers=auth)
    assert big.status_code == 413 and big.json()["error"] == "PayloadTooLarge"
    assert big.headers["x-bookstore-region"] == "eu-west-1" and len(big.headers["x-request-id"]) == 16

    def broken(book_id: str) -> dict[str, Any]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(services.catalog, "get", broken)
    # A 500 is in no route's document: asked without the document's check.
    unchecked = TestClient(client.app, raise_server_exceptions=False)
    failed = unchecked.get("/books/bk-cook-001", headers={"X-Request-Id": "shopper-7"})
    assert failed.status_code == 500
    assert failed.json() == {"error": "InternalError", "message": "the server failed; try again"}
    assert failed.headers["x-bookstore-region"] == "eu-west-1"
    assert failed.headers["x-request-id"] == "shopper-7"
    metrics = client.get("/metrics").text
    assert 'method="POST",route="/cart",status="413"' in metrics
    assert 'method="GET",route="/books/{book_id}",status="500"' in metrics


requests = st.one_of(
    st.tuples(st.just("GET"), st.sampled_from(BOOK_IDS).map(lambda b: f"/books/{b}")),
    st.tuples(st.just("GET"), st.text(max_size=70).map(lambda t: "/books/" + quote(t, safe=""))),
    st.tuples(st.just("GET"), st.just("/books")),
    st.tuples(st.just("GET"), st.just("/cart")),
    st.tuples(st.just("POST"), st.just("/cart")),
    st.tuples(st.just("POST"), st.just("/orders")),
)
queries = st.one_of(
    st.just({}),
    st.just({"category": "Cookbooks"}),
    st.builds(lambda c: {"category": c}, st.text(max_size=300)),
    st.just([("category", "Cars"), ("category", "Database")]),
    st.builds(lambda c: {"category": "Woodwork", "other": c}, st.text(max_size=5)),
    st.builds(
        lambda n: {"category": "Cookbooks", "limit": n},
        st.sampled_from(["3", "0", "05", "1000", "1001", "x"]),
    ),
    st.builds(
        lambda c: {"limit": "2", "cursor": c},
        st.text(max_size=8) | st.just("WyJib29rcyIsImJrLWNvb2stMDAyIl0"),
    ),
    st.just([("limit", "2"), ("limit", "3")]),
)
# Ids around the declared 256-character limit, so the hot path's own check of it is tried on both sides.
long_ids = st.text(alphabet="ab", min_size=255, max_size=258)
lines = st.fixed_dictionaries(
    {
        "bookId": st.sampled_from(BOOK_IDS) | long_ids | json_values,
        "quantity": st.integers(-2, 101) | json_values,
    }
)
bodies = st.one_of(
    st.none(),
    json_values,
    lines,
    st.fixed_dictionaries({"books": st.lists(lines, max_size=3)}),
    st.fixed_dictionaries(
        {"books": st.lists(st.sampled_from(BOOK_IDS).map(lambda b: {"bookId": b, "quantity": 1}))}
    ),
    st.binary(max_size=40),
)
content_types = st.sampled_from(
    [None, "application/json", "application/json; charset=utf-8", "text/plain", "application/x+json"]
)
authorizations = st.sampled_from(["token", None, "Bearer nope", "Basic abc"])
visible = st.characters(min_codepoint=32, max_codepoint=126)
keys = st.one_of(st.none(), st.text(alphabet=visible, max_size=8), st.just("k" * 300))


def _send(
    c: TestClient,
    method: str,
    path: str,
    query: Any,
    body: Any,
    content_type: str | None,
    headers: dict[str, str],
) -> Any:
    headers = dict(headers)
    if body is None:
        return c.request(method, path, params=query, headers=headers)
    raw = body if isinstance(body, bytes) else None
    if content_type is not None:
        headers["Content-Type"] = content_type
    if raw is not None:
        return c.request(method, path, params=query, content=raw, headers=headers)
    return c.request(method, path, params=query, json=body, headers=headers)


def _seen(r: Any) -> tuple[Any, ...]:
    """What must agree: the status (a replayed checkout's 200 is its first answer's 201), headers, body."""
    body = r.json()
    if isinstance(body, dict) and "orderId" in body:
        # Two orders placed without a key differ in id and time, not in content.
        body = {k: v for k, v in body.items() if k not in ("orderId", "orderDate")}
    status = 201 if r.status_code == 200 and isinstance(body, dict) and "books" in body else r.status_code
    return status, r.headers["content-type"], r.headers.get("x-bookstore-region"), body


@AGREE
@given(
    request=requests,
    query=queries,
    body=bodies,
    content_type=content_types,
    authorization=authorizations,
    key=keys,
)
def test_hot_paths_answer_as_fastapi_does(
    client: TestClient,
    plain: TestClient,
    token: str,
    request: tuple[str, str],
    query: Any,
    body: Any,
    content_type: str | None,
    authorization: str | None,
    key: str | None,
) -> None:
    method, path = request
    headers: dict[str, str] = {}
    if authorization is not None:
        headers["Authorization"] = f"Bearer {token}" if authorization == "token" else authorization
    if key is not None and path == "/orders":
        headers["Idempotency-Key"] = key
    if method == "GET":
        body = None
    fast = _send(client, method, path, query, body, content_type, headers)
    slow = _send(plain, method, path, query, body, content_type, headers)
    assert fast.status_code < 500, fast.text
    assert _seen(fast) == _seen(slow), (method, path, query, body, content_type, headers)


LINE = {"bookId": "bk-cook-001", "quantity": 1}
EDGES: list[tuple[str, str, Any, Any, dict[str, str]]] = [
    ("POST", "/cart", None, {"bookId": "a" * 256, "quantity": 1}, {}),
    ("POST", "/cart", None, {"bookId": "a" * 257, "quantity": 1}, {}),
    ("POST", "/cart", None, {"bookId": "bk-cook-001", "quantity": True}, {}),
    ("POST", "/cart", None, {"bookId": "bk-cook-001", "quantity": 1.0}, {}),
    ("POST", "/cart", None, {"bookId": "bk-cook-001", "quantity": "1"}, {}),
    ("POST", "/cart", None, {"bookId": "bk-cook-001"}, {}),
    ("POST", "/cart", None, [LINE], {}),
    ("POST", "/orders", None, {"books": [LINE]}, {"Idempotency-Key": "k" * 256}),
    ("POST", "/orders", None, {"books": [LINE]}, {"Idempotency-Key": "k" * 257}),
    ("POST", "/orders", None, {"books": [LINE]}, {"Idempotency-Key": ""}),
    ("POST", "/orders", None, {"books": [LINE] * 200}, {}),
    ("POST", "/orders", None, {"books": [LINE] * 201}, {}),
    ("POST", "/orders", None, {"books": (LINE,)}, {}),
    ("POST", "/orders", None, {"books": {"0": LINE}}, {}),
    ("GET", "/books", {"category": "C" * 256}, None, {}),
    ("GET", "/books", {"category": "C" * 257}, None, {}),
    ("GET", "/books", {"category": ""}, None, {}),
    ("GET", "/books", "category", None, {}),
    ("GET", "/books/" + "b" * 300, None, None, {}),
]


@pytest.mark.parametrize(("method", "path", "query", "body", "headers"), EDGES)
def test_hot_paths_keep_the_declared_limits(
    client: TestClient,
    plain: TestClient,
    token: str,
    method: str,
    path: str,
    query: Any,
    body: Any,
    headers: dict[str, str],
) -> None:
    headers = {**headers, "Authorization": f"Bearer {token}"}
    fast = _send(client, method, path, query, body, None, headers)
    slow = _send(plain, method, path, query, body, None, headers)
    assert _seen(fast) == _seen(slow)


def test_a_page_with_more_after_it_carries_the_same_next_page_headers(
    client: TestClient, plain: TestClient
) -> None:
    for query in (
        {"category": "Cookbooks", "limit": "3"},
        {"limit": "2", "cursor": "WyJib29rcyIsImJrLWNvb2stMDAyIl0"},
    ):
        fast, slow = client.get("/books", params=query), plain.get("/books", params=query)
        assert fast.status_code == slow.status_code == 200
        assert fast.json() == slow.json() and len(fast.json()) == int(query["limit"])
        for name in ("x-next-cursor", "link", "content-type", "x-bookstore-region"):
            assert fast.headers.get(name) == slow.headers.get(name), name
        assert fast.headers.get("x-next-cursor")


def test_a_changed_book_is_answered_changed_not_from_the_json_kept_for_it(
    client: TestClient, services: RegionServices
) -> None:
    """The hot path keeps each book's JSON; a change to the book, once the catalog has it, is answered."""
    before = client.get("/books/bk-cook-001")
    assert before.status_code == 200
    item = services.catalog.books.get({"id": "bk-cook-001"})
    assert item is not None
    services.catalog.books.put({**item, "name": "Salt, Smoke & Patience (second edition)"})
    services.catalog.consumer.poll_once()
    after = client.get("/books/bk-cook-001")
    assert after.json() == {**before.json(), "name": "Salt, Smoke & Patience (second edition)"}
    assert after.headers["content-length"] == str(len(after.content))
