"""The edge's HTTP/1.1 client to one origin: keep-alive connections parsed by httptools, whole answers.

httpx costs more per request than the proxying it would serve (the edge must stay within 0.7 of a
direct request), so the edge speaks HTTP/1.1 itself: one asyncio protocol per connection, a request
written in one piece, the answer parsed by httptools and buffered whole (the edge must be able to fail
over before the first byte reaches its client). Idle connections are kept per origin and dropped as
soon as the origin closes them, or after IDLE_S, well before the regions' own 65 s keep-alive.

`Origin.send` is the core: it calls back with the answer or the error, with no task or future per
request (the edge's proxy path runs on callbacks, edge/proxy.py); `Origin.request` awaits it.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import httptools

IDLE_S = 30.0
MAX_IDLE = 256
MAX_ANSWER_BYTES = 64 << 20


class UpstreamError(Exception):
    """No complete answer: the connection failed, was reset, timed out, or the answer was malformed."""

    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


# Not frozen: a frozen dataclass's __init__ costs twice as much, and one is made per request.
@dataclass(slots=True)
class Answer:
    """An origin's whole answer; header names are lower case, in the order received."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


# Called once per request: with the answer, or with None and the reason there is none.
Done = Callable[[Answer | None, UpstreamError | None], None]


class _Connection(asyncio.Protocol):
    """One connection; carries one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = time.monotonic()
        # The request in flight's completion (its origin's) and the caller's callback; None when idle.
        self.waiter: Callable[[_Connection, Answer | None, UpstreamError | None], None] | None = None
        self.done: Done | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.head = False
        self.got_headers = False
        self.keep_alive = False
        # The request's deadline (loop time) and one timer that outlives requests: arming and cancelling
        # a timer per request cost more than the rest of the client; the timer, when it fires, either
        # times the request out or sleeps until the deadline of the request then in flight.
        self.deadline = 0.0
        self.timeout_s = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0

    # asyncio protocol -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:
            # Bytes nobody asked for: the origin is confused; this connection cannot be trusted again.
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"malformed answer: {exc}"))
            self.close()
        # A callback's own error (the caller's) must not leave the answer half read: drop the connection.
        except Exception:
            self.close()
            raise

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None:
            if self.got_headers and not self._framed():
                # An answer delimited by the end of the connection.
                self._finish()
            else:
                self._fail(UpstreamError(f"connection lost: {exc or 'closed by the origin'}"))

    # httptools callbacks ----------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.got_headers = True
        if self.head:
            # A HEAD answer has no body whatever its Content-Length says; httptools cannot be told so,
            # so the connection ends with the headers.
            self.keep_alive = False
            self._finish()

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_ANSWER_BYTES:
            self._fail(UpstreamError(f"answer larger than {MAX_ANSWER_BYTES} bytes"))
            self.close()
            return
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.waiter is not None:
            self.keep_alive = self.parser.should_keep_alive()
            self._finish()

    # the request ------------------------------------------------------------------------------------

    def send(
        self,
        request: bytes,
        head: bool,
        timeout_s: float,
        waiter: Callable[[_Connection, Answer | None, UpstreamError | None], None],
    ) -> None:
        assert self.transport is not None
        self.waiter = waiter
        self.headers = []
        self.chunks = []
        self.size = 0
        self.head = head
        self.got_headers = False
        self.keep_alive = False
        self.timeout_s = timeout_s
        self.deadline = deadline = self.loop.time() + timeout_s
        if self.timer is None or self.timer_at > deadline:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.loop.call_at(deadline, self._check_deadline)
            self.timer_at = deadline
        self.transport.write(request)

    def _framed(self) -> bool:
        return any(k in (b"content-length", b"transfer-encoding") for k, _ in self.headers)

    def _finish(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            body = b"".join(self.chunks) if len(self.chunks) != 1 else self.chunks[0]
            waiter(self, Answer(self.parser.get_status_code(), self.headers, body), None)

    def _fail(self, exc: UpstreamError) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            # Closed first: the origin does not take a connection back that failed.
            self.close()
            waiter(self, None, exc)

    def _check_deadline(self) -> None:
        self.timer = None
        if self.waiter is None or self.closed:
            return
        now = self.loop.time()
        if now < self.deadline:
            self.timer = self.loop.call_at(self.deadline, self._check_deadline)
            self.timer_at = self.deadline
            return
        self._fail(UpstreamError(f"no answer within {self.timeout_s:g} s", timeout=True))
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.abort()


class Origin:
    """Requests to one (host, port) over a pool of keep-alive connections."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout_s: float = 1.0,
        keep_alive: bool = True,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """`tls`: speak TLS, verifying the origin's certificate for `host` with this context (regions on
        separate hosts, runtime.tls); None: plain TCP."""
        self.host = host
        self.tls = tls
        self.port = port
        self.authority = f"{host}:{port}".encode("ascii")
        self._version_host = b" HTTP/1.1\r\nhost: " + self.authority + b"\r\n"
        self.connect_timeout_s = connect_timeout_s
        self.keep_alive = keep_alive
        self.idle: deque[_Connection] = deque()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                # The handshake is within the connect timeout; a certificate refused is an OSError.
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop), self.host, self.port, ssl=self.tls
                )
        except TimeoutError:
            raise UpstreamError(
                f"could not connect to {self.host}:{self.port} within {self.connect_timeout_s:g} s",
                timeout=True,
            ) from None
        except OSError as exc:
            raise UpstreamError(
                f"could not connect to {self.host}:{self.port}: {exc.strerror or exc}"
            ) from None
        return conn

    def _pooled(self) -> _Connection | None:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_S:
                return conn
            conn.close()
        return None

    def _head(self, method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
        parts = [method.encode("ascii"), b" ", target, self._version_host]
        if headers:
            # map over a C method: no Python frame per header.
            parts += [b"\r\n".join(map(b": ".join, headers)), b"\r\n"]
        if body or method not in ("GET", "HEAD", "OPTIONS", "DELETE"):
            parts.append(b"content-length: %d\r\n" % len(body))
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        parts += [b"\r\n", body]
        return b"".join(parts)

    def send(
        self,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        timeout_s: float,
        done: Done,
    ) -> None:
        """Send one request (headers without Host, Content-Length or Connection); `done` gets the answer.

        `done` is called exactly once, never from within this call: with the answer, or with None and
        an UpstreamError when no complete answer came back.
        """
        request = self._head(method, target, headers, body)
        head = method == "HEAD"
        conn = self._pooled() if self.keep_alive else None
        if conn is not None:
            conn.done = done
            conn.send(request, head, timeout_s, self._done)
            return
        asyncio.get_running_loop().create_task(self._connect_and_send(request, head, timeout_s, done))

    async def _connect_and_send(self, request: bytes, head: bool, timeout_s: float, done: Done) -> None:
        try:
            conn = await self._connect()
        except UpstreamError as exc:
            done(None, exc)
            return
        conn.done = done
        conn.send(request, head, timeout_s, self._done)

    def _done(self, conn: _Connection, answer: Answer | None, error: UpstreamError | None) -> None:
        done, conn.done = conn.done, None
        if answer is not None and self.keep_alive and conn.keep_alive and not conn.closed:
            if len(self.idle) < MAX_IDLE:
                conn.idle_since = time.monotonic()
                self.idle.append(conn)
            else:
                conn.close()
        else:
            conn.close()
        if done is not None:
            done(answer, error)

    async def request(
        self,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes = b"",
        timeout_s: float = 10.0,
    ) -> Answer:
        """Send one request (headers without Host, Content-Length or Connection) and return the answer.

        Raises UpstreamError when no complete answer came back.
        """
        waiter: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()

        def done(answer: Answer | None, error: UpstreamError | None) -> None:
            if waiter.done():
                return
            if answer is not None:
                waiter.set_result(answer)
            else:
                waiter.set_exception(error or UpstreamError("no answer"))

        self.send(method, target, headers, body, timeout_s, done)
        return await waiter

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()
