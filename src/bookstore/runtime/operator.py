"""Who may use the operator controls: the operator token, its login links and sessions, and its checks.

Every operator action (kill, stop, start a region; break an API; cut a link; promote the blog...) goes
to the supervisor's control API, directly (the `bookstore` command, drills, benches) or through the
edge's /edge/control (the operator page). Both take only a caller that presents the deployment's
operator token (bookstore.runtime.secret) as `Authorization: Bearer <token>`:

- The control API (`ControlGuard`) also refuses anything a browser sends: a request with an Origin or a
  Sec-Fetch-* header (no web page has any business there), a Host that is not the API's own address
  (a DNS-rebound page names its own host), and a POST whose body is not `application/json` (a form or
  a `text/plain` fetch). So a hostile page can neither drive it nor read it, whatever the browser does.
- The operator page gets a session by a deliberate step: a one-time login link (`bookstore up` prints
  one, `bookstore operator-link` makes another) whose code the edge redeems, once, for a session token
  that expires (`OperatorAccess`). Codes and sessions are HMACs under the operator token, so the edge
  keeps no table of them, and rotating the token voids every one.

`control_call` and `control_call_async` are the client side every caller uses.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

import httpx
import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

LOGIN_TTL_S = 3600
SESSION_TTL_S = 12 * 3600
# Remembered redeemed codes are bounded; past this many unexpired ones, new logins wait for expiry.
MAX_REDEEMED = 10_000
LOGIN_FRAGMENT = "login"
_JSON = "application/json"


def operator_headers(token: str) -> dict[str, str]:
    """The header that presents the operator token."""
    return {"authorization": f"Bearer {token}"}


def control_call(
    url: str,
    token: str,
    method: str,
    path: str,
    body: Mapping[str, Any] | None = None,
    *,
    timeout_s: float = 30.0,
) -> httpx.Response:
    """One request to the control API at `url`, with the operator token; a POST always sends JSON."""
    return httpx.request(method, url + path, **_request(token, method, body), timeout=timeout_s)


async def control_call_async(
    url: str,
    token: str,
    method: str,
    path: str,
    body: Mapping[str, Any] | None = None,
    *,
    timeout_s: float = 30.0,
) -> httpx.Response:
    """`control_call` on an event loop."""
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        return await client.request(method, url + path, **_request(token, method, body))


def _request(token: str, method: str, body: Mapping[str, Any] | None) -> dict[str, Any]:
    headers = operator_headers(token)
    if method.upper() != "POST":
        return {"headers": headers}
    return {"headers": {**headers, "content-type": _JSON}, "content": orjson.dumps(dict(body or {}))}


def bearer(headers: Mapping[str, str]) -> str | None:
    """The credential of an `Authorization: Bearer ...` header, or None."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def same_token(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


# -- login links and sessions (the operator page) ------------------------------------------------------


def _mac(token: str, kind: str, expires: int, nonce: str) -> str:
    digest = hmac.new(token.encode(), f"{kind}.{expires}.{nonce}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _signed(token: str, kind: str, expires: int) -> str:
    nonce = secrets.token_urlsafe(12)
    return f"{kind}.{expires}.{nonce}.{_mac(token, kind, expires, nonce)}"


def _verify(token: str, kind: str, value: str, now_s: float) -> tuple[int, str] | None:
    """(expiry, nonce) of a valid, unexpired code or session of `kind`; None otherwise."""
    parts = value.split(".")
    if len(parts) != 4 or parts[0] != kind or not parts[1].isdigit() or len(parts[1]) > 12:
        return None
    expires, nonce, mac = int(parts[1]), parts[2], parts[3]
    if not hmac.compare_digest(mac.encode(), _mac(token, kind, expires, nonce).encode()):
        return None
    return (expires, nonce) if expires > now_s else None


def login_code(token: str, now_s: float | None = None, ttl_s: float = LOGIN_TTL_S) -> str:
    """A code the edge redeems once (within `ttl_s`) for an operator session."""
    return _signed(token, "login", int((time.time() if now_s is None else now_s) + ttl_s))


def login_link(edge_url: str, token: str, now_s: float | None = None) -> str:
    """The operator page's address with a one-time login code in its fragment (never sent in a request)."""
    return f"{edge_url}/edge/ui/#{LOGIN_FRAGMENT}={login_code(token, now_s)}"


class OperatorAccess:
    """The edge's side: redeems login codes (each once) for sessions, and says whom to let in."""

    def __init__(self, token: str, clock: Callable[[], float] = time.time) -> None:
        self.token = token
        self.clock = clock
        self._redeemed: dict[str, int] = {}

    def redeem(self, code: str) -> tuple[str, int] | None:
        """(session token, its expiry in epoch seconds) for a valid code not redeemed before, else None."""
        now = self.clock()
        checked = _verify(self.token, "login", code, now)
        if checked is None:
            return None
        self._redeemed = {n: e for n, e in self._redeemed.items() if e > now}
        expires, nonce = checked
        if nonce in self._redeemed or len(self._redeemed) >= MAX_REDEEMED:
            return None
        self._redeemed[nonce] = expires
        session_expires = int(now + SESSION_TTL_S)
        return _signed(self.token, "session", session_expires), session_expires

    def allows(self, credential: str | None) -> bool:
        """Whether `credential` is the operator token itself or an unexpired session."""
        if credential is None:
            return False
        if same_token(credential, self.token):
            return True
        return _verify(self.token, "session", credential, self.clock()) is not None


# -- the control API's guard ----------------------------------------------------------------------------


class ControlGuard:
    """ASGI middleware in front of the control API: the operator token, no browser, its own Host, JSON."""

    def __init__(self, app: ASGIApp, token: str, hosts: Collection[str]) -> None:
        self.app = app
        self.token = token
        self.hosts = frozenset(h.lower() for h in hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = self._refusal(scope)
        if refused is None:
            await self.app(scope, receive, send)
            return
        status, code, message = refused
        headers = [(b"content-type", _JSON.encode()), (b"cache-control", b"no-store")]
        if status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="bookstore-control"'))
        body = orjson.dumps({"error": code, "message": message})
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _refusal(self, scope: Scope) -> tuple[int, str, str] | None:
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            key = name.decode("latin-1").lower()
            if key == "host" and key in headers:
                return 400, "BadRequest", "more than one Host header"
            headers[key] = value.decode("latin-1")
        if headers.get("host", "").lower() not in self.hosts:
            return (
                400,
                "BadRequest",
                f"this control API answers only to {', '.join(sorted(self.hosts))} "
                f"in Host, not {headers.get('host', '')[:100]!r}",
            )
        if "origin" in headers or any(k.startswith("sec-fetch-") for k in headers):
            return (
                403,
                "Forbidden",
                "the control API takes no requests from web pages; use the `bookstore` command, "
                "or the operator page on the edge",
            )
        if not same_token(bearer(headers), self.token):
            return (
                401,
                "Unauthorized",
                "present the operator token: 'Authorization: Bearer <token>' (DATA_DIR/operator-token)",
            )
        if scope["method"] == "POST":
            content_type = headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type != _JSON:
                return 415, "UnsupportedMediaType", "control actions take a JSON body (application/json)"
        return None


def control_hosts(address: str, port: int) -> list[str]:
    """The Host values the control API answers to: its address and localhost, with its port."""
    return [f"{address}:{port}", f"localhost:{port}"]
