"""The barest Python reverse proxy on uvloop: the floor under the edge's proxied path, with no features.

    python -m bench.bare_proxy --listen HOST:PORT --upstream HOST:PORT [--framing find|httptools]

What bench/edge_floor.py measures beside nginx and the edge: an asyncio.Protocol per client connection
that forwards each request (its path's /api prefix dropped) over a pooled keep-alive connection to
one region and writes the region's answer back, one request at a time per connection. No routing, no
health, no retry, no breaker, no counts, no limits, no request id: what is left is the event loop,
the kernel's work on two sockets, and the least Python that can frame HTTP/1.1.

Two ways to frame:
- `find`: bytes.find on both sides, the answer forwarded as the region wrote it. Requests without a
  body only (what the bench sends): the floor of the floor.
- `httptools`: both sides parsed by httptools with callbacks, the request and the reply rebuilt from
  the parsed headers, as the edge does: the floor of a proxy that reads what it forwards.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from collections import deque
from collections.abc import Callable

import httptools
import uvloop

_CONTENT_LENGTH = b"\r\ncontent-length: "


class _Pool:
    """Idle keep-alive connections to the one upstream; a new one when none is idle."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, host: str, port: int, make: Callable[[_Pool], _Up]
    ) -> None:
        self.loop = loop
        self.host = host
        self.port = port
        self.authority = b"%b:%d" % (host.encode(), port)
        self.make = make
        self.idle: deque[_Up] = deque()

    def send(self, request: bytes, client: _Client) -> None:
        idle = self.idle
        if idle:
            up = idle.pop()
            up.client = client
            up.transport.write(request)
        else:
            self.loop.create_task(self._connect(request, client))

    async def _connect(self, request: bytes, client: _Client) -> None:
        _, up = await self.loop.create_connection(lambda: self.make(self), self.host, self.port)
        up.client = client
        up.transport.write(request)


class _Up(asyncio.Protocol):
    """One upstream connection, one request at a time (bytes.find framing)."""

    transport: asyncio.Transport
    client: _Client | None = None

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            self.buf = buf
            return
        i = buf.find(_CONTENT_LENGTH, 0, end)
        start = i + len(_CONTENT_LENGTH)
        length = int(buf[start : buf.find(b"\r\n", start)]) if i >= 0 else 0
        if len(buf) < end + 4 + length:
            self.buf = buf
            return
        self.buf = b""
        client, self.client = self.client, None
        self.pool.idle.append(self)
        if client is not None:
            client.answer(buf)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.pool.idle:
            self.pool.idle.remove(self)


class _Client(asyncio.Protocol):
    """One client connection (bytes.find framing, requests without a body)."""

    transport: asyncio.Transport

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.buf = b""
        self.waiting: deque[bytes] = deque()
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        while (end := buf.find(b"\r\n\r\n")) >= 0:
            head, buf = buf[: end + 4], buf[end + 4 :]
            space = head.find(b" ")
            # "GET /api/books/x HTTP/1.1": the region's path drops the /api prefix, as nginx's does.
            request = head[: space + 1] + head[space + 5 :]
            if self.busy:
                self.waiting.append(request)
            else:
                self.busy = True
                self.pool.send(request, self)
        self.buf = buf

    def answer(self, data: bytes) -> None:
        self.transport.write(data)
        if self.waiting:
            self.pool.send(self.waiting.popleft(), self)
        else:
            self.busy = False


class _ParsedUp(_Up):
    """An upstream connection whose answers httptools parses; the reply is rebuilt from its parts."""

    def __init__(self, pool: _Pool) -> None:
        super().__init__(pool)
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[bytes] = []
        self.body = b""

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self.headers = []
        self.body = b""

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append(name + b": " + value)

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        reply = b"HTTP/1.1 %d OK\r\n%b\r\n\r\n%b" % (
            self.parser.get_status_code(),
            b"\r\n".join(self.headers),
            self.body,
        )
        client, self.client = self.client, None
        self.pool.idle.append(self)
        if client is not None:
            client.answer(reply)


class _ParsedClient(_Client):
    """A client connection whose requests httptools parses; the upstream request is rebuilt."""

    def __init__(self, pool: _Pool) -> None:
        super().__init__(pool)
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append(name + b": " + value)

    def on_message_complete(self) -> None:
        request = b"%b %b HTTP/1.1\r\n%b\r\n\r\n" % (
            self.parser.get_method(),
            self.url[4:],
            b"\r\n".join(self.headers),
        )
        if self.busy:
            self.waiting.append(request)
        else:
            self.busy = True
            self.pool.send(request, self)


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def serve(listen: tuple[str, int], upstream: tuple[str, int], framing: str) -> None:
    loop = asyncio.get_running_loop()
    up_class, client_class = (_ParsedUp, _ParsedClient) if framing == "httptools" else (_Up, _Client)
    pool = _Pool(loop, *upstream, make=up_class)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(listen)
    server = await loop.create_server(lambda: client_class(pool), sock=sock, backlog=1024)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_proxy", description=__doc__)
    parser.add_argument("--listen", required=True, help="HOST:PORT to serve")
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the region's API")
    parser.add_argument("--framing", choices=("find", "httptools"), default="find")
    args = parser.parse_args()
    uvloop.run(serve(_address(args.listen), _address(args.upstream), args.framing))


if __name__ == "__main__":
    main()
