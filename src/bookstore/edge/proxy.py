"""/api/... and /blog/... forwarded to the regions: the record's order, one retry, the breaker, the counts.

One implementation for both ways a request reaches it: the edge's listener calls it straight from its
protocol for a proxied path (edge/listener.py, no ASGI), the ASGI app (edge/app.py) when tracing is on.
It runs on callbacks (`Origin.send`), so a request costs no task and no future; `forward` calls back
once with the whole `Reply`, which the caller writes.

An idempotent request (GET, HEAD, OPTIONS, or any with an Idempotency-Key header) that meets a
connection failure, a timeout, a 5xx, or the 403 of an API whose mapping is gone (a 403 that no
Bookstore app answered: it lacks X-Bookstore-Region) is retried once on the record's next region, and
the failed target's breaker opens. Other requests are sent once, whatever happens.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial

from bookstore.api.client_address import HEADER as CLIENT_HEADER
from bookstore.api.client_address import vouch
from bookstore.config import Edge
from bookstore.edge.health import HealthChecker, Kind
from bookstore.edge.metrics import EdgeCounters
from bookstore.edge.replies import DROPPED_ANSWER, VIA, Reply, error_reply
from bookstore.edge.requests import EdgeRequest, Refusal, refuse
from bookstore.edge.routing import Routing
from bookstore.edge.upstream import Answer, Origin, UpstreamError
from bookstore.kernel import request_ids

log = logging.getLogger("bookstore.edge")

REGION_HEADER = b"x-bookstore-region"
ORIGIN_HEADER = b"x-edge-origin"
FAILOVER_HEADER = b"x-edge-failover"
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PROXY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"})
ALLOW_STATIC = b"GET, HEAD, OPTIONS"
ALLOW_PROXY = b"GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE"
# Vouching is an HMAC per request; the same client address always gets the same value.
_CLIENTS_MAX = 4096
_PROTO = (b"x-forwarded-proto", b"http")


def is_proxied(path: str) -> Kind | None:
    """The record of a decoded path the edge forwards to a region's API or blog, else None."""
    if path.startswith("/api/") or path == "/api":
        return "api"
    if path.startswith("/blog/") or path == "/blog":
        return "blog"
    return None


def failure(answer: Answer) -> str | None:
    """Why an answer counts as the target failing (5xx; a 403 no Bookstore app gave), or None."""
    status = answer.status
    if status >= 500:
        return f"answered {status}"
    if status == 403 and answer.header(REGION_HEADER) is None:
        return "answered 403 without X-Bookstore-Region (API not mapped)"
    return None


class Forward:
    """One request on its way: where it goes, what it carries, how far it got."""

    __slots__ = (
        "attempt",
        "attempts",
        "body",
        "done",
        "forward",
        "id_header",
        "idempotent",
        "method",
        "path",
        "problem",
        "record",
        "request",
        "started",
        "target",
        "timed_out",
    )

    def __init__(
        self,
        method: str,
        path: str,
        target: bytes,
        request: EdgeRequest,
        record: Kind,
        attempts: list[str],
        started: float,
        idempotent: bool,
    ) -> None:
        self.method = method
        self.path = path
        self.target = target
        self.request = request
        self.record = record
        self.attempts = attempts
        self.started = started
        self.idempotent = idempotent
        self.id_header = (request_ids.HEADER, request.request_id)
        self.forward: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.attempt = 0
        self.problem = ""
        self.timed_out = False
        self.done: Callable[[Reply], None] | None = None


