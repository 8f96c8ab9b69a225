"""The Bookstore HTTP API of one region: catalog, cart, orders, best sellers, search, identity, /truth."""

from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Annotated, Any, Protocol

from fastapi import FastAPI, Header, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from bookstore.api.auth import bearer_principal
from bookstore.api.client_address import client_address
from bookstore.api.hotpaths import HotPaths
from bookstore.api.middleware import ApiMiddleware, Framing
from bookstore.api.models import (
    BestSeller,
    Book,
    CartRow,
    CodeSent,
    Confirmed,
    Health,
    Jwks,
    Order,
    Removed,
    SignedOut,
    SignedUp,
    Tokens,
    Truth,
)
from bookstore.api.paging import PAGE_HEADERS, page_answer
from bookstore.api.responses import install_error_handlers
from bookstore.blog.service import BlogService
from bookstore.blog.web import create_blog_router
from bookstore.config import Region
from bookstore.domain.books import public_view
from bookstore.domain.errors import Unauthorized
from bookstore.domain.orders import OrderLine
from bookstore.domain.users import Principal
from bookstore.kernel.http import JSON
from bookstore.kernel.openapi import BEARER, error_answers, without_422
from bookstore.ports import Clock
from bookstore.services import pages
from bookstore.services.bestsellers import BestSellers
from bookstore.services.cart import Cart
from bookstore.services.catalog import Catalog
from bookstore.services.checkout import Checkout
from bookstore.services.identity import Identity
from bookstore.services.search import BookSearch
from bookstore.services.streams import StreamConsumer
from bookstore.services.writes import GroupCommit

SHORT = 256
Limit = Annotated[int, Query(ge=1, le=pages.MAX_LIMIT, description="items per page")]
Cursor = Annotated[
    str | None,
    Query(max_length=pages.MAX_CURSOR, description="the X-Next-Cursor of the previous page"),
]


class ApiServices(Protocol):
    """What the API serves from: the services it calls, and the region it answers for.

    The region's composition root (bookstore.region) hands its RegionServices, which has these and more;
    the API asks for no more than it uses, and knows nothing of the process that built them.
    """

    @property
    def region(self) -> Region: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def catalog(self) -> Catalog: ...
    @property
    def cart(self) -> Cart: ...
    @property
    def checkout(self) -> Checkout: ...
    @property
    def bestsellers(self) -> BestSellers: ...
    @property
    def search(self) -> BookSearch: ...
    @property
    def identity(self) -> Identity: ...
    @property
    def writes(self) -> GroupCommit: ...
    @property
    def blog(self) -> BlogService | None: ...
    @property
    def consumers(self) -> Mapping[str, StreamConsumer]: ...


class Body(BaseModel):
    # Unknown fields are ignored (clients of the original send `price`; we never trust it).
    model_config = ConfigDict(extra="ignore")


class Credentials(Body):
    email: StrictStr = Field(max_length=SHORT)
    password: StrictStr = Field(max_length=SHORT)


class Confirmation(Body):
    email: StrictStr = Field(max_length=SHORT)
    code: StrictStr = Field(max_length=32)


class CodeRequest(Body):
    email: StrictStr = Field(max_length=SHORT)


class RefreshRequest(Body):
    refreshToken: StrictStr = Field(max_length=4096)


class CartLine(Body):
    bookId: StrictStr = Field(max_length=SHORT)
    quantity: StrictInt


class OrderRequest(Body):
    books: list[CartLine] = Field(max_length=200)


