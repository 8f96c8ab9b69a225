"""The edge's HTTP protocol: the listeners' bounds, tighter URL and header limits, and /api/ without ASGI.

Every request's head goes through the listeners' bounded httptools protocol (runtime.listeners: head
bytes counted before the parser, header deadline, idle timeout, connection cap, JSON 400 to what the
parser rejects), with the edge's own tighter bounds: 414 to a URL over MAX_URL_BYTES, 431 to headers
over MAX_HEADER_BYTES or more than MAX_HEADERS of them.

Then a request for /api/... or /blog/... is served by this protocol itself (`_Direct`): the edge's
checks (requests.inspect), its routing, retries, breaker, counts and access log (proxy.Proxy, the same
code the ASGI app runs) are called straight from the parser's callbacks, the region's answer comes back
on a callback from the upstream connection, and the reply goes out as one write. No ASGI scope,
message, task or future is made for it: the edge's benchmark (issue 16: at least 0.8 of nginx's
requests/s on one core) spent most of a proxied request's time in that plumbing. Every other request
(the /edge/ operations, static content, refusals of other paths) goes to the ASGI app through
uvicorn's own request cycle, unchanged; so does every request when tracing is on (its spans are the
app's middleware's).

Why inside uvicorn's protocol rather than a server of its own: uvicorn still owns the socket, the
lifespan (health checks, DNS), signals and graceful shutdown, and both kinds of request share one
connection's state, so keep-alive, pipelining (answers in order, reading paused while one waits), the
bounds and shutdown hold for both without a second implementation. A `_Direct` request stands where
uvicorn's cycle would, with the attributes the protocol reads of one (response_complete, keep_alive,
disconnected, message_event).
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from bookstore.edge.app import EdgeApp
from bookstore.edge.health import Kind
from bookstore.edge.proxy import Forward, is_proxied
from bookstore.edge.replies import Reply, error_reply
from bookstore.edge.requests import (
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_URL_BYTES,
    Refusal,
    inspect_parts,
    refuse,
    shopper_api,
)
from bookstore.kernel import request_ids
from bookstore.runtime.coalescing import CoalescingTransport
from bookstore.runtime.listeners import BoundedHttpProtocol, Limits

log = logging.getLogger("bookstore.edge")

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _Quiet:
    """The message event of a request nobody waits on (the protocol sets it when the client goes)."""

    def set(self) -> None:
        pass


_QUIET = _Quiet()


class _Direct:
    """A proxied request the protocol serves itself, from its head to its reply (see the module)."""

    __slots__ = (
        "chunks",
        "disconnected",
        "expect_continue",
        "headers",
        "keep_alive",
        "method",
        "more_body",
        "path",
        "protocol",
        "query",
        "raw_path",
        "record",
        "response_complete",
        "sent",
        "size",
        "started",
        "way",
    )
    message_event = _QUIET

    def __init__(
        self,
        protocol: EdgeProtocol,
        method: str,
        path: str,
        raw_path: bytes,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        record: Kind,
        keep_alive: bool,
        expect_continue: bool,
    ) -> None:
        self.protocol = protocol
        self.method = method
        self.path = path
        self.raw_path = raw_path
        self.query = query
        self.headers = headers
        self.record = record
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.chunks: list[bytes] = []
        self.size = 0
        self.more_body = True
        self.way: Forward | None = None
        self.sent = False
        self.started = 0.0
        self.response_complete = False
        self.disconnected = False

    def start(self) -> None:
        """Check the request and route it (its turn has come: answers leave in the requests' order)."""
        self.started = time.perf_counter()
        edge = self.protocol.edge
        assert edge is not None
        path = self.path
        try:
            request = inspect_parts(
                self.raw_path, self.query, path, self.headers, edge.allowed_hosts, self.protocol.edge_url
            )
            if self.record == "api" and not shopper_api(path):
                raise refuse(
                    404,
                    "NotFound",
                    "the edge serves the shop's API only; operations are on each region's own address",
                    "internal",
                )
            way = edge.proxy.prepare(
                self.method, path, self.raw_path, self.query, request, self.record, self.started
            )
            if isinstance(way, Reply):
                self.reply(way)
                return
            if self.size > MAX_BODY_BYTES:
                raise _too_large()
        except Refusal as exc:
            self.reply(edge.proxy.refused(exc, path))
            return
        except Exception:
            self.reply(internal_error(path))
            return
        self.way = way
        if not self.more_body:
            self._send()
        elif self.expect_continue and (request.content_length is not None or request.chunked):
            # As uvicorn's cycle does when the app reads a body it was asked to confirm.
            self.protocol.transport.write_now(_CONTINUE)

    def body(self, chunk: bytes) -> None:
        if self.response_complete:
            return
        self.size += len(chunk)
        if self.size > MAX_BODY_BYTES:
            self.chunks = []
            if self.way is not None:
                self._refuse(_too_large())
            return
        self.chunks.append(chunk)

    def complete(self) -> None:
        self.more_body = False
        if self.way is not None and not self.sent and not self.response_complete:
            self._send()

    def _send(self) -> None:
        way = self.way
        assert way is not None
        edge = self.protocol.edge
        assert edge is not None
        self.sent = True
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        client = self.protocol.client
        try:
            edge.proxy.forward(way, body, client[0] if client else "unknown", self.reply)
        except Exception:
            self.reply(internal_error(self.path))

    def _refuse(self, exc: Refusal) -> None:
        edge = self.protocol.edge
        assert edge is not None
        self.reply(edge.proxy.refused(exc, self.path))

    def reply(self, reply: Reply) -> None:
        """Write the whole answer in one piece; then the connection's next request may start."""
        if self.response_complete:
            return
        self.response_complete = True
        if self.disconnected:
            return
        protocol = self.protocol
        length = reply.length if reply.length is not None else b"%d" % len(reply.body)
        # map over a C method: no Python frame per header.
        lines = b"\r\n".join(map(b": ".join, reply.headers))
        data = b"".join(
            [
                STATUS_LINE[reply.status],
                lines,
                b"\r\ncontent-length: " if lines else b"content-length: ",
                length,
                b"\r\n\r\n" if self.keep_alive else b"\r\nconnection: close\r\n\r\n",
                reply.body if self.method != "HEAD" else b"",
            ]
        )
        transport = protocol.transport
        transport.write_now(data)
        if not self.keep_alive:
            transport.close()
        protocol.on_response_complete()


def _too_large() -> Refusal:
    return refuse(413, "PayloadTooLarge", f"the body exceeds {MAX_BODY_BYTES} bytes; send less", "body")


def internal_error(path: str) -> Reply:
    """The JSON 500 for a fault of the edge itself, logged with a new request id (as the app answers)."""
    rid = request_ids.new()
    log.exception("event=edge_error path=%s request_id=%s", path[:200], rid.decode())
    return error_reply(
        500, "InternalError", "the edge failed on this request; try again", [(request_ids.HEADER, rid)]
    )


class EdgeProtocol(BoundedHttpProtocol):
    """The listeners' bounded protocol with the edge's tighter bounds, serving /api/ and /blog/ itself."""

    limits = Limits(max_head_bytes=MAX_URL_BYTES + MAX_HEADER_BYTES + 1024, max_headers=MAX_HEADERS)
    _url_bytes = 0
    transport: CoalescingTransport  # type: ignore[assignment]

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any], _loop: Any = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        app = config.app
        # The app whose proxy this protocol calls, when it may (see EdgeApp.direct_proxy).
        self.edge: EdgeApp | None = app if isinstance(app, EdgeApp) and app.direct_proxy else None
        self.edge_url = app.settings.url if self.edge is not None else ""

    # The parser's callbacks: the listeners' and uvicorn's in one call each (a busy edge pays for every
    # Python call per header), with the ASGI scope made only for a request that goes to the app.

    def on_message_begin(self) -> None:
        self._url_bytes = self._header_bytes = self._header_count = 0
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def _asgi_scope(self) -> None:
        """uvicorn's scope for the request whose head was read (its on_message_begin, made late)."""
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        HttpToolsProtocol.on_message_begin(self)
        self.url, self.headers, self.expect_100_continue = url, headers, expect
        self.scope["headers"] = headers

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > MAX_URL_BYTES:
            self._refuse(414, "URITooLong", f"the URL is longer than {MAX_URL_BYTES} bytes")
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        size = self._header_bytes + len(name) + len(value) + 4
        if size > MAX_HEADER_BYTES:
            self._refuse(
                431,
                "RequestHeaderFieldsTooLarge",
                f"at most {MAX_HEADERS} headers of {MAX_HEADER_BYTES} bytes in all",
            )
        self._header_bytes = size
        self._header_count += 1
        limits = self.limits
        if self._header_count > limits.max_headers:
            self._refuse(431, "RequestHeaderFieldsTooLarge", f"more than {limits.max_headers} headers")
        if size > limits.max_head_bytes:
            self._refuse(
                431,
                "RequestHeaderFieldsTooLarge",
                f"the request line and headers exceed {limits.max_head_bytes} bytes",
            )
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.edge is None:
            self._asgi_scope()
            super().on_headers_complete()
            return
        url = self.url
        if url[:1] == b"/" and b"#" not in url:
            # The origin form every client sends: split here, as httptools.parse_url would (which costs
            # ten times as much, a URL object per request).
            raw_path, _, query = url.partition(b"?")
        else:
            parsed = httptools.parse_url(url)
            raw_path, query = parsed.path, parsed.query or b""
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        record = is_proxied(path)
        if record is None:
            self._asgi_scope()
            super().on_headers_complete()
            return
        self._in_head = False
        self._head_since = None
        parser = self.parser
        cycle = _Direct(
            self,
            parser.get_method().decode("ascii"),
            path,
            raw_path,
            query,
            self.headers,
            record,
            parser.get_http_version() != "1.0" and parser.should_keep_alive(),
            self.expect_100_continue,
        )
        existing = self.cycle
        self.cycle = cycle  # type: ignore[assignment]
        if existing is None or existing.response_complete:
            cycle.start()
        else:
            # Pipelined behind an answer not yet written: its turn comes when that one is done.
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, self.app))  # type: ignore[arg-type]

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        if type(cycle) is _Direct:
            cycle.start()
        else:
            super()._start_asgi_task(cycle, app)

    def on_body(self, body: bytes) -> None:
        cycle: object = self.cycle
        if type(cycle) is _Direct:
            cycle.body(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        cycle: object = self.cycle
        if type(cycle) is _Direct:
            self._in_head = True
            self._head_bytes = 0
            self._tail = b""
            cycle.complete()
        else:
            super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        cycle: object = self.cycle
        if (
            type(cycle) is _Direct
            and cycle.way is not None
            and not cycle.sent
            and not cycle.response_complete
        ):
            # The client went away while its body was read: counted as the app counts it.
            edge = self.edge
            assert edge is not None
            edge.counters.refused["disconnect"] += 1
        super().connection_lost(exc)
