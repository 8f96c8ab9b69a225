"""Every HTTP listener's uvicorn protocol and settings: what a client sends is bounded in size, count, time.

uvicorn's httptools protocol bounds none of it: httptools grows a header by concatenation (so a huge
one costs CPU with its square, on the event loop that serves everyone), and a connection that sends
nothing, or a byte now and then, stays open for ever. `BoundedHttpProtocol` counts the bytes of a
request's head in `data_received`, before the parser sees them, and answers 431 the moment they pass
`Limits.max_head_bytes` (the parser never holds more); more than `max_headers` headers get 431 too.
A request's head must arrive within `header_timeout_s` of its first byte (of the connection, for a
new one), else 408 and the connection closes; between requests an idle connection closes after
`keep_alive_s`. Both deadlines are kept by one timer each per connection that outlives requests (it
checks, when it fires, the head or the idleness then current): arming and cancelling two timers per
request cost a busy listener more than parsing the request.
A listener holds at most `max_connections` connections: one more is answered 503
with a message and closed, with a log line. Every refusal is JSON {"error", "message"} and closes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
import orjson
import uvicorn

from bookstore.runtime.coalescing import CoalescingHttpToolsProtocol

log = logging.getLogger("bookstore.listeners")

_REASONS = {
    408: b"Request Timeout",
    414: b"URI Too Long",
    400: b"Bad Request",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}
# Open connections by listening address (host, port), over every server of this process.
_OPEN: Counter[tuple[str, int]] = Counter()
_LOG_EVERY_S = 5.0


@dataclass(frozen=True, slots=True)
class Limits:
    """What a client of one listener may send: head bytes and headers, and how long it may take."""

    max_head_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout_s: float = 10.0
    keep_alive_s: int = 65
    max_connections: int = 4096


class _Refused(Exception):
    """Raised out of a parser callback once the request has been answered with a refusal."""


def opened(listener: tuple[str, int]) -> int:
    """Count a connection accepted by `listener`; how many it holds now (refuse over max_connections)."""
    _OPEN[listener] += 1
    return _OPEN[listener]


def closed(listener: tuple[str, int]) -> None:
    """Count a connection of `listener` gone (or handed to another protocol that counts it again)."""
    _OPEN[listener] -= 1
    if _OPEN[listener] <= 0:
        del _OPEN[listener]


def refusal(status: int, code: str, message: str) -> bytes:
    """A whole JSON refusal that closes the connection (what every listener answers a bound broken)."""
    body = orjson.dumps({"error": code, "message": message})
    head = (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
    )
    return head % (status, _REASONS.get(status, b""), len(body)) + body


class BoundedHttpProtocol(CoalescingHttpToolsProtocol):
    """uvicorn's httptools protocol (one write per answer) with the bounds of `limits` (see the module)."""

    limits: ClassVar[Limits] = Limits()
    _refused_logged: ClassVar[float] = 0.0
    _refused_since_log: ClassVar[int] = 0

    _in_head = True
    _head_bytes = 0
    _tail = b""
    _header_bytes = 0
    _header_count = 0
    _refused = False
    _deadline: asyncio.TimerHandle | None = None
    # Loop time the head being read began; None between a head's end and the next one's first byte.
    _head_since: float | None = None
    # Loop time the last answer was complete; None while a request is read or answered.
    _idle_since: float | None = None
    _listener: tuple[str, int] | None = None

    @classmethod
    def bounded(cls, limits: Limits) -> type[BoundedHttpProtocol]:
        """This protocol with other limits (a listener's own, or a test's short deadlines)."""
        return type(cls.__name__, (cls,), {"limits": limits})

    # Connections: counted per listener, and given until their first head's deadline.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.server is not None and self.server[1] is not None:
            self._listener = (self.server[0], self.server[1])
            if opened(self._listener) > self.limits.max_connections:
                self._log_refused_connection()
                self._answer(
                    503,
                    "ServiceUnavailable",
                    f"this server holds {self.limits.max_connections} connections, its most; "
                    "try again shortly",
                )
                return
        self._head_begins()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._listener is not None:
            closed(self._listener)
            self._listener = None
        self._disarm_deadline()
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        super().connection_lost(exc)

    # Keep-alive: uvicorn's, with one lasting timer instead of one armed per answer and cancelled by
    # the next request's first bytes.

    def _unset_keepalive_if_required(self) -> None:
        # Called by uvicorn whenever bytes arrive: the connection is busy; its timer stays armed.
        self._idle_since = None

    def on_response_complete(self) -> None:
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = now = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_at(now + self.timeout_keep_alive, self._idle_check)

    def _idle_check(self) -> None:
        self.timeout_keep_alive_task = None
        if self._idle_since is None or self.transport.is_closing():
            # Busy: armed again when its answer is complete.
            return
        due = self._idle_since + self.timeout_keep_alive
        if self.loop.time() < due:
            self.timeout_keep_alive_task = self.loop.call_at(due, self._idle_check)
            return
        self.timeout_keep_alive_handler()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            if self._head_since is None:
                self._head_begins()
            tail = self._tail
            # Most heads arrive whole: no tail to prepend, no copy of the bytes.
            window = tail + data if tail else data
            end = window.find(b"\r\n\r\n")
            size = self._head_bytes + (end + 4 - len(tail) if end >= 0 else len(data))
            # Counted before the parser sees the bytes: it never holds more than the limit.
            if size > self.limits.max_head_bytes:
                self._answer(
                    431,
                    "RequestHeaderFieldsTooLarge",
                    f"the request line and headers exceed {self.limits.max_head_bytes} bytes",
                )
                return
            if end < 0:
                self._head_bytes = size
                self._tail = window[-3:]
        # uvicorn's data_received, inlined (one call less per read on a busy listener).
        self._idle_since = None
        try:
            self.parser.feed_data(data)
        except _Refused:
            pass
        except httptools.HttpParserError:
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    # Parser callbacks.

    def on_message_begin(self) -> None:
        self._header_bytes = self._header_count = 0
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_bytes += len(name) + len(value) + 4
        if self._header_count > self.limits.max_headers:
            self._refuse(431, "RequestHeaderFieldsTooLarge", f"more than {self.limits.max_headers} headers")
        # A pipelined request's head is not counted in data_received: bounded here.
        if self._header_bytes > self.limits.max_head_bytes:
            self._refuse(
                431,
                "RequestHeaderFieldsTooLarge",
                f"the request line and headers exceed {self.limits.max_head_bytes} bytes",
            )
        # uvicorn's on_header, inlined: one Python frame per header instead of two (a POST of the API
        # carries five headers).
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._head_complete()
        super().on_headers_complete()

    def _head_complete(self) -> None:
        """The head arrived in time: its deadline is met (the timer stays, for the next head)."""
        self._in_head = False
        self._head_since = None

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0
        self._tail = b""

    def send_400_response(self, msg: str) -> None:
        # A callback that refused the request answered it already; the parser's error follows here.
        if self._refused:
            return
        self._answer(400, "BadRequest", "malformed HTTP request: check the request line, headers and framing")

    # Refusals.

    def _refuse(self, status: int, code: str, message: str) -> None:
        self._answer(status, code, message)
        raise _Refused

    def _answer(self, status: int, code: str, message: str) -> None:
        """Answer with `status` and close the connection; nothing it sends afterwards is read."""
        self._refused = True
        self._disarm_deadline()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(refusal(status, code, message))
            self.transport.close()

    def _head_begins(self) -> None:
        self._head_since = now = self.loop.time()
        if self._deadline is None:
            self._deadline = self.loop.call_at(now + self.limits.header_timeout_s, self._headers_late)

    def _disarm_deadline(self) -> None:
        self._head_since = None
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_late(self) -> None:
        self._deadline = None
        if self._refused or self._head_since is None:
            # No head is being read: the next one's first byte arms the timer again.
            return
        due = self._head_since + self.limits.header_timeout_s
        if self.loop.time() < due:
            self._deadline = self.loop.call_at(due, self._headers_late)
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request waits for the answer before it: its head is read after that one.
            self._head_begins()
            return
        log.info(
            "event=headers_timeout client=%s after_s=%g",
            f"{self.client[0]}:{self.client[1]}" if self.client else "-",
            self.limits.header_timeout_s,
        )
        self._answer(
            408,
            "RequestTimeout",
            f"the request line and headers did not arrive within {self.limits.header_timeout_s:g} s",
        )

    def _log_refused_connection(self) -> None:
        log_refused_connection(type(self), self._listener, self.limits.max_connections)