def create_app(
    services: ApiServices,
    registry: CollectorRegistry | None = None,
    *,
    hot_paths: bool = True,
    secret: str | None = None,
    access_log: bool = False,
) -> "ApiApp":
    """The API app of one region, over its wired services.

    The routes below declare the API (and /openapi.json); with `hot_paths` (the default) the busiest of
    them are answered by api/hotpaths.py in front of FastAPI, with the same behaviour. `secret` (the
    deployment's) lets the region believe the client address the edge vouches for (client_address).
    `access_log` logs one line per request with its id (ApiMiddleware).
    """
    region = services.region
    registry = registry or CollectorRegistry()
    app = ApiApp(
        title=f"Bookstore API ({region.name}, {region.id})",
        version="1",
        docs_url="/docs",
        redoc_url=None,
        # operationId is the handler's name (list_books, add_to_cart): what generated clients call them.
        generate_unique_id_function=lambda route: route.name,
        # No OpenTelemetry here (Prometheus at /metrics is ours): off, FastAPI skips its per-request check.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    _consumer_gauges(services, registry)

    async def principal(
        request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]
    ) -> Principal:
        # BEARER declares the scheme (auto_error off); this check gives our 401 body and its reasons.
        return bearer_principal(services.identity, request.headers.get("authorization"))

    User = Annotated[Principal, Security(principal)]
    signed_in = error_answers(401)
    truth = {"regionId": region.id, "regionName": region.name, "flag": region.flag}

    @app.get("/health", tags=["operations"], response_model=Health)
    async def health() -> Response:
        """Whether the region answers."""
        return JSON({"status": "ok", "regionId": region.id})

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/truth", tags=["catalog"], response_model=Truth)
    async def get_truth() -> Response:
        """The region that answered (the edge routes each client to one)."""
        return JSON(truth)

    @app.get(
        "/books",
        tags=["catalog"],
        response_model=list[Book],
        responses={200: {"headers": PAGE_HEADERS}, **error_answers(400)},
    )
    async def list_books(
        category: Annotated[str | None, Query(max_length=SHORT)] = None,
        limit: Limit = pages.DEFAULT_LIMIT,
        cursor: Cursor = None,
    ) -> Response:
        """The books of the catalog, or of one category, in id order, a page at a time."""
        books, more = services.catalog.page(category, limit, cursor)
        return page_answer(books, more, {"category": category, "limit": limit})

    @app.get("/books/{book_id}", tags=["catalog"], response_model=Book, responses=error_answers(400, 404))
    async def get_book(book_id: str) -> Response:
        """One book."""
        return JSON(services.catalog.get(book_id))

    @app.get("/search", tags=["catalog"], response_model=list[Book], responses=error_answers(400))
    async def search(q: Annotated[str, Query(max_length=SHORT)] = "") -> Response:
        """Books whose title, author or category match the words of `q` (full text)."""
        return JSON([public_view(b) for b in services.search.search(q)])

    @app.get("/bestsellers", tags=["catalog"], response_model=list[BestSeller])
    async def bestsellers() -> Response:
        """The 20 best-selling books, most sold first, counted over every region's orders."""
        return JSON(services.bestsellers.top(20))

    @app.post(
        "/auth/signup",
        tags=["identity"],
        status_code=201,
        response_model=SignedUp,
        responses=error_answers(400, 413),
    )
    async def signup(body: Credentials) -> Response:
        """Opens an unconfirmed account; the same answer whether or not the email has one already."""
        # The same answer whether or not the email has an account (see README, Security model).
        await run_in_threadpool(services.identity.signup, body.email, body.password)
        return JSON(
            {"email": body.email, "confirmed": False, "message": "check the region's log for the code"},
            status_code=201,
        )

    @app.post(
        "/auth/confirm", tags=["identity"], response_model=Confirmed, responses=error_answers(400, 409, 413)
    )
    async def confirm(body: Confirmation) -> Response:
        """Confirms the account with the code from sign-up (in the region's log)."""
        await run_in_threadpool(services.identity.confirm, body.email, body.code)
        return JSON({"email": body.email, "confirmed": True})

    @app.post(
        "/auth/resend-code",
        tags=["identity"],
        status_code=202,
        response_model=CodeSent,
        responses=error_answers(400, 413, 429),
    )
    async def resend_code(body: CodeRequest) -> Response:
        """Sends a new confirmation code to an unconfirmed account (the same answer for any email)."""
        await run_in_threadpool(services.identity.resend_code, body.email)
        message = "if this email has an unconfirmed account, a new code was sent (see the region's log)"
        return JSON({"email": body.email, "message": message}, status_code=202)

    @app.post(
        "/auth/signin",
        tags=["identity"],
        response_model=Tokens,
        responses=error_answers(
            400, 401, 403, 413, 429, why={403: "The account is not confirmed yet (POST /auth/confirm)"}
        ),
    )
    async def signin(body: Credentials, request: Request) -> Response:
        """Tokens for a confirmed account: send the accessToken as 'Authorization: Bearer <accessToken>'."""
        client = client_address(request.scope, secret)
        return JSON(await run_in_threadpool(services.identity.signin, body.email, body.password, client))

    @app.post(
        "/auth/refresh", tags=["identity"], response_model=Tokens, responses=error_answers(400, 401, 413)
    )
    async def refresh(body: RefreshRequest) -> Response:
        """New tokens for a refresh token; each refresh token works once."""
        return JSON(services.identity.refresh(body.refreshToken))

    @app.post("/auth/signout", tags=["identity"], response_model=SignedOut, responses=signed_in)
    async def signout(user: User) -> Response:
        """Ends the session of the bearer token; its refresh token stops working."""
        if user.session_id is None:
            raise Unauthorized("this token names no sign-in session; sign in again")
        services.identity.signout(user.session_id)
        return JSON({"signedOut": True})

    @app.get("/.well-known/jwks.json", tags=["identity"], response_model=Jwks)
    async def jwks() -> Response:
        """The public keys that verify access tokens of every region."""
        return JSON(services.identity.jwks())

    @app.get("/cart", tags=["cart"], response_model=list[CartRow], responses=signed_in)
    async def get_cart(user: User) -> Response:
        """The caller's cart rows."""
        return JSON(services.cart.rows(user.user_id))

    @app.get("/cart/{book_id}", tags=["cart"], response_model=CartRow, responses=error_answers(400, 401, 404))
    async def get_cart_row(book_id: str, user: User) -> Response:
        """The caller's cart row of one book."""
        return JSON(services.cart.row(user.user_id, book_id))

    @app.post(
        "/cart",
        tags=["cart"],
        status_code=201,
        response_model=CartRow,
        responses=error_answers(400, 401, 404, 413),
    )
    async def add_to_cart(body: CartLine, user: User) -> Response:
        """Puts a book in the cart with this quantity, priced from the catalog (a sent price is ignored)."""
        row = await services.writes.run(lambda: services.cart.put(user.user_id, body.bookId, body.quantity))
        return JSON(row, status_code=201)

    @app.put("/cart", tags=["cart"], response_model=CartRow, responses=error_answers(400, 401, 404, 413))
    async def set_cart_quantity(body: CartLine, user: User) -> Response:
        """Changes the quantity of a book already in the cart."""
        return JSON(services.cart.set_quantity(user.user_id, body.bookId, body.quantity))

    @app.delete("/cart", tags=["cart"], response_model=Removed, responses=error_answers(400, 401, 404))
    async def remove_from_cart(
        bookId: Annotated[str, Query(max_length=SHORT, description="the book whose row to remove")],
        user: User,
    ) -> Response:
        """Removes the row of the book named by `bookId` from the cart."""
        # The book is a query parameter: a DELETE's body has no defined meaning, and clients drop it.
        services.cart.remove(user.user_id, bookId)
        return JSON({"removed": bookId})

    @app.delete(
        "/cart/{book_id}", tags=["cart"], response_model=Removed, responses=error_answers(400, 401, 404)
    )
    async def remove_cart_row(book_id: str, user: User) -> Response:
        """Removes the row of one book from the cart."""
        services.cart.remove(user.user_id, book_id)
        return JSON({"removed": book_id})

    @app.get(
        "/orders",
        tags=["orders"],
        response_model=list[Order],
        responses={200: {"headers": PAGE_HEADERS}, **error_answers(400, 401)},
    )
    async def list_orders(user: User, limit: Limit = pages.DEFAULT_LIMIT, cursor: Cursor = None) -> Response:
        """The caller's orders, newest first, a page at a time."""
        orders, more = services.checkout.history_page(user.user_id, limit, cursor)
        return page_answer(orders, more, {"limit": limit})

    @app.post(
        "/orders",
        tags=["orders"],
        status_code=201,
        response_model=Order,
        responses={
            200: {"model": Order, "description": "The order placed before with this Idempotency-Key"},
            **error_answers(
                400,
                401,
                404,
                409,
                413,
                why={409: "This Idempotency-Key was used for a different order"},
            ),
        },
    )
    async def place_order(
        body: OrderRequest,
        user: User,
        idempotency_key: Annotated[str | None, Header(max_length=SHORT)] = None,
    ) -> Response:
        """Places an order priced from the catalog and removes its books from the cart.

        With an Idempotency-Key, a retry answers 200 with the order placed first.
        """
        lines = [OrderLine(b.bookId, b.quantity) for b in body.books]
        order, created = await services.writes.run(
            lambda: services.checkout.place(user.user_id, lines, idempotency_key)
        )
        return JSON(order, status_code=201 if created else 200)

    if services.blog is not None:
        app.include_router(create_blog_router(services.blog, services.identity))

    framing = Framing(region.id, registry, access_log=access_log)
    app.add_middleware(ApiMiddleware, framing=framing)
    if hot_paths:
        app.front = HotPaths(
            app.stack,
            framing=framing,
            catalog=services.catalog,
            cart=services.cart,
            checkout=services.checkout,
            identity=services.identity,
            writes=services.writes,
            routes=app.routes,
        )
    _describe(app)
    return app


