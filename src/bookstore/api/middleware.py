"""The API's one ASGI middleware: body-size limit, region and request-id headers, metrics, access log."""

from __future__ import annotations

import logging
import time

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bookstore.kernel import request_ids

MAX_BODY_BYTES = 1 << 20
# The logger of the one line per request (runtime.logs.ACCESS; the API imports no process plumbing).
ACCESS = "bookstore.access"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class ApiMiddleware:
    """Around every HTTP request of the API, in one layer (each layer costs a few microseconds a request).

    - Refuses bodies over `limit` bytes with 413, before the app reads them whole.
    - Names the serving region on every response, so clients (and the edge) can see who answered.
    - Counts and times requests per route template (not per raw path, which would explode labels).
    - Answers with the request's id (X-Request-Id: the edge's or the client's when usable, else a new
      one) and, when `access_log` is on, logs one line per request with it.
    """

    def __init__(
        self,
        app: ASGIApp,
        region_id: str,
        registry: CollectorRegistry,
        limit: int = MAX_BODY_BYTES,
        access_log: bool = False,
    ) -> None:
        self.app = app
        self.limit = limit
        self.region_header = (b"x-bookstore-region", region_id.encode())
        self.region_id = region_id
        # Chosen once: without an access log a request pays nothing for it.
        self.access = logging.getLogger(ACCESS) if access_log else None
        self.requests = Counter(
            "bookstore_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry
        )
        self.latency = Histogram(
            "bookstore_http_request_duration_seconds",
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
        length, request_id = _head(scope)
        id_header = (request_ids.HEADER, request_id)
        if length > self.limit:
            status = 413
            await self._refuse(send, id_header)
            self._record(scope, status, start, request_id)
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
                message["headers"] = [*message.get("headers", ()), self.region_header, id_header]
            await send(message)

        try:
            await self.app(scope, limited_receive, framing_send)
        except _TooLarge:
            if not started:
                status = 413
                await self._refuse(send, id_header)
        finally:
            self._record(scope, status, start, request_id)

    def _record(self, scope: Scope, status: int, start: float, request_id: bytes) -> None:
        route = scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        method: str = scope["method"]
        count = self._counts.get((method, path, status))
        if count is None:
            count = self._counts[method, path, status] = self.requests.labels(method, path, str(status))
        timing = self._timings.get((method, path))
        if timing is None:
            timing = self._timings[method, path] = self.latency.labels(method, path)
        elapsed = time.perf_counter() - start
        count.inc()
        timing.observe(elapsed)
        if self.access is not None:
            rid = request_id.decode()
            self.access.info(
                "event=request request_id=%s method=%s route=%s status=%d ms=%.2f",
                rid,
                method,
                path,
                status,
                elapsed * 1000,
                extra={
                    "region": self.region_id,
                    "request_id": rid,
                    "method": method,
                    "route": path,
                    "status": status,
                    "ms": round(elapsed * 1000, 2),
                },
            )

    async def _refuse(self, send: Send, id_header: tuple[bytes, bytes]) -> None:
        body = orjson.dumps(
            {"error": "PayloadTooLarge", "message": f"the body exceeds {self.limit} bytes; send less"}
        )
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            self.region_header,
            id_header,
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _head(scope: Scope) -> tuple[int, bytes]:
    """The Content-Length (0 when absent; one that is not a number counts as too large, so it is
    refused) and the request's id, found in one pass over the headers."""
    length = 0
    given = None
    for name, value in scope["headers"]:
        if name == b"content-length":
            length = int(value) if value.isdigit() else 1 << 62
        elif name == b"x-request-id":
            given = value
    return length, request_ids.accepted(given)


class _TooLarge(Exception):
    pass
