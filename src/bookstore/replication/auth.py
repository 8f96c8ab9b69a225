"""Authentication of requests between regions: an HMAC-SHA256 of each request under the shared secret.

The signature covers, one per line: a version tag, the method, the request target (percent-encoded
path, plus "?" and the query when there is one), the timestamp (epoch ms), the hex SHA-256 of the
body and the source region id. It travels in three headers with the region and the timestamp. A
request signed more than five minutes ago, or more than a minute ahead of the receiver's clock (the
allowance for clocks that differ between regions), is refused with 401, like one missing a header;
a signature that does not match (wrong secret, or anything covered altered) is refused with 403.
A captured request can be replayed within the window: replication endpoints are idempotent (a
change applies only when its version is newer), so a replay changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Generator, Mapping
from urllib.parse import quote

import httpx
import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bookstore.domain.errors import Forbidden, Unauthorized
from bookstore.ports import Clock

REGION_HEADER = "X-Bookstore-Region"
TIMESTAMP_HEADER = "X-Bookstore-Timestamp"
SIGNATURE_HEADER = "X-Bookstore-Signature"
# On a 401 refusal: the refusing region's clock (epoch ms), so a caller refused for its timestamp learns
# how far apart the two clocks are (table replication's clock bound uses it).
CLOCK_HEADER = "X-Bookstore-Clock"
MAX_AGE_MS = 5 * 60 * 1000
MAX_AHEAD_MS = 60 * 1000
MAX_BODY_BYTES = 64 << 20
_SCHEME = "BOOKSTORE-HMAC-SHA256"
_REGION = re.compile(r"[A-Za-z0-9._-]{1,64}")
_TIMESTAMP = re.compile(r"[0-9]{1,15}")

Secret = str | bytes


def _key(secret: Secret) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not key:
        raise ValueError("the shared secret between regions is empty; configure one")
    return key


def _signature(key: bytes, method: str, target: str, timestamp: str, body: bytes, region: str) -> str:
    canonical = "\n".join(
        (_SCHEME, method.upper(), target.rstrip("?"), timestamp, hashlib.sha256(body).hexdigest(), region)
    )
    return hmac.new(key, canonical.encode("utf-8"), hashlib.sha256).hexdigest()


def sign(secret: Secret, method: str, path: str, body: bytes, region: str, now_ms: int) -> dict[str, str]:
    """The headers that authenticate a request from `region`; `path` is the target with its query."""
    if not _REGION.fullmatch(region):
        raise ValueError(f"region id {region!r} cannot sign: use letters, digits, '.', '_' or '-'")
    timestamp = str(int(now_ms))
    return {
        REGION_HEADER: region,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: _signature(_key(secret), method, path, timestamp, body, region),
    }


def verify(
    secret: Secret,
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    now_ms: int,
    *,
    max_age_ms: int = MAX_AGE_MS,
    max_ahead_ms: int = MAX_AHEAD_MS,
) -> str:
    """The source region of a correctly signed, fresh request.

    Raises Unauthorized (401) when a header is missing or malformed or the timestamp is outside the
    window, Forbidden (403) when the signature does not match the request.
    """
    key = _key(secret)
    lower = {name.lower(): value for name, value in headers.items()}
    names = (REGION_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)
    missing = [name for name in names if not lower.get(name.lower())]
    if missing:
        raise Unauthorized(
            f"request between regions without {', '.join(missing)}; "
            "sign it with the deployment's shared secret (bookstore.replication.auth.PeerAuth)"
        )
    region = lower[REGION_HEADER.lower()].strip()
    timestamp = lower[TIMESTAMP_HEADER.lower()].strip()
    given = lower[SIGNATURE_HEADER.lower()].strip().lower()
    if not _REGION.fullmatch(region):
        raise Unauthorized(f"{REGION_HEADER} {region[:70]!r} is not a region id")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise Unauthorized(f"{TIMESTAMP_HEADER} {timestamp[:20]!r} is not epoch milliseconds")
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
    expected = _signature(key, method, path, timestamp, body, region)
    # Constant time, so that the time taken does not tell how much of a forged signature is right.
    if not hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8", "replace")):
        raise Forbidden(
            f"the signature of this request from {region} does not match: the shared secret differs, "
            "or the method, path, body, timestamp or region was altered on the way"
        )
    return region


class PeerAuth(httpx.Auth):
    """Signs every outgoing httpx request as coming from `region` (sync and async clients alike)."""

    requires_request_body = True

    def __init__(self, secret: Secret, region: str, clock: Clock) -> None:
        _key(secret)
        if not _REGION.fullmatch(region):
            raise ValueError(f"region id {region!r} cannot sign: use letters, digits, '.', '_' or '-'")
        self.secret = secret
        self.region = region
        self.clock = clock

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        target = request.url.raw_path.decode("ascii")
        request.headers.update(
            sign(self.secret, request.method, target, request.content, self.region, self.clock.now_ms())
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


class PeerAuthMiddleware:
    """Refuses requests under `protected_prefix` that are not signed by a region with the shared secret.

    The body is read once (at most `max_body_bytes`, else 413) to check its hash, then replayed to
    the app. A verified request carries its source region as `request.state.peer_region`. Refusals
    are JSON {"error", "message"}: 401 missing or expired, 403 bad signature.
    """

    def __init__(
        self,
        app: ASGIApp,
        secret: Secret,
        clock: Clock,
        protected_prefix: str = "/replication/",
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        _key(secret)
        self.app = app
        self.secret = secret
        self.clock = clock
        self.prefix = protected_prefix
        self.max_body_bytes = max_body_bytes

    def protects(self, path: str) -> bool:
        return path.startswith(self.prefix) or path == self.prefix.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.protects(scope["path"]):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _refuse(send, 413, "PayloadTooLarge", f"the body exceeds {self.max_body_bytes} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        try:
            region = verify(
                self.secret, scope["method"], request_target(scope), headers, body, self.clock.now_ms()
            )
        except Unauthorized as exc:
            await _refuse(send, 401, exc.code, exc.message, clock_ms=self.clock.now_ms())
            return
        except Forbidden as exc:
            await _refuse(send, 403, exc.code, exc.message)
            return
        state = {**scope.get("state", {}), "peer_region": region}
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app({**scope, "state": state}, replay, send)


async def _refuse(send: Send, status: int, code: str, message: str, clock_ms: int | None = None) -> None:
    body = orjson.dumps({"error": code, "message": message})
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("ascii")),
    ]
    if status == 401:
        headers.append((b"www-authenticate", _SCHEME.encode("ascii")))
    if clock_ms is not None:
        headers.append((CLOCK_HEADER.lower().encode("ascii"), str(clock_ms).encode("ascii")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
