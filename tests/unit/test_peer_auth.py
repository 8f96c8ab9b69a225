"""Requests between regions: HMAC signing and verification, the httpx signer and the ASGI middleware."""

from __future__ import annotations

import asyncio
import hmac

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bookstore.domain.errors import Forbidden, Unauthorized
from bookstore.replication import auth
from bookstore.replication.auth import (
    MAX_AGE_MS,
    MAX_AHEAD_MS,
    REGION_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    PeerAuth,
    PeerAuthMiddleware,
    sign,
    verify,
)

SECRET = "correct horse battery staple"
NOW = 1_700_000_000_000
BODY = b'{"changes": [{"key": {"id": "bk-1"}, "hlc": 42}]}'
PATH = "/replication/books/changes?after=17&limit=100"


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, now_ms: int = NOW) -> None:
        self.ms = now_ms

    def now_ms(self) -> int:
        return self.ms


def signed(**overrides: object) -> dict[str, str]:
    args: dict[str, object] = {
        "secret": SECRET,
        "method": "POST",
        "path": PATH,
        "body": BODY,
        "region": "eu-west-1",
        "now_ms": NOW,
    }
    args.update(overrides)
    return sign(**args)  # type: ignore[arg-type]


def test_a_signed_request_verifies_and_names_its_region() -> None:
    headers = signed()
    assert set(headers) == {REGION_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER}
    assert headers[REGION_HEADER] == "eu-west-1"
    assert headers[TIMESTAMP_HEADER] == str(NOW)
    assert verify(SECRET, "POST", PATH, headers, BODY, NOW) == "eu-west-1"
    # Header names are case-insensitive, as in HTTP; the method's case does not matter.
    lowered = {k.lower(): v for k, v in headers.items()}
    assert verify(SECRET.encode(), "post", PATH, lowered, BODY, NOW + 1000) == "eu-west-1"


def test_the_signature_depends_on_every_covered_part() -> None:
    base = signed()[SIGNATURE_HEADER]
    variants = [
        signed(secret="another secret"),
        signed(method="PUT"),
        signed(path="/replication/books/changes?after=18&limit=100"),
        signed(body=BODY + b" "),
        signed(region="ap-southeast-1"),
        signed(now_ms=NOW + 1),
    ]
    assert len({base, *(v[SIGNATURE_HEADER] for v in variants)}) == 1 + len(variants)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", PATH, BODY.replace(b"42", b"43")),
        ("POST", "/replication/orders/changes?after=17&limit=100", BODY),
        ("POST", "/replication/books/changes?after=0&limit=100", BODY),
        ("PUT", PATH, BODY),
        ("POST", PATH, b""),
    ],
    ids=["body", "path", "query", "method", "empty-body"],
)
def test_a_tampered_request_is_forbidden(method: str, path: str, body: bytes) -> None:
    with pytest.raises(Forbidden, match="does not match"):
        verify(SECRET, method, path, signed(), body, NOW)


def test_a_tampered_region_or_timestamp_is_forbidden() -> None:
    with pytest.raises(Forbidden):
        verify(SECRET, "POST", PATH, {**signed(), REGION_HEADER: "ap-southeast-1"}, BODY, NOW)
    with pytest.raises(Forbidden):
        verify(SECRET, "POST", PATH, {**signed(), TIMESTAMP_HEADER: str(NOW + 5)}, BODY, NOW)


def test_a_wrong_secret_is_forbidden() -> None:
    with pytest.raises(Forbidden, match="shared secret"):
        verify("not the secret", "POST", PATH, signed(), BODY, NOW)


@pytest.mark.parametrize("header", [REGION_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER])
def test_a_missing_header_is_unauthorized(header: str) -> None:
    headers = signed()
    del headers[header]
    with pytest.raises(Unauthorized, match=header):
        verify(SECRET, "POST", PATH, headers, BODY, NOW)
    with pytest.raises(Unauthorized):
        verify(SECRET, "POST", PATH, {}, BODY, NOW)


def test_an_old_request_is_unauthorized_as_expired() -> None:
    headers = signed()
    assert verify(SECRET, "POST", PATH, headers, BODY, NOW + MAX_AGE_MS) == "eu-west-1"
    with pytest.raises(Unauthorized, match="expired"):
        verify(SECRET, "POST", PATH, headers, BODY, NOW + MAX_AGE_MS + 1)


def test_a_request_from_the_future_is_unauthorized() -> None:
    headers = signed()
    # Clocks of regions differ a little (tests skew one by 500 ms): that much is allowed.
    assert verify(SECRET, "POST", PATH, headers, BODY, NOW - 500) == "eu-west-1"
    with pytest.raises(Unauthorized, match="future"):
        verify(SECRET, "POST", PATH, headers, BODY, NOW - MAX_AHEAD_MS - 1)


@pytest.mark.parametrize(
    ("header", "value"),
    [(TIMESTAMP_HEADER, "yesterday"), (TIMESTAMP_HEADER, "-5"), (REGION_HEADER, "eu west\n1")],
)
def test_malformed_headers_are_unauthorized(header: str, value: str) -> None:
    with pytest.raises(Unauthorized):
        verify(SECRET, "POST", PATH, {**signed(), header: value}, BODY, NOW)


