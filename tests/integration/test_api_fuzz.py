"""Property: no input, however hostile, gets a 500 or a non-JSON answer from the API."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from bookstore.region.services import RegionServices

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"bookId": json_values, "quantity": json_values}),
    st.fixed_dictionaries(
        {"books": st.lists(st.fixed_dictionaries({"bookId": json_values, "quantity": json_values}))}
    ),
    st.fixed_dictionaries({"email": json_values, "password": json_values}),
    st.fixed_dictionaries({"refreshToken": json_values}),
)
WRITES = [("POST", "/cart"), ("PUT", "/cart"), ("DELETE", "/cart"), ("POST", "/orders")]
PUBLIC_WRITES = [
    ("POST", "/auth/signin"),
    ("POST", "/auth/confirm"),
    ("POST", "/auth/resend-code"),
    ("POST", "/auth/refresh"),
]
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def token(client: TestClient, services: RegionServices) -> dict[str, str]:
    services.identity.add_user("fuzz@example.com", "fuzz-password")
    r = client.post("/auth/signin", json={"email": "fuzz@example.com", "password": "fuzz-password"})
    return {"Authorization": f"Bearer {r.json()['accessToken']}"}


def assert_clean(r: Any) -> None:
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        body = r.json()
        assert body["error"] and body["message"]


@FUZZ
@given(endpoint=st.sampled_from(WRITES + PUBLIC_WRITES), body=bodies)
def test_json_bodies_never_break_the_api(
    client: TestClient, token: dict[str, str], endpoint: tuple[str, str], body: Any
) -> None:
    method, path = endpoint
    assert_clean(client.request(method, path, json=body, headers=token))


@FUZZ
@given(endpoint=st.sampled_from(WRITES + PUBLIC_WRITES), raw=st.binary(max_size=200))
def test_raw_bytes_never_break_the_api(
    client: TestClient, token: dict[str, str], endpoint: tuple[str, str], raw: bytes
) -> None:
    method, path = endpoint
    headers = {**token, "Content-Type": "application/json"}
    assert_clean(client.request(method, path, content=raw, headers=headers))


@FUZZ
@given(text=st.text(max_size=300))
def test_paths_and_queries_never_break_the_api(client: TestClient, token: dict[str, str], text: str) -> None:
    assert_clean(client.get("/search", params={"q": text}))
    assert_clean(client.get("/books", params={"category": text}))
    segment = quote(text, safe="")
    assert_clean(client.get(f"/books/{segment}"))
    assert_clean(client.get(f"/cart/{segment}", headers=token))


@FUZZ
@given(header=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=300))
def test_authorization_headers_never_break_the_api(client: TestClient, header: str) -> None:
    r = client.get("/orders", headers={"Authorization": header})
    assert r.status_code == 401, r.text
