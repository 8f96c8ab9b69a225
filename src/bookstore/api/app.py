"""The Bookstore HTTP API of one region: catalog, cart, orders, best sellers, search, identity, /truth."""

from collections.abc import Iterator, Mapping
from functools import partial
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from bookstore.api.auth import bearer_principal
from bookstore.api.client_address import client_address
from bookstore.api.hotpaths import HotPaths
from bookstore.api.middleware import ApiMiddleware
from bookstore.api.responses import JSON, install_error_handlers
from bookstore.blog.web import create_blog_router
from bookstore.bootstrap import RegionServices
from bookstore.domain.books import public_view
from bookstore.domain.errors import Unauthorized
from bookstore.domain.orders import OrderLine
from bookstore.domain.users import Principal
from bookstore.ports import Clock
from bookstore.services.streams import StreamConsumer

SHORT = 256


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


class CartKey(Body):
    bookId: StrictStr = Field(max_length=SHORT)


class OrderRequest(Body):
    books: list[CartLine] = Field(max_length=200)


def create_app(
    services: RegionServices,
    registry: CollectorRegistry | None = None,
    *,
    hot_paths: bool = True,
    secret: str | None = None,
) -> FastAPI:
    """The API app of one region, over its wired services.

    The routes below declare the API (and /openapi.json); with `hot_paths` (the default) the busiest of
    them are answered by api/hotpaths.py in front of FastAPI, with the same behaviour. `secret` (the
    deployment's) lets the region believe the client address the edge vouches for (client_address).
    """
    region = services.region
    registry = registry or CollectorRegistry()
    app = FastAPI(
        title=f"Bookstore API ({region.name}, {region.id})",
        version="1",
        docs_url="/docs",
        redoc_url=None,
        # No OpenTelemetry here (Prometheus at /metrics is ours): off, FastAPI skips its per-request check.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    _consumer_gauges(services, registry)

    async def principal(authorization: Annotated[str | None, Header()] = None) -> Principal:
        return bearer_principal(services.identity, authorization)

    User = Annotated[Principal, Depends(principal)]
    truth = {"regionId": region.id, "regionName": region.name, "flag": region.flag}

    @app.get("/health", tags=["operations"])
    async def health() -> Response:
        return JSON({"status": "ok", "regionId": region.id})

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/truth", tags=["catalog"])
    async def get_truth() -> Response:
        return JSON(truth)

    @app.get("/books", tags=["catalog"])
    async def list_books(category: Annotated[str | None, Query(max_length=SHORT)] = None) -> Response:
        return JSON(services.catalog.list(category))

    @app.get("/books/{book_id}", tags=["catalog"])
    async def get_book(book_id: str) -> Response:
        return JSON(services.catalog.get(book_id))

    @app.get("/search", tags=["catalog"])
    async def search(q: Annotated[str, Query(max_length=SHORT)] = "") -> Response:
        return JSON([public_view(b) for b in services.search.search(q)])

    @app.get("/bestsellers", tags=["catalog"])
    async def bestsellers() -> Response:
        return JSON(services.bestsellers.top(20))

    @app.post("/auth/signup", tags=["identity"], status_code=201)
    async def signup(body: Credentials) -> Response:
        # The same answer whether or not the email has an account (see README, Security model).
        await run_in_threadpool(services.identity.signup, body.email, body.password)
        return JSON(
            {"email": body.email, "confirmed": False, "message": "check the region's log for the code"},
            status_code=201,
        )

    @app.post("/auth/confirm", tags=["identity"])
    async def confirm(body: Confirmation) -> Response:
        await run_in_threadpool(services.identity.confirm, body.email, body.code)
        return JSON({"email": body.email, "confirmed": True})

    @app.post("/auth/resend-code", tags=["identity"], status_code=202)
    async def resend_code(body: CodeRequest) -> Response:
        await run_in_threadpool(services.identity.resend_code, body.email)
        message = "if this email has an unconfirmed account, a new code was sent (see the region's log)"
        return JSON({"email": body.email, "message": message}, status_code=202)

    @app.post("/auth/signin", tags=["identity"])
    async def signin(body: Credentials, request: Request) -> Response:
        client = client_address(request.scope, secret)
        return JSON(await run_in_threadpool(services.identity.signin, body.email, body.password, client))

    @app.post("/auth/refresh", tags=["identity"])
    async def refresh(body: RefreshRequest) -> Response:
        return JSON(services.identity.refresh(body.refreshToken))

    @app.post("/auth/signout", tags=["identity"])
    async def signout(user: User) -> Response:
        if user.session_id is None:
            raise Unauthorized("this token names no sign-in session; sign in again")
        services.identity.signout(user.session_id)
        return JSON({"signedOut": True})

    @app.get("/.well-known/jwks.json", tags=["identity"])
    async def jwks() -> Response:
        return JSON(services.identity.jwks())

    @app.get("/cart", tags=["cart"])
    async def get_cart(user: User) -> Response:
        return JSON(services.cart.rows(user.user_id))

    @app.get("/cart/{book_id}", tags=["cart"])
    async def get_cart_row(book_id: str, user: User) -> Response:
        return JSON(services.cart.row(user.user_id, book_id))

    @app.post("/cart", tags=["cart"], status_code=201)
    async def add_to_cart(body: CartLine, user: User) -> Response:
        row = await services.writes.run(lambda: services.cart.put(user.user_id, body.bookId, body.quantity))
        return JSON(row, status_code=201)

    @app.put("/cart", tags=["cart"])
    async def set_cart_quantity(body: CartLine, user: User) -> Response:
        return JSON(services.cart.set_quantity(user.user_id, body.bookId, body.quantity))

    @app.delete("/cart", tags=["cart"])
    async def remove_from_cart(body: CartKey, user: User) -> Response:
        services.cart.remove(user.user_id, body.bookId)
        return JSON({"removed": body.bookId})

    @app.delete("/cart/{book_id}", tags=["cart"])
    async def remove_cart_row(book_id: str, user: User) -> Response:
        services.cart.remove(user.user_id, book_id)
        return JSON({"removed": book_id})

    @app.get("/orders", tags=["orders"])
    async def list_orders(user: User) -> Response:
        return JSON(services.checkout.history(user.user_id))

    @app.post("/orders", tags=["orders"], status_code=201)
    async def place_order(
        body: OrderRequest,
        user: User,
        idempotency_key: Annotated[str | None, Header(max_length=SHORT)] = None,
    ) -> Response:
        lines = [OrderLine(b.bookId, b.quantity) for b in body.books]
        order, created = await services.writes.run(
            lambda: services.checkout.place(user.user_id, lines, idempotency_key)
        )
        return JSON(order, status_code=201 if created else 200)

    if services.blog is not None:
        app.include_router(create_blog_router(services.blog, services.identity))

    if hot_paths:
        app.add_middleware(HotPaths, services=services, routes=app.routes)
    app.add_middleware(ApiMiddleware, region_id=region.id, registry=registry)
    return app


def _consumer_gauges(services: RegionServices, registry: CollectorRegistry) -> None:
    lag = Gauge(
        "bookstore_stream_consumer_lag_seconds",
        "Age of the newest change a stream consumer has not yet handled (0 when caught up)",
        ["consumer"],
        registry=registry,
    )
    for name, consumer in services.consumers.items():
        lag.labels(name).set_function(partial(_lag, consumer, services.clock))
    registry.register(_ConsumerRebuilds(services.consumers))
    # Units per commit of the cart and checkout writes: how much group commit shares under load.
    writes = services.writes
    Gauge(
        "bookstore_group_commit_transactions",
        "Transactions committed for groups of writes",
        registry=registry,
    ).set_function(lambda: writes.groups)
    Gauge(
        "bookstore_group_commit_units",
        "Units of writes (requests) those transactions held",
        registry=registry,
    ).set_function(lambda: writes.units)


def _lag(consumer: StreamConsumer, clock: Clock) -> float:
    return consumer.lag_seconds(clock.now_ms())


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
