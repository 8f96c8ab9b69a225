"""The API's busiest requests answered straight from ASGI, without FastAPI's per-request machinery.

FastAPI still declares these routes, so /openapi.json documents them, and still answers every request
this layer does not take whole: a body that is not a JSON object of exactly the declared shape, another
content type, other query parameters, an over-long header. Those go to FastAPI unchanged (the body
replayed), so malformed input gets its answer from one place. What this layer takes is validated as
FastAPI's declarations would (strict types, the same length limits), authorised by the same bearer
check, handled by the same services and answered with the same JSON; domain errors go through the
same mapping (kernel.http.error_for). tests/integration/test_api_hotpaths.py holds the two to agreeing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi.routing import APIRoute
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bookstore.api.auth import bearer_principal
from bookstore.api.middleware import Framing
from bookstore.api.paging import page_answer
from bookstore.api.responses import internal_error
from bookstore.domain.errors import BookstoreError
from bookstore.domain.orders import OrderLine
from bookstore.domain.users import Principal
from bookstore.kernel import request_ids
from bookstore.kernel.http import WHOLE_ANSWER, error_for
from bookstore.services import pages
from bookstore.services.cart import Cart
from bookstore.services.catalog import MAX_CACHED, Catalog
from bookstore.services.checkout import Checkout
from bookstore.services.identity import Identity
from bookstore.services.writes import GroupCommit

log = logging.getLogger("bookstore.api")
# The length limits the FastAPI declarations of these routes put on strings and lists (api/app.py).
SHORT = 256
MAX_ORDER_LINES = 200
BOOK_PREFIX = "/books/"
BOOK_ID_AT = len(BOOK_PREFIX)
_NO_EXTENSIONS: dict[str, Any] = {}

# What a handler answers: (status, JSON content), a whole response (one with headers of its own, as a
# page with a next cursor), or None to leave the request to FastAPI.
Answer = tuple[int, Any] | Response | None
Handler = Callable[[Scope, bytes], Awaitable[Answer]]


class HotPaths:
    """ASGI app in front of the whole FastAPI app (its middleware stack too) that serves its hot paths.

    A hot request is framed here as ApiMiddleware frames the others (the same Framing: body limit,
    region and request-id headers, metrics, access log), and meets none of the layers of FastAPI's
    stack; any other request, or one this layer does not take whole, goes on to `app`, the stack.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        framing: Framing,
        catalog: Catalog,
        cart: Cart,
        checkout: Checkout,
        identity: Identity,
        writes: GroupCommit,
        routes: Iterable[BaseRoute],
    ) -> None:
        self.app = app
        self.framing = framing
        self.catalog = catalog
        self.cart = cart
        self.checkout = checkout
        self.identity = identity
        self.writes = writes
        declared = {
            (method, route.path): route
            for route in routes
            if isinstance(route, APIRoute)
            for method in route.methods or ()
        }
        handlers: dict[tuple[str, str], Handler] = {
            ("GET", "/books/{book_id}"): self._get_book,
            ("GET", "/books"): self._list_books,
            ("GET", "/cart"): self._get_cart,
            ("POST", "/cart"): self._add_to_cart,
            ("POST", "/orders"): self._place_order,
        }
        # The FastAPI route stays the one that names the request (metrics label it by route.path).
        self._routes = {key: (handler, declared[key]) for key, handler in handlers.items()}
        self._book_route = self._routes["GET", "/books/{book_id}"]
        # Each book's JSON beside the catalog's answer it encodes (see _get_book).
        self._book_bodies: dict[str, tuple[dict[str, Any], bytes]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path"]
        if method == "GET" and path.startswith(BOOK_PREFIX):
            # /books/<id> as FastAPI's `/books/{book_id}` matches it: one non-empty segment.
            taken = self._book_route if len(path) > BOOK_ID_AT and "/" not in path[BOOK_ID_AT:] else None
        else:
            taken = self._routes.get((method, path))
        if taken is None:
            await self.app(scope, receive, send)
            return
        handler, route = taken
        # The FastAPI route names the request in the metrics, refused or answered (FastAPI, should it
        # take the request after all, sets its own).
        scope["route"] = route
        framing = self.framing
        start = time.perf_counter()
        length, request_id = framing.head(scope)
        id_header = (request_ids.HEADER, request_id)
        body: bytes | None = b""
        if length <= framing.limit and method == "POST":
            body = await _read_body(receive, framing.limit)
        if length > framing.limit or body is None:
            await framing.refuse(send, id_header)
            framing.record(scope, 413, start, request_id)
            return
        try:
            answer = await handler(scope, body)
        except BookstoreError as exc:
            answer = error_for(exc)
        except Exception:
            # What FastAPI's server-error layer does for the requests it serves.
            log.exception("unexpected error")
            answer = internal_error()
        if answer is None:
            # Left to FastAPI, body and all: ApiMiddleware, in its stack, frames and counts it.
            await self.app(scope, _replay(body, receive) if method == "POST" else receive, send)
            return
        status = 500
        try:
            if isinstance(answer, Response):
                status = answer.status_code
                answer.raw_headers.extend((framing.region_header, id_header))
                await answer(scope, receive, send)
                return
            status, content = answer
            # Bytes are JSON already (a book's, kept encoded); no other content is bytes.
            data = content if type(content) is bytes else orjson.dumps(content)
            headers = [
                (b"content-length", str(len(data)).encode()),
                (b"content-type", b"application/json"),
                framing.region_header,
                id_header,
            ]
            # The server's one-call answer when it offers one (runtime.coalescing.whole_answer).
            whole = scope.get("extensions", _NO_EXTENSIONS).get(WHOLE_ANSWER)
            if whole is None or not whole["write"](send, status, headers, data):
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": data})
        finally:
            framing.record(scope, status, start, request_id)

    # -- handlers: each does what its FastAPI endpoint in api/app.py does --------------------------------

    async def _get_book(self, scope: Scope, _: bytes) -> Answer:
        book_id = scope["path"][BOOK_ID_AT:]
        book = self.catalog.get(book_id)
        # The catalog's answers are shared and never changed: a change to a book replaces its dict. The
        # JSON kept for a book is used while the catalog answers the very dict it was made from.
        kept = self._book_bodies.get(book_id)
        if kept is None or kept[0] is not book:
            if len(self._book_bodies) >= MAX_CACHED:
                self._book_bodies.clear()
            kept = self._book_bodies[book_id] = (book, orjson.dumps(book))
        return 200, kept[1]

    async def _list_books(self, scope: Scope, _: bytes) -> Answer:
        query: bytes = scope["query_string"]
        params: dict[str, str] = {}
        if query:
            # Parsed as Starlette parses it; a parameter given twice, another parameter, or a value FastAPI
            # would refuse (an over-long category or cursor, a limit not plainly 1 to MAX_LIMIT) is
            # FastAPI's, so its refusals keep one source.
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
            params = dict(pairs)
            if len(params) != len(pairs) or not params.keys() <= {"category", "limit", "cursor"}:
                return None
        category = params.get("category")
        limit_text = params.get("limit", str(pages.DEFAULT_LIMIT))
        cursor = params.get("cursor")
        if (
            (category is not None and len(category) > SHORT)
            or (cursor is not None and len(cursor) > pages.MAX_CURSOR)
            or not (limit_text.isascii() and limit_text.isdigit() and limit_text[0] != "0")
            or int(limit_text) > pages.MAX_LIMIT
        ):
            return None
        limit = int(limit_text)
        books, more = self.catalog.page(category, limit, cursor)
        if more is None:
            return 200, books
        return page_answer(books, more, {"category": category, "limit": limit})

    async def _get_cart(self, scope: Scope, _: bytes) -> Answer:
        return 200, self.cart.rows(self._principal(scope).user_id)

    async def _add_to_cart(self, scope: Scope, body: bytes) -> Answer:
        # FastAPI parses the body before it checks the token (a malformed body is a 400 even without one).
        request = _json_body(scope, body)
        if request is NOT_TAKEN:
            return None
        user = self._principal(scope)
        line = _cart_line(request)
        if line is None:
            return None
        cart = self.cart
        row = await self.writes.run(lambda: cart.put(user.user_id, *line))
        return 201, row

    async def _place_order(self, scope: Scope, body: bytes) -> Answer:
        request = _json_body(scope, body)
        if request is NOT_TAKEN:
            return None
        user = self._principal(scope)
        key = _header(scope, b"idempotency-key")
        if key is not None and len(key) > SHORT:
            return None
        books = request.get("books") if type(request) is dict else None
        if type(books) is not list or len(books) > MAX_ORDER_LINES:
            return None
        lines = [_cart_line(b) for b in books]
        if None in lines:
            return None
        order_lines = [OrderLine(*line) for line in lines if line is not None]
        checkout = self.checkout
        order, created = await self.writes.run(lambda: checkout.place(user.user_id, order_lines, key))
        return 201 if created else 200, order

    def _principal(self, scope: Scope) -> Principal:
        return bearer_principal(self.identity, _header(scope, b"authorization"))


def _header(scope: Scope, name: bytes) -> str | None:
    """The first header called `name`, decoded as Starlette decodes headers."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class _NotTaken:
    """A body this layer leaves to FastAPI."""


NOT_TAKEN = _NotTaken()


def _json_body(scope: Scope, body: bytes) -> Any:
    """The parsed body when FastAPI would parse it as JSON the same way, else NOT_TAKEN."""
    content_type = _header(scope, b"content-type")
    if content_type is not None and content_type.partition(";")[0].strip().lower() != "application/json":
        return NOT_TAKEN
    try:
        return orjson.loads(body) if body else NOT_TAKEN
    except orjson.JSONDecodeError:
        return NOT_TAKEN


def _cart_line(value: Any) -> tuple[str, int] | None:
    """(bookId, quantity) of a CartLine body exactly as its model accepts one (strict str and int)."""
    if type(value) is not dict:
        return None
    book_id, quantity = value.get("bookId"), value.get("quantity")
    if type(book_id) is not str or len(book_id) > SHORT or type(quantity) is not int:
        return None
    return book_id, quantity


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request's whole body; None as soon as it passes `limit` bytes."""
    chunks = []
    received = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the body already read, then whatever the client sends next."""
    replayed = False

    async def replaying() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replaying
