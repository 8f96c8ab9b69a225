"""Authentication of requests between regions: an HMAC-SHA256 of each request under the shared secret.

The signature covers, one per line: a version tag, the method, the request target (percent-encoded
path, plus "?" and the query when there is one), the timestamp (epoch ms), the hex SHA-256 of the
body, the source region id, the destination region id and a random nonce. It travels in headers with
everything it covers but the method and target, the body's hash included, so a receiver checks the
signature before it reads a byte of the body, then hashes the body as it streams and refuses it when
it differs from the signed hash. A request signed more than five minutes ago, or more than a minute
ahead of the receiver's clock (the allowance for clocks that differ between regions), is refused with
401, like one missing a header or one accepted before (each signature is accepted once: replay.py);
a signature that does not match (wrong secret, anything covered altered) or that names another
destination is refused with 403.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import AsyncGenerator, Generator, Mapping
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import quote

import httpx
import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bookstore.domain.errors import Forbidden, Unauthorized
from bookstore.kernel.link_faults import Lag, LinkFaults
from bookstore.kernel.replay import SeenSignatures
from bookstore.ports import Clock

REGION_HEADER = "X-Bookstore-Region"
DESTINATION_HEADER = "X-Bookstore-Destination"
TIMESTAMP_HEADER = "X-Bookstore-Timestamp"
NONCE_HEADER = "X-Bookstore-Nonce"
CONTENT_HEADER = "X-Bookstore-Content-SHA256"
SIGNATURE_HEADER = "X-Bookstore-Signature"
# On a 401 refusal: the refusing region's clock (epoch ms), so a caller refused for its timestamp learns
# how far apart the two clocks are (table replication's clock bound uses it).
CLOCK_HEADER = "X-Bookstore-Clock"
# Every header of the scheme: clients outside the deployment have no business sending them (the edge
# drops them).
SIGNING_HEADERS = (
    REGION_HEADER,
    DESTINATION_HEADER,
    TIMESTAMP_HEADER,
    NONCE_HEADER,
    CONTENT_HEADER,
    SIGNATURE_HEADER,
)
MAX_AGE_MS = 5 * 60 * 1000
MAX_AHEAD_MS = 60 * 1000
MAX_BODY_BYTES = 64 << 20
_SCHEME = "BOOKSTORE-HMAC-SHA256-2"
_REGION = re.compile(r"[A-Za-z0-9._-]{1,64}")
_TIMESTAMP = re.compile(r"[0-9]{1,15}")
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")

Secret = str | bytes


def _key(secret: Secret) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not key:
        raise ValueError("the shared secret between regions is empty; configure one")
    return key


def _signature(key: bytes, method: str, target: str, claim: Claim) -> str:
    canonical = "\n".join(
        (
            _SCHEME,
            method.upper(),
            target.rstrip("?"),
            str(claim.timestamp_ms),
            claim.body_sha256,
            claim.region,
            claim.destination,
            claim.nonce,
        )
    )
    return hmac.new(key, canonical.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Claim:
    """What a signed request says of itself: who sent it, to whom, when, once, with which body."""

    region: str
    destination: str
    timestamp_ms: int
    nonce: str
    body_sha256: str


def _check_region(region: str, what: str = "region id") -> None:
    if not _REGION.fullmatch(region):
        raise ValueError(f"{what} {region!r} cannot sign: use letters, digits, '.', '_' or '-'")


def sign(
    secret: Secret,
    method: str,
    path: str,
    body: bytes,
    region: str,
    now_ms: int,
    destination: str,
    *,
    nonce: str | None = None,
    body_sha256: str | None = None,
) -> dict[str, str]:
    """The headers that authenticate a request from `region` to `destination` (`path`: target + query).

    `body_sha256` (hex) stands for the body's hash when the body is streamed rather than held (`body`
    is then ignored).
    """
    _check_region(region)
    _check_region(destination, "destination region id")
    digest = body_sha256.lower() if body_sha256 is not None else hashlib.sha256(body).hexdigest()
    claim = Claim(region, destination, int(now_ms), nonce or secrets.token_hex(16), digest)
    if not _NONCE.fullmatch(claim.nonce):
        raise ValueError("a nonce is 16 to 64 letters, digits, '_' or '-'")
    if not _SHA256.fullmatch(claim.body_sha256):
        raise ValueError("a body's hash is 64 hex digits (SHA-256)")
    return {
        REGION_HEADER: claim.region,
        DESTINATION_HEADER: claim.destination,
        TIMESTAMP_HEADER: str(claim.timestamp_ms),
        NONCE_HEADER: claim.nonce,
        CONTENT_HEADER: claim.body_sha256,
        SIGNATURE_HEADER: _signature(_key(secret), method, path, claim),
    }


def authenticate(
    secret: Secret,
    method: str,
    path: str,
    headers: Mapping[str, str],
    now_ms: int,
    *,
    destination: str,
    seen: SeenSignatures | None = None,
    max_age_ms: int = MAX_AGE_MS,
    max_ahead_ms: int = MAX_AHEAD_MS,
) -> Claim:
    """The claim of a correctly signed, fresh request for `destination`, from its headers alone.

    The body is not read: the caller checks that it hashes to `Claim.body_sha256`. With `seen`, the
    signature is remembered there and refused when it was accepted before. Raises Unauthorized (401)
    when a header is missing or malformed, the timestamp is outside the window or the signature was
    used before; Forbidden (403) when the signature does not match or names another destination.
    """
    key = _key(secret)
    lower = {name.lower(): value for name, value in headers.items()}
    missing = [name for name in SIGNING_HEADERS if not lower.get(name.lower())]
    if missing:
        raise Unauthorized(
            f"request between regions without {', '.join(missing)}; "
            "sign it with the deployment's shared secret (bookstore.kernel.auth.PeerAuth)"
        )
    region, to, timestamp, nonce, body_sha256, given = (
        lower[name.lower()].strip() for name in SIGNING_HEADERS
    )
    for name, value, pattern in (
        (REGION_HEADER, region, _REGION),
        (DESTINATION_HEADER, to, _REGION),
        (TIMESTAMP_HEADER, timestamp, _TIMESTAMP),
        (NONCE_HEADER, nonce, _NONCE),
        (CONTENT_HEADER, body_sha256, _SHA256),
    ):
        if not pattern.fullmatch(value):
            raise Unauthorized(f"{name} {value[:70]!r} is malformed")
    age = now_ms - int(timestamp)
    if age > max_age_ms:
        raise Unauthorized(
            f"request from {region} signed {age / 1000:.1f} s ago, more than {max_age_ms / 1000:g} s: "
            "expired; sign it again (and check that the regions' clocks agree)"
        )
    if -age > max_ahead_ms:
        raise Unauthorized(
            f"request from {region} signed {-age / 1000:.1f} s in the future, more than the "
            f"{max_ahead_ms / 1000:g} s allowed; check that the regions' clocks agree"
        )
    claim = Claim(region, to, int(timestamp), nonce, body_sha256)
    expected = _signature(key, method, path, claim)
    # Constant time, so that the time taken does not tell how much of a forged signature is right.
    if not hmac.compare_digest(expected.encode("ascii"), given.lower().encode("utf-8", "replace")):
        raise Forbidden(
            f"the signature of this request from {region} does not match: the shared secret differs, "
            "or the method, path, body hash, timestamp, regions or nonce were altered on the way"
        )
    if to != destination:
        raise Forbidden(f"this request from {region} was signed for {to}, not for {destination}")
    if seen is not None:
        seen.accept(region, nonce, claim.timestamp_ms, now_ms)
    return claim


def verify(
    secret: Secret,
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    now_ms: int,
    *,
    destination: str,
    seen: SeenSignatures | None = None,
    max_age_ms: int = MAX_AGE_MS,
    max_ahead_ms: int = MAX_AHEAD_MS,
) -> str:
    """The source region of a correctly signed, fresh request with this whole `body` (see authenticate).

    Raises Forbidden (403) too when the body is not the one signed.
    """
    claim = authenticate(
        secret,
        method,
        path,
        headers,
        now_ms,
        destination=destination,
        seen=seen,
        max_age_ms=max_age_ms,
        max_ahead_ms=max_ahead_ms,
    )
    check_body(claim, hashlib.sha256(body).hexdigest())
    return claim.region


def check_body(claim: Claim, body_sha256: str) -> None:
    """Raises Forbidden unless the body read hashes (hex SHA-256) to the one the request signed."""
    if not hmac.compare_digest(body_sha256, claim.body_sha256):
        raise Forbidden(f"the body of this request from {claim.region} is not the one it signed")


class PeerAuth(httpx.Auth):
    """Signs every outgoing httpx request as coming from `region` (sync and async clients alike).

    Each request is signed for `destination`, or, when that is None, for the region its own
    X-Bookstore-Destination header names (a client that talks to several regions sets it per request).
    A body given as bytes is hashed here; a streamed body (an iterator, a file) is never read by the
    signer: its caller sets X-Bookstore-Content-SHA256 to the body's hex SHA-256 beforehand.
    With `links` (the region's links made faulty on purpose), a request to a cut peer fails before it is
    signed, and one to a slowed peer waits the delay before it is signed and sent.
    """

    def __init__(
        self,
        secret: Secret,
        region: str,
        clock: Clock,
        destination: str | None = None,
        *,
        links: LinkFaults | None = None,
    ) -> None:
        _key(secret)
        _check_region(region)
        if destination is not None:
            _check_region(destination, "destination region id")
        self.secret = secret
        self.region = region
        self.clock = clock
        self.destination = destination
        self.links = links

    def _destination(self, request: httpx.Request) -> str:
        destination = self.destination or request.headers.get(DESTINATION_HEADER)
        if not destination:
            raise ValueError(f"a request between regions names its destination region ({DESTINATION_HEADER})")
        return destination

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        # Every request between regions is signed here: the one place a slow link is kept on the way out
        # (the wait before signing, so that the signature is as fresh as an unslowed one's).
        if self.links is not None and (delay_s := self.links.delay_s(self._destination(request))):
            await asyncio.sleep(delay_s)
        yield next(self.auth_flow(request))

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.links is not None and (delay_s := self.links.delay_s(self._destination(request))):
            time.sleep(delay_s)
        yield next(self.auth_flow(request))

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        destination = self._destination(request)
        if self.links is not None:
            # Every request between regions is signed here: the one place a cut link is kept on the way out.
            self.links.refuse(request, destination)
        target = request.url.raw_path.decode("ascii")
        declared = request.headers.get(CONTENT_HEADER)
        if declared is None and not isinstance(request.stream, httpx.ByteStream):
            raise ValueError(f"a streamed body between regions is signed by its hash: set {CONTENT_HEADER}")
        request.headers.update(
            sign(
                self.secret,
                request.method,
                target,
                b"" if declared is not None else request.content,
                self.region,
                self.clock.now_ms(),
                destination,
                body_sha256=declared,
            )
        )
        yield request


def request_target(scope: Scope) -> str:
    """The request target of an ASGI request as its client sent (and signed) it: raw path and query."""
    raw: bytes | None = scope.get("raw_path")
    if raw is None:
        raw = quote(scope["path"]).encode("ascii")
    target = raw.decode("latin-1")
    query: bytes = scope.get("query_string", b"")
    if query and "?" not in target:
        target += "?" + query.decode("latin-1")
    return target


def first_headers(scope: Scope) -> dict[str, str]:
    """An ASGI request's headers by lower-case name, the first value of each."""
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return headers


class _Refused(Exception):
    """Raised into the app when the middleware has answered instead of it (the body was refused)."""


# The scope state's key of the verified request's own `send` (PeerAuthMiddleware).
PEER_SEND = "peer_send"


class PeerAuthMiddleware:
    """Refuses requests under `protected_prefix` that are not signed by a region for `destination`.

    The headers are checked before any of the body is read: a request unsigned, expired, replayed,
    for another destination or with a wrong signature is answered at once (and the connection
    closed), and one whose Content-Length exceeds `max_body_bytes` gets 413. The body then streams to
    the app, hashed chunk by chunk: beyond `max_body_bytes` the middleware answers 413, and when the
    last chunk has arrived it checks the hash BEFORE the app receives that chunk; on a mismatch it
    answers 403. Either way the app's `receive` raises instead, so the app never sees a complete body
    that was not signed (apps commit only once they have the whole body), and whatever it then sends
    is dropped. A verified request carries its source region as `request.state.peer_region`.
    Refusals are JSON {"error", "message"}. With `links` (the region's links made faulty on purpose), a
    request from a cut peer is answered 503, an answer streaming to a peer cut off meanwhile ends at its
    next chunk (as far as the peer can tell, the stream ends; it asks again and is refused), and every
    message of an answer to a slowed peer is written the delay after the app sent it (`Lag`).
    """

    def __init__(
        self,
        app: ASGIApp,
        secret: Secret,
        clock: Clock,
        *,
        destination: str,
        protected_prefix: str = "/replication/",
        max_body_bytes: int = MAX_BODY_BYTES,
        seen: SeenSignatures | None = None,
        links: LinkFaults | None = None,
    ) -> None:
        _key(secret)
        self.app = app
        self.secret = secret
        self.clock = clock
        self.destination = destination
        self.prefix = protected_prefix
        self.max_body_bytes = max_body_bytes
        self.seen = seen or SeenSignatures(MAX_AGE_MS)
        self.links = links

    def protects(self, path: str) -> bool:
        return path.startswith(self.prefix) or path == self.prefix.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.protects(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = first_headers(scope)
        try:
            claim = authenticate(
                self.secret,
                scope["method"],
                request_target(scope),
                headers,
                self.clock.now_ms(),
                destination=self.destination,
                seen=self.seen,
            )
        except Unauthorized as exc:
            await _refuse(send, 401, exc.code, exc.message, clock_ms=self.clock.now_ms())
            return
        except Forbidden as exc:
            await _refuse(send, 403, exc.code, exc.message)
            return
        if self.links is not None and claim.region in self.links.cut:
            heal = '{"cut": []} heals it'
            message = f"the link from {claim.region} to {self.destination} is cut (fault switch; {heal})"
            await _refuse(send, 503, "Unavailable", message)
            return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await _refuse(send, 413, "PayloadTooLarge", self._too_large())
            return
        body = _SignedBody(claim, receive, send, self.max_body_bytes, self._too_large(), self.links)
        # PEER_SEND: this layer's send, for an answer's body lines to skip the app's wrappers of send
        # (which only look at the answer's start): a follow stream sends a line per write per follower.
        state = {**scope.get("state", {}), "peer_region": claim.region, PEER_SEND: body.send}
        try:
            await self.app({**scope, "state": state}, body.receive, body.send)
        except _Severed:
            pass
        except Exception:
            # Answered already: whatever the app made of the refused body (_Refused, or its own error
            # on top of it) ends here.
            if not body.refused:
                raise
        finally:
            if body.lag is not None:
                body.lag.close()

    def _too_large(self) -> str:
        return f"the body exceeds {self.max_body_bytes} bytes, the most this endpoint takes"


class _Severed(BaseException):
    """Raised into the app when the peer it answers is cut off: its answer ends there. Not an Exception,
    as a cancellation is not: the app's error handlers would log it as a server error."""


class _SignedBody:
    """The `receive` and `send` of a request whose body must hash to what it signed (and, with `links`, of
    an answer that ends when its peer is cut off, and is late while its peer is slowed)."""

    def __init__(
        self, claim: Claim, receive: Receive, send: Send, limit: int, too_large: str, links: LinkFaults | None
    ) -> None:
        self.claim = claim
        self.links = links
        # Once an answer was slowed, the rest of it follows in order behind what is held (at no delay
        # once the link is no longer slow).
        self.lag: Lag | None = None
        self._receive = receive
        self._send = send
        self.limit = limit
        self.too_large = too_large
        self.hash = hashlib.sha256()
        self.size = 0
        self.refused = False
        self.started = False

    async def receive(self) -> Message:
        if self.refused:
            raise _Refused
        message = await self._receive()
        if message["type"] != "http.request":
            return message
        chunk: bytes = message.get("body", b"")
        self.size += len(chunk)
        if self.size > self.limit:
            await self._refuse(413, "PayloadTooLarge", self.too_large)
        self.hash.update(chunk)
        if not message.get("more_body", False):
            try:
                check_body(self.claim, self.hash.hexdigest())
            except Forbidden as exc:
                await self._refuse(403, exc.code, exc.message)
        return message

    async def send(self, message: Message) -> None:
        if self.refused:
            return
        self.started = True
        links = self.links
        if links is None:
            await self._send(message)
            return
        severed = message["type"] == "http.response.body" and self.claim.region in links.cut
        if severed:
            message = {"type": "http.response.body", "body": b"", "more_body": False}
        delay_s = links.delay_s(self.claim.region)
        if delay_s or self.lag is not None:
            self.lag = self.lag or Lag(self._send)
            await self.lag.send(message, delay_s)
        else:
            await self._send(message)
        if severed:
            raise _Severed

    async def _refuse(self, status: int, code: str, message: str) -> NoReturn:
        self.refused = True
        # An app that answered before reading the body gets its connection cut instead.
        if not self.started:
            await _refuse(self._send, status, code, message)
        raise _Refused


async def _refuse(send: Send, status: int, code: str, message: str, clock_ms: int | None = None) -> None:
    body = orjson.dumps({"error": code, "message": message})
    # Closed after the answer: what is left of the body is not worth reading.
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"connection", b"close"),
    ]
    if status == 401:
        headers.append((b"www-authenticate", _SCHEME.encode("ascii")))
    if clock_ms is not None:
        headers.append((CLOCK_HEADER.lower().encode("ascii"), str(clock_ms).encode("ascii")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