class Proxy:
    """Forwards requests of the API's and the blog's records to the regions."""

    def __init__(
        self,
        settings: Edge,
        origins: dict[str, Origin],
        routing: Routing,
        checker: HealthChecker,
        counters: EdgeCounters,
        secret: str,
        access_log: logging.Logger | None,
    ) -> None:
        self.settings = settings
        self.origins = origins
        self.routing = routing
        self.checker = checker
        self.counters = counters
        self.secret = secret
        self.access_log = access_log
        self.retry = settings.retry
        self.timeout_s = settings.api_timeout_s
        self._origin_headers = {region: (ORIGIN_HEADER, region.encode()) for region in origins}
        # By client address: its X-Forwarded-For and vouched X-Bookstore-Client headers.
        self._clients: dict[str, tuple[tuple[bytes, bytes], tuple[bytes, bytes]]] = {}

    def refused(self, exc: Refusal, path: str) -> Reply:
        """The answer to a request the edge refuses itself (counted by reason)."""
        self.counters.refused[exc.reason] += 1
        extra = []
        if exc.status == 405:
            extra.append((b"allow", ALLOW_PROXY if is_proxied(path) else ALLOW_STATIC))
        extra.append((request_ids.HEADER, request_ids.new()))
        return error_reply(exc.status, exc.code, exc.message, extra)

    def prepare(
        self,
        method: str,
        path: str,
        raw_path: bytes,
        query: bytes,
        request: EdgeRequest,
        record: Kind,
        started: float,
    ) -> Forward | Reply:
        """The request's way (raises Refusal), or the 503 answer when no region serves the record now."""
        if method not in PROXY_METHODS:
            raise refuse(405, "MethodNotAllowed", f"{method} is not served", "method")
        routing = self.routing
        if record == "api":
            target = raw_path[4:] or b"/"
            # Checked on the decoded path, as the region routes it: /api/%72eplication is /replication.
            if path.startswith(("/replication", "/_replication"), 4):
                raise refuse(
                    404, "NotFound", "the regions' internal endpoints are not served here", "internal"
                )
            order = routing.api_order(routing.client_region(request.client_header, request.cookie))
        else:
            target = raw_path
            order = routing.blog_order()
        if query:
            target = target + b"?" + query
        if not order:
            self.counters.failed[(record, "no healthy region")] += 1
            return error_reply(503, "Unavailable", f"no region serves the {record} now; try again shortly")
        idempotent = method in IDEMPOTENT_METHODS or request.idempotency_key
        attempts = order[:2] if idempotent and self.retry else order[:1]
        return Forward(method, path, target, request, record, attempts, started, idempotent)

    def forward(self, way: Forward, body: bytes, client: str, done: Callable[[Reply], None]) -> None:
        """Send the request to its first region (and a retry to the next); `done` gets the reply, once,
        never from within this call."""
        request = way.request
        forward = request.forward
        forward.append(way.id_header)
        said = self._clients.get(client)
        if said is None:
            if len(self._clients) >= _CLIENTS_MAX:
                self._clients.clear()
            said = self._clients[client] = (
                (b"x-forwarded-for", client.encode()),
                (CLIENT_HEADER, vouch(self.secret, client)),
            )
        forward += said
        forward.append((b"x-forwarded-host", request.host or b""))
        forward.append(_PROTO)
        way.forward = forward
        way.body = body
        way.done = done
        self._send(way)

    def _send(self, way: Forward) -> None:
        region = way.attempts[way.attempt]
        self.origins[region].send(
            way.method,
            way.target,
            way.forward,
            way.body,
            self.timeout_s,
            # A partial, not a lambda: called from C, one Python frame less per answer.
            partial(self._answered, way),
        )

    def _answered(self, way: Forward, answer: Answer | None, error: UpstreamError | None) -> None:
        # Called from the upstream connection's parser: nothing may escape (it would be taken for a
        # malformed answer), so a fault of the edge is answered as one.
        try:
            reply = self._judge(way, answer, error)
        except Exception:
            rid = request_ids.new()
            log.exception("event=edge_error path=%s request_id=%s", way.path[:200], rid.decode())
            reply = error_reply(
                500,
                "InternalError",
                "the edge failed on this request; try again",
                [(request_ids.HEADER, rid)],
            )
        if reply is None:
            return
        done, way.done = way.done, None
        if done is not None:
            done(reply)

    def _judge(self, way: Forward, answer: Answer | None, error: UpstreamError | None) -> Reply | None:
        """The reply for the client, or None when the request went on to its next region."""
        record, attempts = way.record, way.attempts
        region = attempts[way.attempt]
        problem = None
        if answer is None:
            way.problem = problem = str(error)
            way.timed_out = error is not None and error.timeout
        else:
            problem = failure(answer)
            if problem is not None:
                way.problem = problem
        if problem is not None:
            self.checker.report_failure(self.checker.target(record, region), problem)
            if way.attempt + 1 < len(attempts):
                way.attempt += 1
                nxt = attempts[way.attempt]
                self.counters.retries[(record, attempts[0], nxt)] += 1
                log.info("event=retry record=%s from=%s to=%s reason=%s", record, attempts[0], nxt, problem)
                self._send(way)
                return None
        if answer is None:
            timed_out = way.timed_out
            status = 504 if timed_out else 502
            self.counters.failed[(record, "timeout" if timed_out else "no answer")] += 1
            self.counters.served(record, None, status, time.perf_counter() - way.started)
            if self.access_log is not None:
                self._log_access(way, status, "")
            return error_reply(
                status,
                "GatewayTimeout" if timed_out else "BadGateway",
                f"{' and '.join(attempts)} did not answer ({way.problem}); "
                + ("try again" if way.idempotent else "the request was not retried: it is not idempotent"),
                [(ORIGIN_HEADER, attempts[-1].encode()), way.id_header],
            )
        served_by = region
        first = attempts[0]
        headers = [(k, v) for k, v in answer.headers if k not in DROPPED_ANSWER]
        headers.append(self._origin_headers[served_by])
        headers.append(way.id_header)
        if served_by != first:
            self.counters.failovers[(record, first, served_by)] += 1
            # As the origin group says it for static content: the client (a drill) sees the retry.
            headers.append((FAILOVER_HEADER, f"{first}: {way.problem}"[:300].encode("latin-1", "replace")))
        headers.append(VIA)
        self.counters.served(record, served_by, answer.status, time.perf_counter() - way.started)
        if self.access_log is not None:
            self._log_access(way, answer.status, served_by)
        if way.method == "HEAD":
            return Reply(answer.status, headers, b"", answer.header(b"content-length") or b"0")
        return Reply(answer.status, headers, answer.body)

    def _log_access(self, way: Forward, status: int, origin: str) -> None:
        log_access(self.access_log, way.request, way.method, way.path, status, origin, way.started)


def log_access(
    access_log: logging.Logger | None,
    request: EdgeRequest,
    method: str,
    path: str,
    status: int,
    origin: str,
    started: float,
) -> None:
    """One access line for a request the edge answered (the access log is on)."""
    assert access_log is not None
    rid = request.request_id.decode()
    path = path[:200]
    ms = round((time.perf_counter() - started) * 1000, 2)
    access_log.info(
        "event=request request_id=%s method=%s path=%s status=%d origin=%s ms=%.2f",
        rid,
        method,
        path,
        status,
        origin or "-",
        ms,
        extra={
            "request_id": rid,
            "method": method,
            "path": path,
            "status": status,
            "origin": origin,
            "ms": ms,
        },
    )
