"""The API's framing of requests: body-size limit, region and request-id headers, metrics, access log."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bookstore.kernel import request_ids
from bookstore.kernel.http import MAX_BODY_BYTES
from bookstore.kernel.tallies import Latency, counter_family

# The logger of the one line per request (runtime.logs.ACCESS; the API imports no process plumbing).
ACCESS = "bookstore.access"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


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


class Framing:
    """What every API request leaves and every answer carries, shared by ApiMiddleware and the hot paths.

    - The body limit: bodies over `limit` bytes are refused with 413, before the app reads them whole.
    - The serving region named on every response, so clients (and the edge) can see who answered.
    - Requests counted and timed per route template (RequestMetrics).
    - The request's id (X-Request-Id: the edge's or the client's when usable, else a new one) on the
      answer and, when `access_log` is on, in one log line per request.
    """

    def __init__(
        self,
        region_id: str,
        registry: CollectorRegistry,
        limit: int = MAX_BODY_BYTES,
        access_log: bool = False,
    ) -> None:
        self.limit = limit
        self.region_header = (b"x-bookstore-region", region_id.encode())
        self.region_id = region_id
        # Chosen once: without an access log a request pays nothing for it.
        self.access = logging.getLogger(ACCESS) if access_log else None
        self.metrics = RequestMetrics()
        registry.register(self.metrics)

    # The request's Content-Length and id (_head), called straight: no frame of a wrapper per request.
    head = staticmethod(_head)

    def record(self, scope: Scope, status: int, start: float, request_id: bytes) -> None:
        """Count and time the request (and log it, with an access log) under its route template."""
        route = scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        method: str = scope["method"]
        elapsed = time.perf_counter() - start
        self.metrics.observe(method, path, status, elapsed)
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

    async def refuse(self, send: Send, id_header: tuple[bytes, bytes]) -> None:
        """Answer 413: the body is over the limit."""
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


class ApiMiddleware:
    """Frames every HTTP request of the API that the hot paths do not answer (see Framing), in one layer:
    each layer costs a few microseconds a request."""

    def __init__(self, app: ASGIApp, framing: Framing) -> None:
        self.app = app
        self.framing = framing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        framing = self.framing
        start = time.perf_counter()
        status = 500
        length, request_id = _head(scope)
        id_header = (request_ids.HEADER, request_id)
        if length > framing.limit:
            status = 413
            await framing.refuse(send, id_header)
            framing.record(scope, status, start, request_id)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > framing.limit:
                    raise _TooLarge
            return message

        async def framing_send(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), framing.region_header, id_header]
            await send(message)

        try:
            await self.app(scope, limited_receive, framing_send)
        except _TooLarge:
            if not started:
                status = 413
                await framing.refuse(send, id_header)
        finally:
            framing.record(scope, status, start, request_id)


class _TooLarge(Exception):
    pass


class RequestMetrics(Collector):
    """Requests and their latency per route template (not per raw path, which would explode labels).

    Counted in plain dictionaries on the event loop, which also serves /metrics; the families
    (bookstore_http_requests_total, bookstore_http_request_duration_seconds) are made when scraped.
    prometheus_client's labelled Counter and Histogram took a lock and a value object each per request:
    about 14,000 instructions, a tenth of what the API spends on a GET /books/{id}.
    """

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int], int] = {}
        self.latency: dict[tuple[str, str], Latency] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        self.counts[key] = self.counts.get(key, 0) + 1
        timing = self.latency.get((method, route))
        if timing is None:
            timing = self.latency[method, route] = Latency(LATENCY_BUCKETS)
        timing.observe(seconds)

    def collect(self) -> Iterator[Any]:
        yield counter_family(
            "bookstore_http_requests", "HTTP requests", ["method", "route", "status"], self.counts
        )
        latency = HistogramMetricFamily(
            "bookstore_http_request_duration_seconds", "HTTP request latency", labels=["method", "route"]
        )
        for (method, route), timing in self.latency.items():
            latency.add_metric([method, route], timing.buckets(), timing.total)
        yield latency
