"""The edge's own protocol (edge.connection) on in-memory transports: framing, order, limits, hand-over."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson
from uvicorn.server import ServerState

from bookstore.edge.app import EdgeApp
from bookstore.edge.connection import EdgeConnection
from bookstore.edge.listener import EdgeProtocol
from bookstore.edge.server import build, server_config
from bookstore.edge.upstream import _Connection
from bookstore.runtime.listeners import Limits
from bookstore.runtime.secret import Credentials
from bookstore.supervisor.launch import loopback_topology

EU, AP = "eu-west-1", "ap-southeast-1"
_BODY = b'{"id":"bk-cook-001","name":"x"}'
ANSWER = (
    b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\ncontent-type: application/json\r\n"
    b"x-bookstore-region: eu-west-1\r\nx-request-id: 9f3c2a51d0e84b7c\r\n\r\n" % len(_BODY)
) + _BODY


class Wire(asyncio.Transport):
    """An in-memory transport: keeps what is written, whether it is closed, paused, handed over."""

    def __init__(self, peer: tuple[str, int], sock: tuple[str, int]) -> None:
        super().__init__({"peername": peer, "sockname": sock})
        self.out = b""
        self.closed = False
        self.paused = False
        self.protocol: Any = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after close"
        self.out += bytes(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_write_buffer_size(self) -> int:
        return 0

    def take(self) -> bytes:
        out, self.out = self.out, b""
        return out


class Edge:
    """The edge's app with every target healthy, one client connection and a pooled upstream per region."""

    def __init__(self, protocol_class: Any = None) -> None:
        with tempfile.TemporaryDirectory(prefix="bookstore-test-edge-connection-") as tmp:
            topology = loopback_topology(
                Path(tmp) / "topology.toml", "127.0.0.1", {EU: "127.0.1.1", AP: "127.0.2.1"}, edge=""
            )
        self.app: EdgeApp = build(topology, dns=False, credentials=Credentials.generate())
        for target in self.app.checker.targets.values():
            target.healthy = True
        self.app.routing.refresh()
        config = server_config(self.app)
        config.load()
        loop = asyncio.get_running_loop()
        self.state = ServerState()
        cls: Any = protocol_class or config.http_protocol_class
        self.make: Callable[[], Any] = lambda: cls(
            config=config, server_state=self.state, app_state={}, _loop=loop
        )
        self.sock = (topology.edge.address, topology.edge.port)
        self.protocol, self.client = self.connect()
        self.host = b"%s:%d" % (topology.edge.address.encode(), topology.edge.port)
        self.upstream: dict[str, tuple[_Connection, Wire]] = {}
        for region in (EU, AP):
            self.pool(region)
        self.order = self.app.routing.api_order(self.app.routing.client_region(None, None))

    def connect(self) -> tuple[Any, Wire]:
        """A new client connection to this edge's listener."""
        protocol, wire = self.make(), Wire(("127.0.0.9", 50000), self.sock)
        protocol.connection_made(wire)
        return protocol, wire

    def pool(self, region: str) -> None:
        conn = _Connection(asyncio.get_running_loop())
        wire = Wire(("127.0.1.1", 1), ("127.0.0.1", 1))
        conn.connection_made(wire)
        self.app.api_origins[region].idle.append(conn)
        self.upstream[region] = (conn, wire)

    def get(self, path: str = "/api/books/bk-cook-001", method: str = "GET", extra: bytes = b"") -> bytes:
        return b"%s %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (method.encode(), path.encode(), self.host, extra)

    def send(self, data: bytes) -> None:
        self.protocol.data_received(data)

    def answer(self, region: str, data: bytes = ANSWER) -> None:
        self.upstream[region][0].data_received(data)

    def forwarded(self, region: str) -> bytes:
        return self.upstream[region][1].take()


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_a_get_is_forwarded_with_the_edges_headers_and_answered_in_one_write() -> None:
    async def body() -> None:
        edge = Edge()
        assert isinstance(edge.protocol, EdgeConnection)
        edge.send(edge.get(extra=b"X-Request-Id: abc-123\r\nCookie: a=b\r\n"))
        request = edge.forwarded(edge.order[0])
        assert request.startswith(b"GET /books/bk-cook-001 HTTP/1.1\r\n")
        for line in (b"x-request-id: abc-123", b"x-forwarded-for: 127.0.0.9", b"cookie: a=b"):
            assert line in request
        assert b"x-bookstore-client: " in request and b"x-forwarded-proto: http" in request
        edge.answer(edge.order[0])
        answer = edge.client.take()
        assert status(answer) == 200 and answer.endswith(b"\r\n\r\n" + _BODY)
        head = answer.split(b"\r\n\r\n")[0].lower()
        assert b"x-edge-origin: " + edge.order[0].encode() in head
        assert b"x-request-id: abc-123" in head and b"via: 1.1 bookstore-edge" in head
        assert b"content-length: %d" % len(_BODY) in head and b"server:" not in head
        assert not edge.client.closed
        assert edge.app.counters.requests  # counted
        assert edge.state.total_requests == 1

    run(body)