def log_refused_connection(cls: Any, listener: tuple[str, int] | None, limit: int) -> None:
    """Log connections refused over the cap, at most once every _LOG_EVERY_S per protocol class."""
    cls._refused_since_log += 1
    now = time.monotonic()
    if now - cls._refused_logged >= _LOG_EVERY_S:
        log.warning(
            "event=connections_refused listener=%s:%s limit=%d refused=%d",
            *(listener or ("-", 0)),
            limit,
            cls._refused_since_log,
        )
        cls._refused_logged = now
        cls._refused_since_log = 0


def server_config(
    app: Any,
    *,
    limits: Limits | None = None,
    # A BoundedHttpProtocol, or any protocol class with `limits` and `bounded` (edge.connection's).
    protocol: Any = BoundedHttpProtocol,
    **settings: Any,
) -> uvicorn.Config:
    """uvicorn settings for a listener of the Bookstore: `protocol` with `limits`, quiet logs, `settings`."""
    limits = limits or protocol.limits
    defaults: dict[str, Any] = {"log_config": None, "access_log": False}
    return uvicorn.Config(
        app,
        http=protocol.bounded(limits),
        timeout_keep_alive=limits.keep_alive_s,
        **{**defaults, **settings},
    )


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket that a server (or a child process) can be handed."""
    # IPPROTO_TCP given explicitly: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
    # and without it small responses wait ~40 ms for delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock
