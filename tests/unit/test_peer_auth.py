"""Requests between regions: HMAC signing and verification, the httpx signer and the ASGI middleware."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from bookstore.domain.errors import Forbidden, Unauthorized
from bookstore.kernel.auth import (
    CONTENT_HEADER,
    DESTINATION_HEADER,
    MAX_AGE_MS,
    MAX_AHEAD_MS,
    NONCE_HEADER,
    REGION_HEADER,
    SIGNATURE_HEADER,
    SIGNING_HEADERS,
    TIMESTAMP_HEADER,
    PeerAuth,
    PeerAuthMiddleware,
    sign,
    verify,
)
from bookstore.kernel.link_faults import LinkFaults
from bookstore.kernel.replay import SeenSignatures

SECRET = "correct horse battery staple"
NOW = 1_700_000_000_000
BODY = b'{"changes": [{"key": {"id": "bk-1"}, "hlc": 42}]}'
PATH = "/replication/books/changes?after=17&limit=100"
HERE = "ap-southeast-1"
NONCE = "0123456789abcdef0123456789abcdef"


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
        "destination": HERE,
        "nonce": NONCE,
    }
    args.update(overrides)
    return sign(**args)  # type: ignore[arg-type]


def test_a_signed_request_verifies_and_names_its_region() -> None:
    headers = signed()
    assert set(headers) == set(SIGNING_HEADERS)
    assert headers[REGION_HEADER] == "eu-west-1"
    assert headers[DESTINATION_HEADER] == HERE
    assert headers[TIMESTAMP_HEADER] == str(NOW)
    assert headers[CONTENT_HEADER] == hashlib.sha256(BODY).hexdigest()
    assert verify(SECRET, "POST", PATH, headers, BODY, NOW, destination=HERE) == "eu-west-1"
    # Header names are case-insensitive, as in HTTP; the method's case does not matter.
    lowered = {k.lower(): v for k, v in headers.items()}
    assert verify(SECRET.encode(), "post", PATH, lowered, BODY, NOW + 1000, destination=HERE) == "eu-west-1"
    # Left to itself, sign() draws a new nonce every time.
    nonces = {sign(SECRET, "GET", PATH, b"", "eu-west-1", NOW, HERE)[NONCE_HEADER] for _ in range(50)}
    assert len(nonces) == 50


def test_the_signature_depends_on_every_covered_part() -> None:
    base = signed()[SIGNATURE_HEADER]
    variants = [
        signed(secret="another secret"),
        signed(method="PUT"),
        signed(path="/replication/books/changes?after=18&limit=100"),
        signed(body=BODY + b" "),
        signed(region="ap-southeast-1"),
        signed(now_ms=NOW + 1),
        signed(destination="us-east-1"),
        signed(nonce=NONCE.replace("0", "f")),
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
    with pytest.raises(Forbidden, match=r"does not match|not the one it signed"):
        verify(SECRET, method, path, signed(), body, NOW, destination=HERE)


def test_a_tampered_region_or_timestamp_is_forbidden() -> None:
    with pytest.raises(Forbidden):
        verify(
            SECRET, "POST", PATH, {**signed(), REGION_HEADER: "ap-southeast-1"}, BODY, NOW, destination=HERE
        )
    with pytest.raises(Forbidden):
        verify(
            SECRET, "POST", PATH, {**signed(), TIMESTAMP_HEADER: str(NOW + 5)}, BODY, NOW, destination=HERE
        )
    for header in (DESTINATION_HEADER, NONCE_HEADER):
        with pytest.raises(Forbidden, match="does not match"):
            verify(
                SECRET,
                "POST",
                PATH,
                {**signed(), header: "us-east-1-abcdefghijkl"},
                BODY,
                NOW,
                destination=HERE,
            )
    with pytest.raises(Forbidden, match="does not match"):
        verify(SECRET, "POST", PATH, {**signed(), CONTENT_HEADER: "0" * 64}, BODY, NOW, destination=HERE)


def test_a_wrong_secret_is_forbidden() -> None:
    with pytest.raises(Forbidden, match="shared secret"):
        verify("not the secret", "POST", PATH, signed(), BODY, NOW, destination=HERE)


@pytest.mark.parametrize("header", SIGNING_HEADERS)
def test_a_missing_header_is_unauthorized(header: str) -> None:
    headers = signed()
    del headers[header]
    with pytest.raises(Unauthorized, match=header):
        verify(SECRET, "POST", PATH, headers, BODY, NOW, destination=HERE)
    with pytest.raises(Unauthorized):
        verify(SECRET, "POST", PATH, {}, BODY, NOW, destination=HERE)


def test_an_old_request_is_unauthorized_as_expired() -> None:
    headers = signed()
    assert verify(SECRET, "POST", PATH, headers, BODY, NOW + MAX_AGE_MS, destination=HERE) == "eu-west-1"
    with pytest.raises(Unauthorized, match="expired"):
        verify(SECRET, "POST", PATH, headers, BODY, NOW + MAX_AGE_MS + 1, destination=HERE)


def test_a_request_from_the_future_is_unauthorized() -> None:
    headers = signed()
    # Clocks of regions differ a little (tests skew one by 500 ms): that much is allowed.
    assert verify(SECRET, "POST", PATH, headers, BODY, NOW - 500, destination=HERE) == "eu-west-1"
    with pytest.raises(Unauthorized, match="future"):
        verify(SECRET, "POST", PATH, headers, BODY, NOW - MAX_AHEAD_MS - 1, destination=HERE)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (TIMESTAMP_HEADER, "yesterday"),
        (TIMESTAMP_HEADER, "-5"),
        (REGION_HEADER, "eu west\n1"),
        (DESTINATION_HEADER, "ap southeast"),
        (NONCE_HEADER, "short"),
        (CONTENT_HEADER, "not a hash"),
    ],
)
def test_malformed_headers_are_unauthorized(header: str, value: str) -> None:
    with pytest.raises(Unauthorized):
        verify(SECRET, "POST", PATH, {**signed(), header: value}, BODY, NOW, destination=HERE)


def test_a_non_ascii_signature_is_refused_not_crashed() -> None:
    with pytest.raises(Forbidden):
        verify(SECRET, "POST", PATH, {**signed(), SIGNATURE_HEADER: "é" * 64}, BODY, NOW, destination=HERE)


def test_signatures_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # The signature is compared as bytes, the body's hash as text.
    calls: list[tuple[bytes | str, bytes | str]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("bookstore.kernel.auth.hmac.compare_digest", spy)
    headers = signed()
    verify(SECRET, "POST", PATH, headers, BODY, NOW, destination=HERE)
    with pytest.raises(Forbidden):
        verify(SECRET, "POST", PATH, headers, b"tampered", NOW, destination=HERE)
    # The signature, then the body's hash; each time.
    assert len(calls) == 4
    assert calls[0][1] == headers[SIGNATURE_HEADER].encode()
    assert calls[3][1] == headers[CONTENT_HEADER]


def test_an_empty_secret_or_bad_region_cannot_sign() -> None:
    with pytest.raises(ValueError, match="secret"):
        signed(secret="")
    with pytest.raises(ValueError, match="region"):
        signed(region="eu west 1")
    with pytest.raises(ValueError, match="secret"):
        PeerAuth(b"", "eu-west-1", ManualClock())
    with pytest.raises(ValueError, match="destination"):
        signed(destination="")
    with pytest.raises(ValueError, match="nonce"):
        signed(nonce="short")


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
    app = PeerAuthMiddleware(echo_app(), SECRET, clock, destination=HERE)

    async def scenario() -> None:
        async with client(app, PeerAuth(SECRET, "us-east-1", clock, destination=HERE)) as c:
            response = await c.post(
                "/replication/books/changes", params={"after": "17", "q": "a b/é"}, content=BODY
            )
            assert response.status_code == 200, response.text
            assert response.json()["peer"] == "us-east-1"
            assert response.json()["body"] == BODY.decode()
            assert response.json()["query"].startswith("after=17&q=")
            got = await c.get("/replication/books/changes")
            assert got.status_code == 200
            assert got.json()["body"] == ""

    run(scenario())


def test_the_middleware_refuses_unsigned_tampered_expired_and_wrongly_keyed_requests() -> None:
    clock = ManualClock()
    app = PeerAuthMiddleware(echo_app(), SECRET, clock, destination=HERE)

    async def scenario() -> None:
        async with client(app) as plain:
            unsigned = await plain.post("/replication/books/changes", content=BODY)
            assert unsigned.status_code == 401
            assert unsigned.json()["error"] == "Unauthorized"
            assert SIGNATURE_HEADER in unsigned.json()["message"]

            def fresh() -> dict[str, str]:
                return sign(
                    SECRET, "POST", "/replication/books/changes", BODY, "eu-west-1", clock.now_ms(), HERE
                )

            ok = await plain.post("/replication/books/changes", content=BODY, headers=fresh())
            assert ok.status_code == 200
            tampered = await plain.post("/replication/books/changes", content=BODY + b"x", headers=fresh())
            assert tampered.status_code == 403
            assert tampered.json()["error"] == "Forbidden"
            other_path = await plain.post("/replication/orders/changes", content=BODY, headers=fresh())
            assert other_path.status_code == 403

            headers = fresh()
            clock.ms += MAX_AGE_MS + 1
            expired = await plain.post("/replication/books/changes", content=BODY, headers=headers)
            assert expired.status_code == 401
            assert "expired" in expired.json()["message"]

            # Outside the prefix nothing is asked for.
            assert (await plain.get("/books")).status_code == 200

        async with client(app, PeerAuth("a different secret", "eu-west-1", clock, destination=HERE)) as wrong:
            refused = await wrong.post("/replication/books/changes", content=BODY)
            assert refused.status_code == 403

    run(scenario())


def test_the_middleware_refuses_a_body_over_its_limit() -> None:
    clock = ManualClock()
    app = PeerAuthMiddleware(echo_app(), SECRET, clock, destination=HERE, max_body_bytes=1000)

    async def scenario() -> None:
        async with client(app, PeerAuth(SECRET, "eu-west-1", clock, destination=HERE)) as c:
            big = await c.post("/replication/books/changes", content=b"x" * 1001)
            assert big.status_code == 413
            assert big.json()["error"] == "PayloadTooLarge"
            small = await c.post("/replication/books/changes", content=b"x" * 1000)
            assert small.status_code == 200

    run(scenario())


def test_a_sync_client_signs_too() -> None:
    clock = ManualClock()
    app = PeerAuthMiddleware(echo_app(), SECRET, clock, destination=HERE)
    request = httpx.Request("POST", "http://127.0.0.1/replication/books/changes?after=3", content=BODY)
    flow = PeerAuth(SECRET, "us-east-1", clock, destination=HERE).sync_auth_flow(request)
    prepared = next(flow)
    target = "/replication/books/changes?after=3"
    assert verify(SECRET, "POST", target, prepared.headers, BODY, NOW, destination=HERE) == "us-east-1"
    # Without a fixed destination the request names its own, or it cannot be signed.
    anywhere = PeerAuth(SECRET, "operator", clock)
    with pytest.raises(ValueError, match="destination"):
        next(anywhere.sync_auth_flow(httpx.Request("GET", "http://127.0.0.1/replication/x")))
    named = httpx.Request("GET", "http://127.0.0.1/replication/x", headers={DESTINATION_HEADER: HERE})
    assert next(anywhere.sync_auth_flow(named)).headers[SIGNATURE_HEADER]
    assert app.protects("/replication/books/changes")
    assert app.protects("/replication")
    assert not app.protects("/replicationx")


def test_a_signature_is_accepted_once_and_remembered_only_for_its_window() -> None:
    seen = SeenSignatures(MAX_AGE_MS)
    headers = signed()
    assert verify(SECRET, "POST", PATH, headers, BODY, NOW, destination=HERE, seen=seen) == "eu-west-1"
    with pytest.raises(Unauthorized, match="accepted before"):
        verify(SECRET, "POST", PATH, headers, BODY, NOW + 10, destination=HERE, seen=seen)
    # The same nonce from another region is another signature.
    other = signed(region="us-east-1")
    assert verify(SECRET, "POST", PATH, other, BODY, NOW, destination=HERE, seen=seen) == "us-east-1"
    # Once the window has passed, the signature is forgotten: the window alone refuses it.
    later = signed(now_ms=NOW + MAX_AGE_MS + 5, nonce="f" * 32)
    verify(SECRET, "POST", PATH, later, BODY, NOW + MAX_AGE_MS + 5, destination=HERE, seen=seen)
    assert len(seen) == 1


def test_the_record_of_signatures_is_bounded_and_never_accepts_one_twice() -> None:
    seen = SeenSignatures(MAX_AGE_MS, capacity=3)
    for i in range(3):
        seen.accept("eu-west-1", f"nonce-{i:012d}", NOW + i, NOW)
    # Full: the oldest is forgotten, and everything signed at or before it is refused from now on.
    seen.accept("eu-west-1", "nonce-000000000003", NOW + 3, NOW)
    assert len(seen) == 3
    with pytest.raises(Unauthorized, match="oldest"):
        seen.accept("eu-west-1", "nonce-000000000000", NOW, NOW)
    with pytest.raises(Unauthorized, match="accepted before"):
        seen.accept("eu-west-1", "nonce-000000000003", NOW + 3, NOW)


def test_a_request_signed_for_another_region_is_forbidden() -> None:
    headers = signed(destination="us-east-1")
    with pytest.raises(Forbidden, match="signed for us-east-1"):
        verify(SECRET, "POST", PATH, headers, BODY, NOW, destination=HERE)


def test_the_middleware_refuses_a_replayed_request() -> None:
    clock = ManualClock()
    app = PeerAuthMiddleware(echo_app(), SECRET, clock, destination=HERE)

    async def scenario() -> None:
        async with client(app) as plain:
            headers = sign(
                SECRET, "POST", "/replication/books/changes", BODY, "eu-west-1", clock.now_ms(), HERE
            )
            first = await plain.post("/replication/books/changes", content=BODY, headers=headers)
            assert first.status_code == 200
            again = await plain.post("/replication/books/changes", content=BODY, headers=headers)
            assert again.status_code == 401
            assert "accepted before" in again.json()["message"]

    run(scenario())


async def stream(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def test_a_streamed_body_is_checked_before_the_app_gets_its_last_chunk() -> None:
    clock = ManualClock()
    seen_by_app: list[tuple[int, bool]] = []

    async def recording_app(scope: object, receive: object, send: object) -> None:
        while True:
            message = await receive()  # type: ignore[operator]
            seen_by_app.append((len(message.get("body", b"")), message.get("more_body", False)))
            if not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"committed"})  # type: ignore[operator]

    app = PeerAuthMiddleware(recording_app, SECRET, clock, destination=HERE, max_body_bytes=10_000)
    target = "/replication/books/changes"

    async def scenario() -> None:
        async with client(app) as plain:
            chunks = [b"a" * 1000] * 3
            headers = sign(SECRET, "POST", target, b"".join(chunks), "eu-west-1", clock.now_ms(), HERE)
            ok = await plain.post(target, content=stream(chunks), headers=headers)
            assert ok.status_code == 200 and ok.text == "committed"
            assert sum(n for n, _ in seen_by_app) == 3000 and len(seen_by_app) >= 3
            seen_by_app.clear()
            # Another body than the one signed: refused, and the app never holds a complete body.
            headers = sign(SECRET, "POST", target, b"b" * 3000, "eu-west-1", clock.now_ms(), HERE)
            forged = await plain.post(target, content=stream(chunks), headers=headers)
            assert forged.status_code == 403 and "not the one it signed" in forged.json()["message"]
            assert all(more for _, more in seen_by_app)
            seen_by_app.clear()
            # A streamed body without a declared length goes over the limit: 413 as it crosses it.
            headers = sign(SECRET, "POST", target, b"", "eu-west-1", clock.now_ms(), HERE)
            big = await plain.post(target, content=stream([b"x" * 4000] * 5), headers=headers)
            assert big.status_code == 413
            assert sum(n for n, _ in seen_by_app) <= 10_000 and all(more for _, more in seen_by_app)

    run(scenario())


def test_a_streamed_body_is_signed_by_the_hash_its_caller_declares() -> None:
    clock = ManualClock()
    app = PeerAuthMiddleware(echo_app(), SECRET, clock, destination=HERE)
    chunks = [b"first ", b"second"]
    declared = {CONTENT_HEADER: hashlib.sha256(b"".join(chunks)).hexdigest()}

    async def scenario() -> None:
        async with client(app, PeerAuth(SECRET, "eu-west-1", clock, destination=HERE)) as c:
            ok = await c.post("/replication/books/changes", content=stream(chunks), headers=declared)
            assert ok.status_code == 200, ok.text
            assert ok.json()["body"] == "first second"
            lying = {CONTENT_HEADER: hashlib.sha256(b"something else").hexdigest()}
            refused = await c.post("/replication/books/changes", content=stream(chunks), headers=lying)
            assert refused.status_code == 403
            with pytest.raises(ValueError, match=CONTENT_HEADER):
                await c.post("/replication/books/changes", content=stream(chunks))

    run(scenario())


def test_a_request_to_a_cut_peer_fails_as_an_unreachable_one_until_healed() -> None:
    clock = ManualClock()
    app = PeerAuthMiddleware(echo_app(), SECRET, clock, destination=HERE)
    links = LinkFaults()

    async def scenario() -> None:
        async with client(app, PeerAuth(SECRET, "us-east-1", clock, destination=HERE, links=links)) as c:
            links.cut = frozenset({HERE})
            with pytest.raises(httpx.ConnectError, match=f"link to {HERE} is cut"):
                await c.post("/replication/books/changes", content=BODY)
            # Another peer's link is not this one.
            links.cut = frozenset({"eu-west-1"})
            assert (await c.post("/replication/books/changes", content=BODY)).status_code == 200

    run(scenario())


def test_a_request_to_a_slowed_peer_waits_the_delay_before_it_is_sent_until_lifted() -> None:
    clock = ManualClock()
    arrived: list[float] = []
    echo = echo_app()

    async def peer(scope: Scope, receive: Receive, send: Send) -> None:
        arrived.append(time.monotonic())
        await echo(scope, receive, send)

    app = PeerAuthMiddleware(peer, SECRET, clock, destination=HERE)
    links = LinkFaults()

    async def scenario() -> None:
        async with client(app, PeerAuth(SECRET, "us-east-1", clock, destination=HERE, links=links)) as c:
            links.slow = {HERE: 300}
            began = time.monotonic()
            # Signed after the wait: the peer accepts it as any other.
            assert (await c.post("/replication/books/changes", content=BODY)).status_code == 200
            assert arrived[-1] - began >= 0.3
            # Lifted while a request waits a minute: the next one is not held up, it overtakes the first.
            links.slow = {HERE: 60_000}
            waiting = asyncio.create_task(c.post("/replication/books/changes", content=BODY))
            await asyncio.sleep(0.1)
            links.slow = {}
            assert (await c.post("/replication/books/changes", content=BODY)).status_code == 200
            assert len(arrived) == 2 and not waiting.done()
            waiting.cancel()

    run(scenario())


def follow_scope(path: str = "/replication/follow") -> Scope:
    """A follow request's ASGI scope, signed by eu-west-1 for HERE (its body empty)."""
    headers = sign(SECRET, "POST", path, b"", "eu-west-1", NOW, HERE)
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "headers": raw}


def test_an_answer_streamed_to_a_slowed_peer_is_late_line_by_line_not_held_up_until_lifted() -> None:
    links = LinkFaults()
    # Each line: when the app handed it over, when it reached the peer, and whether the app's send
    # returned before it did.
    handed: list[float] = []
    written: list[tuple[Message, float]] = []
    returned_before_written: list[bool] = []

    async def lines(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for n in range(3):
            handed.append(time.monotonic())
            message = {"type": "http.response.body", "body": b"line %d\n" % n, "more_body": True}
            await send(message)
            returned_before_written.append(all(m is not message for m, _ in written))
        await send({"type": "http.response.body", "body": b""})

    app = PeerAuthMiddleware(lines, SECRET, ManualClock(), destination=HERE, links=links)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def peer(message: Message) -> None:
        written.append((message, time.monotonic()))

    async def scenario() -> None:
        links.slow = {"eu-west-1": 200}
        await app(follow_scope(), receive, peer)
        bodies = [(m["body"], at) for m, at in written if m["type"] == "http.response.body" and m["body"]]
        assert [body for body, _ in bodies] == [b"line 0\n", b"line 1\n", b"line 2\n"]
        for (_, at), made in zip(bodies, handed, strict=True):
            assert at - made >= 0.2
        # A latency, not a bandwidth: the app handed every line over before the first one was written.
        assert all(returned_before_written) and max(handed) < bodies[0][1]
        assert written[-1][0].get("more_body", False) is False
        links.slow = {}
        for seen in (handed, written, returned_before_written):
            seen.clear()
        await app(follow_scope(), receive, peer)
        assert len(written) == 5 and not any(returned_before_written)

    run(scenario())