def test_a_non_ascii_signature_is_refused_not_crashed() -> None:
    with pytest.raises(Forbidden):
        verify(SECRET, "POST", PATH, {**signed(), SIGNATURE_HEADER: "é" * 64}, BODY, NOW)


def test_signatures_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    headers = signed()
    verify(SECRET, "POST", PATH, headers, BODY, NOW)
    with pytest.raises(Forbidden):
        verify(SECRET, "POST", PATH, headers, b"tampered", NOW)
    assert len(calls) == 2
    assert calls[0][1] == headers[SIGNATURE_HEADER].encode()


def test_an_empty_secret_or_bad_region_cannot_sign() -> None:
    with pytest.raises(ValueError, match="secret"):
        signed(secret="")
    with pytest.raises(ValueError, match="region"):
        signed(region="eu west 1")
    with pytest.raises(ValueError, match="secret"):
        PeerAuth(b"", "eu-west-1", ManualClock())


def echo_app() -> Starlette:
    """A replication-like endpoint that answers with what it received, and an open endpoint."""

    async def changes(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse(
            {"peer": request.state.peer_region, "body": body.decode(), "query": str(request.url.query)}
        )

    async def books(_: Request) -> JSONResponse:
        return JSONResponse({"books": []})

    return Starlette(
        routes=[
            Route("/replication/{table}/changes", changes, methods=["GET", "POST"]),
            Route("/books", books),
        ]
    )


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def client(app: object, auth_: httpx.Auth | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
        base_url="http://127.0.0.1",
        auth=auth_,
    )


def test_the_middleware_passes_signed_requests_with_their_body_and_region() -> None:
    clock = ManualClock()
    app = PeerAuthMiddleware(echo_app(), SECRET, clock)

    async def scenario() -> None:
        async with client(app, PeerAuth(SECRET, "ap-southeast-1", clock)) as c:
            response = await c.post(
                "/replication/books/changes", params={"after": "17", "q": "a b/é"}, content=BODY
            )
            assert response.status_code == 200, response.text
            assert response.json()["peer"] == "ap-southeast-1"
            assert response.json()["body"] == BODY.decode()
            assert response.json()["query"].startswith("after=17&q=")
            got = await c.get("/replication/books/changes")
            assert got.status_code == 200
            assert got.json()["body"] == ""

    run(scenario())


def test_the_middleware_refuses_unsigned_tampered_expired_and_wrongly_keyed_requests() -> None:
    clock = ManualClock()
    app = PeerAuthMiddleware(echo_app(), SECRET, clock)

    async def scenario() -> None:
        async with client(app) as plain:
            unsigned = await plain.post("/replication/books/changes", content=BODY)
            assert unsigned.status_code == 401
            assert unsigned.json()["error"] == "Unauthorized"
            assert SIGNATURE_HEADER in unsigned.json()["message"]

            headers = sign(SECRET, "POST", "/replication/books/changes", BODY, "eu-west-1", clock.now_ms())
            ok = await plain.post("/replication/books/changes", content=BODY, headers=headers)
            assert ok.status_code == 200
            tampered = await plain.post("/replication/books/changes", content=BODY + b"x", headers=headers)
            assert tampered.status_code == 403
            assert tampered.json()["error"] == "Forbidden"
            other_path = await plain.post("/replication/orders/changes", content=BODY, headers=headers)
            assert other_path.status_code == 403

            clock.ms += MAX_AGE_MS + 1
            expired = await plain.post("/replication/books/changes", content=BODY, headers=headers)
            assert expired.status_code == 401
            assert "expired" in expired.json()["message"]

            # Outside the prefix nothing is asked for.
            assert (await plain.get("/books")).status_code == 200

        async with client(app, PeerAuth("a different secret", "eu-west-1", clock)) as wrong:
            refused = await wrong.post("/replication/books/changes", content=BODY)
            assert refused.status_code == 403

    run(scenario())


def test_the_middleware_refuses_a_body_over_its_limit() -> None:
    clock = ManualClock()
    app = PeerAuthMiddleware(echo_app(), SECRET, clock, max_body_bytes=1000)

    async def scenario() -> None:
        async with client(app, PeerAuth(SECRET, "eu-west-1", clock)) as c:
            big = await c.post("/replication/books/changes", content=b"x" * 1001)
            assert big.status_code == 413
            assert big.json()["error"] == "PayloadTooLarge"
            small = await c.post("/replication/books/changes", content=b"x" * 1000)
            assert small.status_code == 200

    run(scenario())


def test_a_sync_client_signs_too() -> None:
    clock = ManualClock()
    app = PeerAuthMiddleware(echo_app(), SECRET, clock)
    request = httpx.Request("POST", "http://127.0.0.1/replication/books/changes?after=3", content=BODY)
    flow = PeerAuth(SECRET, "us-east-1", clock).sync_auth_flow(request)
    prepared = next(flow)
    assert (
        verify(SECRET, "POST", "/replication/books/changes?after=3", prepared.headers, BODY, NOW)
        == "us-east-1"
    )
    assert app.protects("/replication/books/changes")
    assert app.protects("/replication")
    assert not app.protects("/replicationx")
