"""The edge's own connection protocol: bodiless GET/HEAD to /api/ and /blog/ without uvicorn's machinery.

A proxied GET or HEAD is most of what the edge serves, and uvicorn's protocol (its request cycle, flow
control, the listeners' bookkeeping around it) cost about half of the edge's instructions per request
(issue 16, docs/performance.md's floor section). `EdgeConnection` serves those requests itself: a head
is framed by its blank line, parsed by httptools in one feed, checked and forwarded by the same code
the listener calls (requests.inspect_parts, proxy.Proxy: routing, one retry, the breaker, request ids,
forwarded headers, answer filtering, counts, access log), and the reply goes out in one write.

Anything else is handed over, with the connection and every byte not yet served, to the listener's
protocol (listener.EdgeProtocol, uvicorn's), which serves the rest of the connection as before: other
methods, bodies (Content-Length, chunked, Expect), other paths (static content, /edge/), upgrades,
absolute-form targets, heads over any bound (it answers 414/431), heads the parser rejects (400), heads
framed by bare line feeds. So every refusal and every uncommon request keeps one implementation.

What this protocol keeps itself: the connection cap (counted with the listener's, runtime.listeners),
a head's deadline and the idle deadline (one lasting timer, as the listeners do), keep-alive and
Connection: close (HTTP/1.0 too), answers in the requests' order (a pipelined request waits, reading
paused, until the answer before it is written), HEAD (no body), and graceful shutdown (registered in
uvicorn's server state; an answer in flight is written with Connection: close, then the connection ends).
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from typing import Any, ClassVar, cast

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from bookstore.edge.app import EdgeApp
from bookstore.edge.health import Kind
from bookstore.edge.listener import EdgeProtocol, internal_error
from bookstore.edge.proxy import is_proxied
from bookstore.edge.replies import Reply
from bookstore.edge.requests import (
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_URL_BYTES,
    Refusal,
    inspect_parts,
    refuse,
    shopper_api,
)
from bookstore.runtime import listeners
from bookstore.runtime.listeners import Limits

# Headers that frame a body or ask for more than one answer: such a request goes to the listener.
_HANDED_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"expect", b"upgrade"})
_METHODS = frozenset({b"GET", b"HEAD"})


class _Handed(Exception):
    """Raised out of a parser callback: the request is not this protocol's to serve."""