class ApiApp(FastAPI):
    """FastAPI with an app in `front` of its whole stack (the hot paths), which hands it the rest.

    As a middleware of Starlette's stack the hot paths ran behind FastAPI's and Starlette's calls, the
    server-error and telemetry layers and ApiMiddleware's wrappers of receive and send: hops on the way
    in and out of every hot request.
    """

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.front is None:
            await super().__call__(scope, receive, send)
        else:
            await self.front(scope, receive, send)

    async def stack(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI's own handling: its middleware stack (ApiMiddleware in it), then its routes."""
        await super().__call__(scope, receive, send)

    def guarded(self, layer: Callable[[ASGIApp], ASGIApp]) -> ASGIApp:
        """This app to serve with `layer` around FastAPI's stack, behind the hot paths.

        For a layer that acts on none of the requests the hot paths take (/books, /cart, /orders) and
        hands every other one on unchanged, as peer authentication of /replication/ does. The hot paths
        are returned, this app's whole behaviour (they hand on to the stack whatever they do not take,
        lifespan included): a hot request then meets neither `layer` nor this app's own call. Without
        hot paths, `layer` goes around this app.
        """
        if not isinstance(self.front, HotPaths):
            return layer(self)
        self.front.app = layer(self.front.app)
        return self.front


def _describe(app: FastAPI) -> None:
    """/openapi.json as the API answers: FastAPI's document without the 422 it never sends (400 instead)."""

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        return without_422(generate())  # generate() caches the document; taking 422 out again is a no-op

    app.openapi = openapi  # type: ignore[method-assign]


def _consumer_gauges(services: ApiServices, registry: CollectorRegistry) -> None:
    lag = Gauge(
        "bookstore_stream_consumer_lag_seconds",
        "Age of the newest change a stream consumer has not yet handled (0 when caught up)",
        ["consumer"],
        registry=registry,
    )
    for name, consumer in services.consumers.items():
        lag.labels(name).set_function(partial(_lag, consumer, services.clock))
    registry.register(_ConsumerRebuilds(services.consumers))
    registry.register(_GroupCommits(services.writes))


def _lag(consumer: StreamConsumer, clock: Clock) -> float:
    return consumer.lag_seconds(clock.now_ms())


class _GroupCommits(Collector):
    """Units per commit of the cart and checkout writes: how much group commit shares under load.

    Counters (they only go up), read from GroupCommit when scraped: the writes pay nothing for them.
    """

    def __init__(self, writes: GroupCommit) -> None:
        self.writes = writes

    def collect(self) -> Iterator[Any]:
        groups = CounterMetricFamily(
            "bookstore_group_commit_transactions", "Transactions committed for groups of writes"
        )
        groups.add_metric([], self.writes.groups)
        yield groups
        units = CounterMetricFamily(
            "bookstore_group_commit_units", "Units of writes (requests) those transactions held"
        )
        units.add_metric([], self.writes.units)
        yield units


class _ConsumerRebuilds(Collector):
    """How often each stream consumer rebuilt its state from a scan: an operator sees that it happened."""

    def __init__(self, consumers: Mapping[str, StreamConsumer]) -> None:
        self.consumers = consumers

    def collect(self) -> Iterator[Any]:
        rebuilds = CounterMetricFamily(
            "bookstore_stream_consumer_rebuilds",
            "Rebuilds of a stream consumer's state from a scan of its table (no cursor, trimmed stream, "
            "emptied store)",
            labels=["consumer"],
        )
        for name, consumer in self.consumers.items():
            rebuilds.add_metric([name], consumer.rebuilds)
        yield rebuilds
