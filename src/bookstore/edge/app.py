"""The edge's HTTP surface: /api/... and /blog/... to the regions, static content, /edge/... for operators.

One address for the whole system, like CloudFront in front of API Gateway and an S3 website:
- /api/<path> goes to <path> of a region's API, chosen by the latency record for the client's
  location (X-Client-Region header, else the `client_region` cookie, else the edge's default);
- /blog and /blog/<path> go to the same path of a region, chosen by the blog's failover record;
- everything else is static content from the origin group over the regions' buckets (cdn.py);
- /edge/... is the edge's own: status, metrics, overview, the operator page and control actions
  (all but the page itself behind the operator token: operations.py).

Through /api/ the edge serves only what shoppers need of a region's API (SHOPPER_API: the catalog,
sign-in, cart and orders); operations (/status with its digests, /metrics, /docs, /openapi.json,
/health) and the regions' internal endpoints are served only on the regions' own addresses.

An idempotent request (GET, HEAD, OPTIONS, or any with an Idempotency-Key header) that meets a
failure is retried once on the record's next region (proxy.py, which forwards /api/ and /blog/; the
edge's listener calls it without this app unless tracing is on: edge/listener.py). Every answer names
its origin in X-Edge-Origin, and one that was retried says from where and why in X-Edge-Failover.

The edge checks what it forwards (requests.py: its own host names, bounded URLs, headers and bodies,
clean paths, no hop-by-hop or inter-region signing headers). It builds every upstream address from
the topology, never from the request, so it cannot be steered elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from bookstore.config import Topology
from bookstore.edge import cdn
from bookstore.edge.cdn import Bucket, Signer
from bookstore.edge.dns import start_dns
from bookstore.edge.health import KINDS, HealthChecker, Kind, Probe, Target, judge
from bookstore.edge.metrics import EdgeCollector, EdgeCounters
from bookstore.edge.proxy import ALLOW_STATIC, ORIGIN_HEADER, Proxy, log_access
from bookstore.edge.replies import VIA, Reply, error_body, head_response, respond, respond_error, send_reply
from bookstore.edge.requests import EdgeRequest, Refusal, inspect, read_body, refuse, shopper_api
from bookstore.edge.routing import Routing
from bookstore.edge.upstream import Origin, UpstreamError
from bookstore.kernel import request_ids
from bookstore.objectstore.namespace import site_bucket
from bookstore.runtime.logs import ACCESS
from bookstore.runtime.operator import OperatorAccess
from bookstore.runtime.secret import Credentials
from bookstore.runtime.tracing import Tracing

log = logging.getLogger("bookstore.edge")


class EdgeApp:
    """The edge as an ASGI app (its lifespan starts the health checks and the DNS server)."""

    def __init__(
        self,
        topology: Topology,
        *,
        dns: bool = True,
        credentials: Credentials | None = None,
        traces: Tracing | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """`credentials`: the deployment's (S3 key pair, operator token); None: ones nobody else holds.

        `tls`: the regions' listeners speak TLS and their certificates are verified with this context
        (runtime.tls.client_context); None: plain HTTP to the regions.

        `traces`: a span per request, passed on to the region as its traceparent; None: nothing installed.
        """
        from bookstore.objectstore.setup import site_keys

        edge = topology.edge
        credentials = credentials or Credentials.generate()
        self.topology = topology
        self.settings = edge
        self.health = edge.health_check
        self.regions = [r.id for r in topology.regions]
        origin = partial(Origin, connect_timeout_s=edge.connect_timeout_s, tls=tls)
        self.api_origins = {r.id: origin(r.address, r.api_port) for r in topology.regions}
        self.buckets = {
            r.id: Bucket(r.id, site_bucket(r.id), origin(r.address, r.s3_port)) for r in topology.regions
        }
        # Health checks open a connection each, as Route 53's checkers do.
        self.probe_api = {r.id: origin(r.address, r.api_port, keep_alive=False) for r in topology.regions}
        self.probe_s3 = {
            r.id: Bucket(r.id, site_bucket(r.id), origin(r.address, r.s3_port, keep_alive=False))
            for r in topology.regions
        }
        access = topology.s3 or credentials.s3
        self.signer = Signer(access.access_key_id, access.secret_access_key)
        # Operator endpoints take the operator token or a session; control actions pass the token on.
        self.operator_token = credentials.operator_token
        # Regions believe the client address the edge passes only with this secret's HMAC (client_address).
        self.secret = credentials.secret
        self.access = OperatorAccess(credentials.operator_token)
        # Only these objects are served as active content (pages, scripts); any other is inert (cdn.guarded).
        self.storefront_keys = site_keys()
        targets = [Target(kind, r) for r in self.regions for kind in KINDS]
        self.routing = Routing(topology, {t.id: t for t in targets})
        self.checker = HealthChecker(
            targets,
            {"api": self._probe_api, "blog": self._probe_blog, "s3": self._probe_s3},
            self.health,
            on_change=self.routing.refresh,
            breaker=edge.breaker,
        )
        self.counters = EdgeCounters()
        # Chosen once: without an access log a request pays nothing for it.
        self.access_log = logging.getLogger(ACCESS) if topology.observability.access_log else None
        self.collector = EdgeCollector(self.counters, self.checker, self.routing)
        self.proxy = Proxy(
            edge, self.api_origins, self.routing, self.checker, self.counters, self.secret, self.access_log
        )
        self.allowed_hosts = self._hosts()
        self.dns_enabled = dns
        self.dns_state: dict[str, Any] = {"listening": False, "error": None}
        self.started_ms: int | None = None
        self.ready = False
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._dns_transport: asyncio.DatagramTransport | None = None
        # The HTTP handler, traced or not: chosen once, so an untraced request pays nothing for tracing.
        self._serve_http: ASGIApp = (
            self._http if traces is None else traces.middleware(self._http, propagate=True)
        )
        # Whether the listener may forward /api/ and /blog/ itself (edge/listener.py): not when traced,
        # as the span of a request is this app's middleware's.
        self.direct_proxy = traces is None
        # /edge/...: operations (status, metrics, overview, control, the operator page); set by server.py.
        self.operations: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None

    # lifecycle --------------------------------------------------------------------------------------

    def _hosts(self) -> frozenset[bytes]:
        edge = self.settings
        zone = edge.zone.lower().rstrip(".")
        names = {
            edge.address,
            "localhost",
            zone,
            f"www.{zone}",
            f"api.{zone}",
            f"blog.{zone}",
            f"edge.{zone}",
        }
        allowed = set()
        for name in names:
            allowed.add(name.encode())
            allowed.add(f"{name}:{edge.port}".encode())
        return frozenset(allowed)

    async def start(self) -> None:
        """Probe every target once (so the first answers are informed), then keep checking; start DNS."""
        self.started_ms = int(time.time() * 1000)
        try:
            await asyncio.wait_for(self.checker.check_all(), self.health.timeout_s + 1.0)
        except TimeoutError:
            log.warning("event=first_checks_slow the first health checks took longer than their timeout")
        # The answers before the first checks were guesses: changing them is no failover.
        self.routing.baseline()
        self._tasks.append(asyncio.create_task(self.checker.run(self._stop), name="health"))
        if self.dns_enabled:
            await self._start_dns()
        self.ready = True
        log.info("event=edge_ready url=%s answers=%s", self.settings.url, self.routing.answers)

    async def _start_dns(self) -> None:
        edge = self.settings
        zone = edge.zone.lower().rstrip(".")
        names = frozenset({zone, f"www.{zone}", f"api.{zone}", f"blog.{zone}", f"edge.{zone}"})
        try:
            self._dns_transport = await start_dns(
                edge.bind_address or edge.dns_address,
                edge.dns_port,
                zone,
                edge.dns_ttl_s,
                self.resolve,
                names,
                lambda name, rcode: self.counters.dns.update([(name, rcode)]),
            )
            self.dns_state = {
                "listening": True,
                "address": f"{edge.dns_address}:{edge.dns_port}",
                "error": None,
            }
        except OSError as exc:
            log.error("event=dns_unavailable address=%s:%d error=%s", edge.dns_address, edge.dns_port, exc)
            self.dns_state = {
                "listening": False,
                "address": f"{edge.dns_address}:{edge.dns_port}",
                "error": str(exc),
            }

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._dns_transport is not None:
            self._dns_transport.close()
        for origin in (*self.api_origins.values(), *(b.origin for b in self.buckets.values())):
            origin.close()

    def resolve(self, name: str, source: str) -> str | None:
        """The address a DNS name resolves to now, for a client at `source` (dns.py)."""
        zone = self.settings.zone.lower().rstrip(".")
        if name == f"edge.{zone}":
            return self.settings.address
        if name == f"api.{zone}":
            client = self.routing.region_of_address(source) or self.routing.default_client
            order = self.routing.api_order(client)
        elif name == f"blog.{zone}":
            order = self.routing.blog_order()
        else:
            order = self.routing.static_order()
        return self.topology.region(order[0]).address if order else None

    # probes -----------------------------------------------------------------------------------------

    async def _probe_api(self, target: Target) -> Probe:
        started = time.perf_counter()
        try:
            answer = await self.probe_api[target.region].request(
                "GET",
                self.health.path.encode(),
                [(b"user-agent", b"bookstore-edge-health")],
                timeout_s=self.health.timeout_s,
            )
        except UpstreamError as exc:
            return Probe(False, None, str(exc), (time.perf_counter() - started) * 1000)
        return judge(answer.status, answer.body, self.health, (time.perf_counter() - started) * 1000)

    async def _probe_blog(self, target: Target) -> Probe:
        started = time.perf_counter()
        try:
            answer = await self.probe_api[target.region].request(
                "GET",
                b"/status",
                [(b"user-agent", b"bookstore-edge-health")],
                timeout_s=self.health.timeout_s,
            )
        except UpstreamError as exc:
            return Probe(False, None, str(exc), (time.perf_counter() - started) * 1000)
        latency = (time.perf_counter() - started) * 1000
        if answer.status != 200:
            return Probe(False, answer.status, f"/status answered {answer.status}", latency)
        try:
            blog = orjson.loads(answer.body).get("blog")
        except (orjson.JSONDecodeError, AttributeError):
            return Probe(False, answer.status, "/status answered something not JSON", latency)
        if not isinstance(blog, dict):
            return Probe(False, answer.status, "the region serves no blog", latency)
        info = {k: blog.get(k) for k in ("role", "epoch", "primaryRegion")}
        return Probe(True, 200, f"blog {info['role']} at epoch {info['epoch']}", latency, info)

    async def _probe_s3(self, target: Target) -> Probe:
        started = time.perf_counter()
        try:
            answer = await self.probe_s3[target.region].fetch(
                self.signer, "HEAD", "", [], self.health.timeout_s
            )
        except UpstreamError as exc:
            return Probe(False, None, str(exc), (time.perf_counter() - started) * 1000)
        latency = (time.perf_counter() - started) * 1000
        if answer.status == 200:
            return Probe(True, 200, "bucket answered 200", latency)
        return Probe(False, answer.status, f"bucket answered {answer.status}", latency)

    # ASGI -------------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._serve_http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    log.exception("edge failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        path: str = scope["path"]
        try:
            request = inspect(scope, self.allowed_hosts, self.settings.url)
            if path.startswith("/api/") or path == "/api":
                if not shopper_api(path):
                    raise refuse(
                        404,
                        "NotFound",
                        "the edge serves the shop's API only; operations are on each region's own address",
                        "internal",
                    )
                await self._proxy(scope, receive, send, request, "api", started)
            elif path.startswith("/blog/") or path == "/blog":
                await self._proxy(scope, receive, send, request, "blog", started)
            elif path.startswith("/edge/") or path == "/edge":
                if self.operations is None:
                    raise refuse(404, "NotFound", "no operations here", "path")
                await self.operations(scope, receive, send)
            else:
                await self._static(scope, send, request, started)
        except Refusal as exc:
            await send_reply(send, self.proxy.refused(exc, path))
        except Exception:
            # A fault of the edge itself: logged, and answered as JSON like every error.
            rid = request_ids.new()
            log.exception("event=edge_error path=%s request_id=%s", path[:200], rid.decode())
            await respond_error(
                send,
                500,
                "InternalError",
                "the edge failed on this request; try again",
                [(request_ids.HEADER, rid)],
            )

    # API and blog -----------------------------------------------------------------------------------

    async def _proxy(
        self, scope: Scope, receive: Receive, send: Send, request: EdgeRequest, record: Kind, started: float
    ) -> None:
        """What the listener does itself for an untraced request (listener.py), in ASGI terms."""
        raw: bytes = scope.get("raw_path") or scope["path"].encode()
        way = self.proxy.prepare(
            scope["method"], scope["path"], raw, scope.get("query_string", b""), request, record, started
        )
        if isinstance(way, Reply):
            await send_reply(send, way)
            return
        body = await read_body(receive, request)
        client = scope.get("client")
        answered: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()

        def done(reply: Reply) -> None:
            if not answered.done():  # cancelled, when the server is stopping
                answered.set_result(reply)

        self.proxy.forward(way, body, client[0] if client else "unknown", done)
        await send_reply(send, await answered)

    # static -----------------------------------------------------------------------------------------

    async def _static(self, scope: Scope, send: Send, request: EdgeRequest, started: float) -> None:
        method: str = scope["method"]
        if method not in cdn.FAILOVER_METHODS:
            raise refuse(
                405, "MethodNotAllowed", f"static content takes GET, HEAD or OPTIONS, not {method}", "method"
            )
        try:
            key = cdn.object_key(scope["path"])
        except cdn.BadPath as exc:
            raise refuse(400, "BadRequest", str(exc), "path") from None
        if method == "OPTIONS":
            # The buckets answer no OPTIONS (no CORS configuration): the edge says what it allows.
            await respond(
                send, 204, [(b"allow", ALLOW_STATIC), VIA, (request_ids.HEADER, request.request_id)], b""
            )
            return
        extra = [(k, v) for k, v in request.forward if k in cdn.FORWARDED_HEADERS]
        order = self.routing.static_order()
        if not order:
            self.counters.failed[("static", "no healthy origin")] += 1
            await respond_error(
                send, 503, "Unavailable", "no origin serves static content now; try again shortly"
            )
            return
        origins = [self.buckets[r] for r in order]
        timeout = self.settings.origin_timeout_s
        fetched = await cdn.fetch_from_group(
            origins, self.signer, method, key, extra, timeout, self._origin_failed
        )
        answer = fetched.answer
        if (answer is None or answer.status >= 400) and fetched.missing and cdn.spa_fallback(key):
            page = await cdn.fetch_from_group(
                origins, self.signer, method, cdn.INDEX_DOCUMENT, [], timeout, self._origin_failed
            )
            if page.answer is not None and page.answer.status == 200:
                fetched, answer, key = page, page.answer, cdn.INDEX_DOCUMENT
        if answer is None or fetched.region is None:
            timed_out = fetched.timed_out
            self.counters.failed[("static", "no answer")] += 1
            self.counters.served("static", None, 504 if timed_out else 502, time.perf_counter() - started)
            if self.access_log is not None:
                log_access(
                    self.access_log, request, method, scope["path"], 504 if timed_out else 502, "", started
                )
            await respond_error(
                send,
                504 if timed_out else 502,
                "GatewayTimeout" if timed_out else "BadGateway",
                f"no origin answered for /{key}: {fetched.error}",
                [(request_ids.HEADER, request.request_id)],
            )
            return
        if fetched.region != order[0] and answer.status < 400:
            self.counters.failovers[("static", order[0], fetched.region)] += 1
        tags = [(ORIGIN_HEADER, fetched.region.encode()), VIA, (request_ids.HEADER, request.request_id)]
        if fetched.failed:
            tags.append((b"x-edge-failover", "; ".join(f"{r}: {why}" for r, why in fetched.failed).encode()))
        self.counters.served("static", fetched.region, answer.status, time.perf_counter() - started)
        if self.access_log is not None:
            log_access(
                self.access_log, request, method, scope["path"], answer.status, fetched.region, started
            )
        if answer.status >= 400:
            code = {403: "Forbidden", 404: "NotFound"}.get(answer.status, "BadGateway")
            message = f"no file at /{key}" if answer.status == 404 else f"the origin answered {answer.status}"
            headers = [(b"content-type", b"application/json"), *tags]
            await respond(send, answer.status, headers, error_body(code, message), head=method == "HEAD")
            return
        headers = [(k, v) for k, v in answer.headers if k in cdn.PASSED_HEADERS and k != b"content-length"]
        headers = cdn.guarded(headers, own=key in self.storefront_keys)
        if method == "HEAD":
            await head_response(send, answer, [*headers, *tags])
            return
        await respond(send, answer.status, [*headers, *tags], answer.body)

    def _origin_failed(self, region: str, reason: str) -> None:
        self.checker.report_failure(self.checker.target("s3", region), reason)