def test_pipelined_requests_are_answered_in_order_one_at_a_time() -> None:
    async def body() -> None:
        edge = Edge()
        home = edge.order[0]
        edge.send(edge.get("/api/books/one") + edge.get("/api/books/two", "HEAD"))
        # The second waits for the first's answer: not forwarded, reading paused.
        assert edge.forwarded(home).startswith(b"GET /books/one ")
        assert edge.forwarded(home) == b"" and edge.client.paused
        edge.answer(home)
        first = edge.client.take()
        assert status(first) == 200 and first.endswith(_BODY)
        assert edge.forwarded(home).startswith(b"HEAD /books/two ") and not edge.client.paused
        edge.answer(home, ANSWER[: ANSWER.index(b"\r\n\r\n") + 4])
        second = edge.client.take()
        assert second.endswith(b"\r\n\r\n") and b"content-length: %d" % len(_BODY) in second
        assert not edge.client.closed

    run(body)


def test_a_head_split_across_reads_is_served_when_it_is_whole() -> None:
    async def body() -> None:
        edge = Edge()
        request = edge.get()
        # Byte by byte, the blank line's own bytes apart too.
        for i in range(len(request) - 1):
            edge.send(request[i : i + 1])
            assert edge.forwarded(edge.order[0]) == b""
        edge.send(request[-1:])
        assert edge.forwarded(edge.order[0]).startswith(b"GET /books/bk-cook-001 ")
        edge.answer(edge.order[0])
        assert status(edge.client.take()) == 200

    run(body)


def test_an_oversize_head_gets_431_and_a_long_url_414_from_the_listener() -> None:
    async def body() -> None:
        cases: list[tuple[Callable[[Edge], bytes], int]] = [
            (lambda e: e.get(extra=b"X-Big: " + b"a" * 40_000 + b"\r\n"), 431),
            (lambda e: e.get(extra=b"".join(b"X-%d: 1\r\n" % i for i in range(120))), 431),
            (lambda e: e.get("/api/books/" + "a" * 9000), 414),
            (lambda e: b"GET /api/books/1 HTTP/1.1\r\nHost: " + b"h" * 80_000, 431),
        ]
        for make, code in cases:
            edge = Edge()
            edge.send(make(edge))
            assert isinstance(edge.client.protocol, EdgeProtocol)
            await asyncio.sleep(0)
            answer = edge.client.out
            assert status(answer) == code, answer[:200]
            error = orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
            assert error == ("URITooLong" if code == 414 else "RequestHeaderFieldsTooLarge")
            assert edge.client.closed
            assert edge.forwarded(edge.order[0]) == b""

    run(body)


