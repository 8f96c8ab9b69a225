"""What the edge accepts of a request: its limits, the headers it never forwards, and the checks.

The edge checks what it forwards: only its own host names, bounded URLs, headers and bodies, paths
without dot segments or control characters, no hop-by-hop or inter-region signing headers. `inspect`
makes every check in one pass over the headers and gathers what routing needs; a request that fails
one is refused with a 4xx (`Refusal`), never forwarded.
"""

from __future__ import annotations

import re

from starlette.types import Receive, Scope

from bookstore.kernel import request_ids
from bookstore.kernel.auth import SIGNING_HEADERS

MAX_URL_BYTES = 8192
MAX_HEADER_BYTES = 32 * 1024
MAX_HEADERS = 100
MAX_BODY_BYTES = 1 << 20
MAX_HOST_BYTES = 255
# Request headers the edge never forwards: hop-by-hop ones, those it sets itself, and the signing
# headers regions use between themselves (a client has no business sending them).
DROPPED = frozenset(
    {
        b"host",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"content-length",
        b"expect",
        b"x-client-region",
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-bookstore-client",
        # Checked (request_ids.accepted) and forwarded as the edge decides it.
        b"x-request-id",
    }
    | {name.lower().encode("ascii") for name in SIGNING_HEADERS}
)
# Characters a decoded path must not hold: controls (DEL too) and backslashes.
_UNSAFE_PATH = re.compile(r"[\x00-\x1f\x7f\\]").search
# The first segments of the API paths shoppers use (the storefront, the drills' shoppers, `curl`).
SHOPPER_API = frozenset({"truth", "books", "search", "bestsellers", "auth", ".well-known", "cart", "orders"})


class Refusal(Exception):
    """A request the edge answers itself with a 4xx."""

    def __init__(self, status: int, code: str, message: str, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.reason = reason


class EdgeRequest:
    """What the edge needs of a request's headers, gathered in one pass."""

    __slots__ = (
        "chunked",
        "client_header",
        "content_length",
        "cookie",
        "forward",
        "host",
        "idempotency_key",
        "request_id",
    )

    def __init__(self) -> None:
        self.host: bytes | None = None
        self.content_length: bytes | None = None
        self.chunked = False
        self.client_header: bytes | None = None
        self.cookie: bytes | None = None
        self.idempotency_key = False
        self.forward: list[tuple[bytes, bytes]] = []
        # The client's X-Request-Id while the headers are read; then the id the edge gives the request.
        self.request_id = b""


def refuse(status: int, code: str, message: str, reason: str) -> Refusal:
    return Refusal(status, code, message, reason)


def shopper_api(path: str) -> bool:
    """Whether a decoded /api/... path is one of the shop's (its first segment after /api/ names it)."""
    return path.startswith("/api/") and path[5:].split("/", 1)[0] in SHOPPER_API


def inspect(scope: Scope, allowed_hosts: frozenset[bytes], edge_url: str) -> EdgeRequest:
    """Check the request's target and headers; gather what routing needs and the headers to forward."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode("utf-8", "replace")
    query: bytes = scope.get("query_string", b"")
    return inspect_parts(raw, query, scope["path"], scope["headers"], allowed_hosts, edge_url)


def inspect_parts(
    raw: bytes,
    query: bytes,
    path: str,
    headers: list[tuple[bytes, bytes]],
    allowed_hosts: frozenset[bytes],
    edge_url: str,
) -> EdgeRequest:
    """`inspect` on a request's parts: its raw and decoded paths, its query, its (lower-case) headers."""
    if len(raw) + len(query) > MAX_URL_BYTES:
        raise refuse(414, "URITooLong", f"the URL is longer than {MAX_URL_BYTES} bytes", "url")
    if not path.startswith("/"):
        raise refuse(400, "BadRequest", "the request target must be a path starting with '/'", "path")
    # Printable ASCII holds none of them (the usual path, checked without the regular expression).
    if not (path.isascii() and path.isprintable() and "\\" not in path) and _UNSAFE_PATH(path) is not None:
        raise refuse(400, "BadRequest", "the path holds control characters or backslashes", "path")
    if "/." in path:
        for segment in path.split("/"):
            if segment in (".", ".."):
                raise refuse(400, "BadRequest", "the path holds '.' or '..' segments", "path")
    request = EdgeRequest()
    if len(headers) > MAX_HEADERS:
        raise refuse(431, "RequestHeaderFieldsTooLarge", f"more than {MAX_HEADERS} headers", "headers")
    size = 0
    forward = request.forward
    for name, value in headers:
        size += len(name) + len(value) + 4
        if name in DROPPED:
            if name == b"host":
                if request.host is not None:
                    raise refuse(400, "BadRequest", "more than one Host header", "host")
                request.host = value
            elif name == b"content-length":
                if request.content_length is not None and request.content_length != value:
                    raise refuse(400, "BadRequest", "conflicting Content-Length headers", "framing")
                request.content_length = value
            elif name == b"transfer-encoding":
                request.chunked = True
            elif name == b"x-client-region":
                request.client_header = value
            elif name == b"x-request-id":
                request.request_id = value
            continue
        if name == b"cookie":
            request.cookie = value
        elif name == b"idempotency-key":
            request.idempotency_key = True
        forward.append((name, value))
    if size > MAX_HEADER_BYTES:
        raise refuse(431, "RequestHeaderFieldsTooLarge", f"headers over {MAX_HEADER_BYTES} bytes", "headers")
    host = request.host
    if host is None:
        raise refuse(400, "BadRequest", "a Host header is required", "host")
    if host.lower() not in allowed_hosts:
        shown = host[:MAX_HOST_BYTES].decode("latin-1")
        raise refuse(400, "BadRequest", f"this edge does not serve host {shown!r}; use {edge_url}", "host")
    if request.chunked and request.content_length is not None:
        raise refuse(400, "BadRequest", "Content-Length and Transfer-Encoding together", "framing")
    if request.content_length is not None:
        if not request.content_length.isdigit() or len(request.content_length) > 12:
            raise refuse(400, "BadRequest", "Content-Length is not a number", "framing")
        if int(request.content_length) > MAX_BODY_BYTES:
            raise refuse(
                413, "PayloadTooLarge", f"the body exceeds {MAX_BODY_BYTES} bytes; send less", "body"
            )
    request.request_id = request_ids.accepted(request.request_id or None)
    return request


async def read_body(receive: Receive, request: EdgeRequest) -> bytes:
    """The request's whole body, refused (413) past MAX_BODY_BYTES as it arrives."""
    if request.content_length is None and not request.chunked:
        return b""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise refuse(400, "BadRequest", "the client went away", "disconnect")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise refuse(
                413, "PayloadTooLarge", f"the body exceeds {MAX_BODY_BYTES} bytes; send less", "body"
            )
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)