class EdgeConnection(asyncio.Protocol):
    """One client connection: bodiless proxied GET/HEAD served here, anything else handed over."""

    limits: ClassVar[Limits] = EdgeProtocol.limits
    # The protocol a connection is handed to (EdgeProtocol with the same limits).
    handed_to: ClassVar[type[EdgeProtocol]] = EdgeProtocol
    _refused_logged: ClassVar[float] = 0.0
    _refused_since_log: ClassVar[int] = 0

    transport: asyncio.Transport

    @classmethod
    def bounded(cls, limits: Limits) -> type[EdgeConnection]:
        """This protocol with other limits (a test's short deadlines), handing over to one with them too."""
        return type(cls.__name__, (cls,), {"limits": limits, "handed_to": EdgeProtocol.bounded(limits)})

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any], _loop: Any = None) -> None:
        self.config = config
        self.server_state = server_state
        self.app_state = app_state
        self.loop: asyncio.AbstractEventLoop = _loop or asyncio.get_event_loop()
        self.edge = cast(EdgeApp, config.app)
        self.edge_url = self.edge.settings.url
        self.parser = httptools.HttpRequestParser(self)
        self.client = "unknown"
        self._listener: tuple[str, int] | None = None
        # Bytes read and not yet served: the start of the next request's head (or pipelined heads).
        self._buffer = b""
        # The request being parsed (one feed of one whole head).
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._complete = 0
        self._method = b""
        self._keep_alive = True
        # The request in flight: its answer is awaited (one at a time: answers leave in order).
        self._waiting = False
        self._head = False
        self._close_after = False
        self._shutting_down = False
        self._done = False
        # The deadlines: when the head being read began, when the connection went idle (loop time).
        self._head_since: float | None = None
        self._idle_since: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._paused = False
        self._write_paused = False

    # The connection -----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self.client = peer[0]
        sock = transport.get_extra_info("sockname")
        self.server_state.connections.add(self)
        if sock and len(sock) >= 2:
            self._listener = (sock[0], sock[1])
            if listeners.opened(self._listener) > self.limits.max_connections:
                listeners.log_refused_connection(type(self), self._listener, self.limits.max_connections)
                self._refuse(
                    503,
                    "ServiceUnavailable",
                    f"this server holds {self.limits.max_connections} connections, its most; "
                    "try again shortly",
                )
                return
        self._head_since = now = self.loop.time()
        self._arm(now + self.limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._leave()

    def _leave(self) -> None:
        """Uncount the connection and stop its timer (it is gone, or another protocol has it)."""
        if self._done:
            return
        self._done = True
        self.server_state.connections.discard(self)
        if self._listener is not None:
            listeners.closed(self._listener)
            self._listener = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: close now if idle, else after the answer in flight."""
        self._shutting_down = True
        if not self._waiting:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        self._idle_since = None
        self._buffer = self._buffer + data if self._buffer else data
        if self._waiting or self._write_paused:
            # Pipelined behind the answer in flight, or the client not taking its answers.
            self._flow()
            return
        self._serve()

    def pause_writing(self) -> None:
        # The transport's buffer is full: serve and read nothing more until the client takes it.
        self._write_paused = True
        self._flow()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._buffer and not self._waiting:
            self._serve()
        self._flow()

    def _flow(self) -> None:
        """Read while the client takes its answers and no pipelined request waits for its turn."""
        pause = self._write_paused or (self._waiting and bool(self._buffer))
        if pause != self._paused and not self._done:
            self._paused = pause
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    # Requests -----------------------------------------------------------------------------------------

    def _serve(self) -> None:
        """Serve the buffered requests in order until one awaits its answer or the bytes run out."""
        while self._buffer and not self._waiting and not self._write_paused and not self._done:
            buffer = self._buffer
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                # Half a head, or one framed by bare line feeds (the listener's parser takes those).
                if len(buffer) > self.limits.max_head_bytes or b"\n\n" in buffer or b"\n\r\n" in buffer:
                    self._hand_over()
                    return
                if self._head_since is None:
                    self._head_since = now = self.loop.time()
                    self._arm(now + self.limits.header_timeout_s)
                return
            end += 4
            if end > self.limits.max_head_bytes:
                self._hand_over()
                return
            self._head_since = None
            self._complete = 0
            try:
                self.parser.feed_data(buffer[:end])
            except (_Handed, httptools.HttpParserError, httptools.HttpParserUpgrade):
                self._hand_over()
                return
            # Exactly one message per feed: a lenient parser could end a head before our blank line.
            if self._complete != 1:
                self._hand_over()
                return
            url = self._url
            raw_path, _, query = url.partition(b"?")
            path = raw_path.decode("ascii")
            if "%" in path:
                path = urllib.parse.unquote(path)
            record = is_proxied(path)
            if record is None or url[:1] != b"/" or b"#" in url:
                self._hand_over()
                return
            self._buffer = buffer[end:]
            self._start(self._method.decode("ascii"), path, raw_path, query, record)
        if self._paused or (self._waiting and self._buffer):
            self._flow()

    def _start(self, method: str, path: str, raw_path: bytes, query: bytes, record: Kind) -> None:
        """Check and forward one request (as listener._Direct.start does for a bodiless one)."""
        started = time.perf_counter()
        edge = self.edge
        self._head = method == "HEAD"
        try:
            request = inspect_parts(raw_path, query, path, self._headers, edge.allowed_hosts, self.edge_url)
            if record == "api" and not shopper_api(path):
                raise refuse(
                    404,
                    "NotFound",
                    "the edge serves the shop's API only; operations are on each region's own address",
                    "internal",
                )
            way = edge.proxy.prepare(method, path, raw_path, query, request, record, started)
        except Refusal as exc:
            self._write(edge.proxy.refused(exc, path))
            return
        except Exception:
            self._write(internal_error(path))
            return
        if isinstance(way, Reply):
            self._write(way)
            return
        self._waiting = True
        try:
            edge.proxy.forward(way, b"", self.client, self._answered)
        except Exception:
            self._waiting = False
            self._write(internal_error(path))

    def _answered(self, reply: Reply) -> None:
        """The proxy's reply to the request in flight: written; then the next buffered request."""
        self._waiting = False
        if self._done:
            return
        self._write(reply)
        if self._buffer:
            # Pipelined requests read meanwhile: served now (reading resumes once they are).
            self._serve()

    def _write(self, reply: Reply) -> None:
        """The whole answer in one write, closing the connection after it unless kept alive."""
        self.server_state.total_requests += 1
        keep = self._keep_alive and not self._shutting_down
        length = reply.length if reply.length is not None else b"%d" % len(reply.body)
        # map over a C method: no Python frame per header.
        lines = b"\r\n".join(map(b": ".join, reply.headers))
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[reply.status],
                    lines,
                    b"\r\ncontent-length: " if lines else b"content-length: ",
                    length,
                    b"\r\n\r\n" if keep else b"\r\nconnection: close\r\n\r\n",
                    b"" if self._head else reply.body,
                ]
            )
        )
        if not keep:
            self._buffer = b""
            self.transport.close()
            self._leave()
            return
        if not self._buffer:
            self._idle_since = now = self.loop.time()
            # Moves the timer only when it would fire after this idle deadline (a short keep-alive).
            self._arm(now + self.limits.keep_alive_s)

    def _hand_over(self) -> None:
        """Give the connection and its unserved bytes to the listener's protocol, for good."""
        data, self._buffer = self._buffer, b""
        transport = self.transport
        self._leave()
        if self._paused:
            self._paused = False
            transport.resume_reading()
        protocol = self.handed_to(
            config=self.config, server_state=self.server_state, app_state=self.app_state, _loop=self.loop
        )
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._shutting_down:
            protocol.shutdown()
        if data and not transport.is_closing():
            protocol.data_received(data)

    # The parser's callbacks (one feed of one head) -------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_URL_BYTES:
            raise _Handed

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        self._header_bytes += len(name) + len(value) + 4
        if name in _HANDED_HEADERS or self._header_bytes > MAX_HEADER_BYTES:
            raise _Handed
        headers = self._headers
        headers.append((name, value))
        if len(headers) > MAX_HEADERS:
            raise _Handed

    def on_headers_complete(self) -> None:
        parser = self.parser
        self._method = method = parser.get_method()
        if method not in _METHODS:
            raise _Handed
        self._keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive()

    def on_message_complete(self) -> None:
        self._complete += 1

    # Deadlines: one lasting timer per connection (runtime.listeners) ---------------------------------

    def _arm(self, due: float) -> None:
        if self._timer is not None:
            if self._timer_at <= due:
                return
            self._timer.cancel()
        self._timer = self.loop.call_at(due, self._check)
        self._timer_at = due

    def _check(self) -> None:
        self._timer = None
        if self._done:
            return
        limits = self.limits
        now = self.loop.time()
        if self._waiting:
            self._arm(now + limits.header_timeout_s)
        elif self._head_since is not None:
            due = self._head_since + limits.header_timeout_s
            if now < due:
                self._arm(due)
                return
            self._refuse(
                408,
                "RequestTimeout",
                f"the request line and headers did not arrive within {limits.header_timeout_s:g} s",
            )
        elif self._idle_since is not None:
            due = self._idle_since + limits.keep_alive_s
            if now < due:
                self._arm(due)
                return
            self.transport.close()
            self._leave()

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer with a JSON refusal and close (the listeners' answer to a broken bound)."""
        if not self.transport.is_closing():
            self.transport.write(listeners.refusal(status, code, message))
            self.transport.close()
        self._leave()