def test_connection_close_and_http_1_0_end_the_connection_after_the_answer() -> None:
    async def body() -> None:
        for request in (
            b"GET /api/books/1 HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
            b"GET /api/books/1 HTTP/1.0\r\nHost: %s\r\n\r\n",
        ):
            edge = Edge()
            # A request after it is not served.
            edge.send(request % edge.host + edge.get("/api/books/2"))
            assert edge.forwarded(edge.order[0]).startswith(b"GET /books/1 ")
            edge.answer(edge.order[0])
            answer = edge.client.take()
            assert status(answer) == 200 and b"\r\nconnection: close\r\n" in answer
            assert edge.client.closed
            assert edge.forwarded(edge.order[0]) == b""
            assert edge.protocol not in edge.state.connections

    run(body)


def test_head_answers_carry_the_origins_length_and_no_body() -> None:
    async def body() -> None:
        edge = Edge()
        edge.send(edge.get(method="HEAD"))
        assert edge.forwarded(edge.order[0]).startswith(b"HEAD /books/bk-cook-001 ")
        edge.answer(edge.order[0], ANSWER[: ANSWER.index(b"\r\n\r\n") + 4])
        answer = edge.client.take()
        assert status(answer) == 200 and answer.endswith(b"\r\n\r\n")
        assert b"content-length: %d\r\n" % len(_BODY) in answer

    run(body)


def test_a_failed_get_is_retried_once_on_the_next_region_then_502() -> None:
    async def body() -> None:
        edge = Edge()
        first, second = edge.order[:2]
        edge.send(edge.get())
        assert edge.forwarded(first)
        edge.upstream[first][0].connection_lost(ConnectionResetError("reset"))
        assert edge.forwarded(second).startswith(b"GET /books/bk-cook-001 ")
        assert edge.client.out == b""
        edge.upstream[second][0].connection_lost(None)
        answer = edge.client.take()
        assert status(answer) == 502, answer
        assert orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == "BadGateway"
        assert edge.app.counters.retries[("api", first, second)] == 1
        # The breaker opened for the first region.
        assert edge.app.checker.target("api", first).breaker_since is not None
        assert not edge.client.closed

    run(body)


