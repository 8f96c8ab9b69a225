"""JSON responses and errors over HTTP: the one set of helpers every endpoint of ours answers with.

An error carries its HTTP status (`BookstoreError.status`; the S3 errors set theirs too), so there is
one mapping, the errors' own: `status_of` reads it, `error_for` renders a domain error as the JSON body
{"error": code, "message": ...}. A 500 is an error no client can act on: it is logged and answered
without its message, which may name internals.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from bookstore.domain import errors

log = logging.getLogger("bookstore.http")

JSON_MEDIA = "application/json"
# The most a region's HTTP endpoints take in a request body (the API's framing answers 413 beyond it,
# /replication/ included): a region's own senders bound what they send a peer by it.
MAX_BODY_BYTES = 1 << 20
# The ASGI extension (in scope["extensions"]) through which our servers take a whole answer in one call:
# its "write" is `write(send, status, headers, body) -> bool` (runtime.coalescing.whole_answer).
WHOLE_ANSWER = "bookstore.whole_answer"


class CountedRoute(Route):
    """A plain Starlette route that names itself in the scope, so the API's metrics count it by template.

    FastAPI's router puts scope["route"] for its own APIRoutes only: without this, every replication
    and blog request was counted and logged as route "unmatched".
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self
        await super().handle(scope, receive, send)


class JSON(Response):
    """JSON rendered by orjson: handlers (and the API's hot paths) return these directly."""

    media_type = JSON_MEDIA

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSON:
    return JSON(content, status_code=status, headers=headers)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSON:
    """The error body every endpoint answers with: {"error": code, "message": message}."""
    return JSON({"error": code, "message": message}, status_code=status, headers=headers)


def status_of(exc: errors.BookstoreError) -> int:
    """The HTTP status `exc` answers with: its class's (500 for an error no client can act on)."""
    status = getattr(exc, "status", 500)
    return status if isinstance(status, int) and 400 <= status <= 599 else 500


def error_for(exc: errors.BookstoreError) -> JSON:
    """The response for a domain error: its own status and message; a 500 is logged, not explained."""
    status = status_of(exc)
    if status == 500:
        log.error("internal error: %s: %s", type(exc).__name__, exc.message)
        return error_response(500, "InternalError", "the server failed; try again")
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if isinstance(exc, errors.TooManyRequests):
        headers = {"Retry-After": str(exc.retry_after_s)}
    return error_response(status, exc.code, exc.message, headers)
