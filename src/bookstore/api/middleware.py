"""The API's one ASGI middleware: a body-size limit, the serving region header and Prometheus metrics."""

from __future__ import annotations

import time

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 1 << 20
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class ApiMiddleware:
    """Around every HTTP request of the API, in one layer (each layer costs a few microseconds a request).

    - Refuses bodies over `limit` bytes with 413, before the app reads them whole.
    - Names the serving region on every response, so clients (and the edge) can see who answered.
    - Counts and times requests per route template (not per raw path, which would explode labels).
    """

    def __init__(
        self, app: ASGIApp, region_id: str, registry: CollectorRegistry, limit: int = MAX_BODY_BYTES
    ) -> None:
        self.app = app
        self.limit = limit
        self.region_header = (b"x-bookstore-region", region_id.encode())
        self.requests = Counter(
            "bookstore_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry
        )
        self.latency = Histogram(
            "bookstore_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )
        # Label children by their labels: .labels() per request costs more than the count itself.
        self._counts: dict[tuple[str, str, int], Counter] = {}
        self._timings: dict[tuple[str, str], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        if _declared_length(scope) > self.limit:
            status = 413
            await self._refuse(send)
            self._record(scope, status, start)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        async def framing_send(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), self.region_header]
            await send(message)

        try:
            await self.app(scope, limited_receive, framing_send)
        except _TooLarge:
            if not started:
                status = 413
                await self._refuse(send)
        finally:
            self._record(scope, status, start)

    def _record(self, scope: Scope, status: int, start: float) -> None:
        route = scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        method: str = scope["method"]
        count = self._counts.get((method, path, status))
        if count is None:
            count = self._counts[method, path, status] = self.requests.labels(method, path, str(status))
        timing = self._timings.get((method, path))
        if timing is None:
            timing = self._timings[method, path] = self.latency.labels(method, path)
        count.inc()
        timing.observe(time.perf_counter() - start)

    async def _refuse(self, send: Send) -> None:
        body = orjson.dumps(
            {"error": "PayloadTooLarge", "message": f"the body exceeds {self.limit} bytes; send less"}
        )
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            self.region_header,
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _declared_length(scope: Scope) -> int:
    """The Content-Length (0 when absent); one that is not a number counts as too large, so it is refused."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else 1 << 62
    return 0


class _TooLarge(Exception):
    pass