def test_a_5xx_is_retried_and_the_next_regions_answer_served_with_the_failover_header() -> None:
    async def body() -> None:
        edge = Edge()
        first, second = edge.order[:2]
        edge.send(edge.get())
        edge.answer(first, b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
        assert edge.forwarded(second)
        edge.answer(second)
        answer = edge.client.take()
        assert status(answer) == 200 and b"x-edge-failover: " + first.encode() in answer
        assert b"x-edge-origin: " + second.encode() in answer

    run(body)


def test_other_requests_hand_the_connection_to_the_listener_with_their_bytes() -> None:
    async def body() -> None:
        for request in (
            b"POST /api/cart HTTP/1.1\r\nHost: %s\r\nContent-Length: 2\r\n\r\n{}",
            b"GET /edge/status HTTP/1.1\r\nHost: %s\r\n\r\n",
            b"GET /index.html HTTP/1.1\r\nHost: %s\r\n\r\n",
            b"GET /api/books/1 HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET /api/books/1 HTTP/1.1\nHost: %s\n\n",
            # Two requests before the first CRLF blank line: handed over (the parser rejects bare LF;
            # were it lenient, the count of messages in one feed would hand it over), not served as one.
            b"GET /api/books/1 HTTP/1.1\nHost: %s\n\nGET /api/books/2 HTTP/1.1\r\nHost: %s\r\n\r\n",
            b"GET http://x/api/books/1 HTTP/1.1\r\nHost: %s\r\n\r\n",
            b"GARBAGE\r\n\r\n",
        ):
            edge = Edge()
            # One proxied GET first, served here; then the other kind goes over with the connection.
            edge.send(edge.get())
            edge.answer(edge.order[0])
            assert status(edge.client.take()) == 200
            edge.send(request.replace(b"%s", edge.host))
            assert isinstance(edge.client.protocol, EdgeProtocol), request
            assert edge.protocol not in edge.state.connections
            assert edge.client.protocol in edge.state.connections or edge.client.closed

    run(body)


def test_a_malformed_head_gets_the_listeners_json_400() -> None:
    async def body() -> None:
        edge = Edge()
        edge.send(b"GET /api/books/1 HTTP/1.1\r\nHost: %s\r\nBad Header: x\r\n\r\n" % edge.host)
        await asyncio.sleep(0)
        answer = edge.client.out
        assert status(answer) == 400 and edge.client.closed
        assert orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == "BadRequest"

    run(body)


def test_refusals_of_proxied_paths_are_answered_here_and_the_connection_kept() -> None:
    async def body() -> None:
        edge = Edge()
        edge.send(b"GET /api/books/1 HTTP/1.1\r\nHost: elsewhere.example\r\n\r\n")
        assert status(edge.client.take()) == 400
        edge.send(edge.get("/api/replication/log"))
        assert status(edge.client.take()) == 404
        edge.send(edge.get("/api/books/../status"))
        assert status(edge.client.take()) == 400
        # Still this protocol's connection.
        assert edge.client.protocol is None and not edge.client.closed

    run(body)


def test_a_slow_head_gets_408_and_an_idle_connection_is_closed() -> None:
    async def body() -> None:
        limits = Limits(
            max_head_bytes=EdgeConnection.limits.max_head_bytes, header_timeout_s=0.05, keep_alive_s=1
        )
        edge = Edge(EdgeConnection.bounded(limits))
        edge.send(edge.get()[:10])
        await asyncio.sleep(0.15)
        answer = edge.client.out
        assert status(answer) == 408 and edge.client.closed

        limits = Limits(max_head_bytes=EdgeConnection.limits.max_head_bytes, keep_alive_s=0)
        edge = Edge(EdgeConnection.bounded(limits))
        edge.send(edge.get())
        edge.answer(edge.order[0])
        assert not edge.client.closed
        await asyncio.sleep(0.05)
        assert edge.client.closed

    run(body)


def test_shutdown_closes_an_idle_connection_and_ends_one_in_flight_after_its_answer() -> None:
    async def body() -> None:
        edge = Edge()
        edge.protocol.shutdown()
        assert edge.client.closed

        edge = Edge()
        edge.send(edge.get())
        edge.protocol.shutdown()
        assert not edge.client.closed
        edge.answer(edge.order[0])
        answer = edge.client.take()
        assert status(answer) == 200 and b"\r\nconnection: close\r\n" in answer and edge.client.closed

    run(body)


def test_connections_over_the_cap_get_503() -> None:
    async def body() -> None:
        limits = Limits(max_head_bytes=EdgeConnection.limits.max_head_bytes, max_connections=1)
        edge = Edge(EdgeConnection.bounded(limits))
        second, wire = edge.connect()
        assert status(wire.out) == 503 and wire.closed
        assert not edge.client.closed and second not in edge.state.connections
        # The first's place is free again once it is gone.
        edge.protocol.connection_lost(None)
        _, third = edge.connect()
        assert not third.closed and third.out == b""

    run(body)


def test_a_client_that_takes_no_answers_is_read_no_more_and_served_when_it_does() -> None:
    async def body() -> None:
        edge = Edge()
        home = edge.order[0]
        edge.protocol.pause_writing()
        assert edge.client.paused
        edge.send(edge.get("/api/books/one") + edge.get("/api/books/two"))
        assert edge.forwarded(home) == b""
        edge.protocol.resume_writing()
        assert edge.forwarded(home).startswith(b"GET /books/one ") and edge.client.paused
        edge.protocol.pause_writing()
        edge.answer(home)
        assert status(edge.client.take()) == 200
        # The second waits while the client's buffer is full.
        assert edge.forwarded(home) == b"" and edge.client.paused
        edge.protocol.resume_writing()
        assert edge.forwarded(home).startswith(b"GET /books/two ") and not edge.client.paused
        edge.answer(home)
        assert status(edge.client.take()) == 200 and not edge.client.closed

    run(body)
