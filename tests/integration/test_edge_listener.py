"""The edge's listener serving /api/ itself (edge/listener.py): framing, keep-alive, pipelining, limits.

The edge runs in this process on its uvicorn server with its protocol, in front of two stand-in regions
(small ASGI apps on the regions' addresses that echo what they were sent), so what the listener writes
and what it forwards can both be checked byte for byte.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import httptools
import httpx
import orjson
import pytest

from bookstore.config import Topology
from bookstore.edge.app import EdgeApp
from bookstore.edge.server import build, server_config
from bookstore.runtime.listeners import listening_socket
from bookstore.runtime.listeners import server_config as listener_config
from bookstore.runtime.secret import Credentials
from tests.support.regions import isolated_topology
from tests.support.threaded_server import serving

pytestmark = pytest.mark.xdist_group("edge-listener")

EU, AP = "eu-west-1", "ap-southeast-1"


def region_app(region: str) -> Any:
    """A stand-in for a region's API: echoes the request as JSON; /books/fail answers 503 in Ireland,
    /books/late answers after 0.3 s, /books/slow after 3 s (the edge waits 1 s)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        path = scope["path"]
        if path in ("/books/late", "/books/slow"):
            await asyncio.sleep(0.3 if path == "/books/late" else 3)
        status = 503 if path == "/books/fail" and region == EU else 200
        echo = orjson.dumps(
            {
                "region": region,
                "method": scope["method"],
                "path": path,
                "query": scope["query_string"].decode(),
                "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
                "body": body.decode(),
            }
        )
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(echo)).encode()),
            (b"x-bookstore-region", region.encode()),
            (b"x-request-id", b"the-regions-own"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": echo})

    return app


@dataclass
class Message:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k.lower() == name), None)

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class _Reader:
    head: bool = False
    messages: list[Message] = field(default_factory=list)
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.messages.append(Message(self.parser.get_status_code(), self.headers, self.body))
        self.headers, self.body = [], b""

    def on_headers_complete(self) -> bool:
        return self.head  # True: no body (an answer to HEAD)

    parser: Any = None


@dataclass
class Edge:
    host: str
    port: int
    topology: Topology
    app: EdgeApp

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def host_header(self) -> bytes:
        return f"{self.host}:{self.port}".encode()

    def get(self, target: str, extra: bytes = b"") -> bytes:
        return (
            b"GET " + target.encode() + b" HTTP/1.1\r\nHost: " + self.host_header + b"\r\n" + extra + b"\r\n"
        )

    def exchange(
        self, data: bytes, count: int, *, head: bool = False, wait_s: float = 5.0
    ) -> tuple[list[Message], bool]:
        """Send `data`; read until `count` answers came back (or the edge closed or went quiet).

        Returns the answers and whether the edge closed the connection."""
        reader = _Reader(head=head)
        parser = httptools.HttpResponseParser(reader)
        reader.parser = parser
        closed = False
        with socket.create_connection((self.host, self.port), timeout=wait_s) as s:
            s.sendall(data)
            deadline = time.monotonic() + wait_s
            while len(reader.messages) < count and time.monotonic() < deadline:
                try:
                    chunk = s.recv(65536)
                except TimeoutError:
                    break
                if not chunk:
                    closed = True
                    break
                parser.feed_data(chunk)
            if not closed and len(reader.messages) >= count:
                s.settimeout(0.3)
                try:
                    closed = s.recv(1) == b""
                except TimeoutError:
                    closed = False
        return reader.messages, closed


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    topology, _ = isolated_topology(
        tmp_path_factory.mktemp("edge-listener") / "topology.toml", edge="api_timeout_s = 1.0"
    )
    with ExitStack() as stack:
        for region in topology.regions:
            config = listener_config(region_app(region.id), lifespan="off")
            stack.enter_context(serving(config, listening_socket(region.address, region.api_port)))
        app = build(topology, dns=False, credentials=Credentials.generate())
        e = topology.edge
        stack.enter_context(serving(server_config(app), listening_socket(e.address, e.port), wait_s=20))
        edge = Edge(e.address, e.port, topology, app)
        deadline = time.monotonic() + 10
        while httpx.get(edge.url + "/api/books/x").status_code != 200:
            assert time.monotonic() < deadline, "the edge does not reach the stand-in regions"
            time.sleep(0.1)
        yield edge


def test_requests_on_one_connection_are_forwarded_with_the_edges_headers(edge: Edge) -> None:
    request = edge.get(
        "/api/books/bk-1?x=1&y=%20",
        b"X-Request-Id: from-the-client\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: keep-alive\r\n"
        b"X-Client-Region: eu-west-1\r\nCookie: a=b\r\n",
    )
    answers, closed = edge.exchange(request * 3, 3)
    assert not closed and [a.status for a in answers] == [200, 200, 200]
    for answer in answers:
        assert answer.header(b"x-edge-origin") == EU.encode()
        assert answer.header(b"x-request-id") == b"from-the-client"
        assert answer.header(b"via") == b"1.1 bookstore-edge"
        assert answer.header(b"content-length") == str(len(answer.body)).encode()
        echo = answer.json()
        assert (echo["method"], echo["path"], echo["query"]) == ("GET", "/books/bk-1", "x=1&y=%20")
        sent = dict(echo["headers"])
        assert sent["x-forwarded-for"] == "127.0.0.1" and sent["x-request-id"] == "from-the-client"
        assert sent["x-bookstore-client"].startswith("127.0.0.1;") and sent["cookie"] == "a=b"
        assert "x-client-region" not in sent and sent["host"].endswith(str(edge.topology.region(EU).api_port))


def test_every_form_of_request_target_is_forwarded_as_its_path_and_query(edge: Edge) -> None:
    # The origin form is split by the listener itself; the absolute form and a fragment go through
    # httptools.parse_url: both must forward the same path and query.
    host = edge.host_header.decode()
    targets = [
        "/api/books/bk-1?x=1&y=%20",
        f"http://{host}/api/books/bk-1?x=1&y=%20",
        "/api/books/bk-1?x=1&y=%20#part",
    ]
    for target in targets:
        answers, _ = edge.exchange(edge.get(target), 1)
        assert answers and answers[0].status == 200, target
        echo = answers[0].json()
        assert (echo["path"], echo["query"]) == ("/books/bk-1", "x=1&y=%20"), target
    answers, _ = edge.exchange(edge.get("/api/books/bk-1?"), 1)
    assert (answers[0].json()["path"], answers[0].json()["query"]) == ("/books/bk-1", "")


def test_pipelined_requests_of_both_kinds_are_answered_in_order(edge: Edge) -> None:
    requests = (
        edge.get("/api/books/one")
        + edge.get("/edge/nothing")
        + edge.get("/api/books/late")
        + edge.get("/api/status")
        + edge.get("/api/books/two")
    )
    answers, closed = edge.exchange(requests, 5, wait_s=10)
    assert [a.status for a in answers] == [200, 404, 200, 404, 200]
    assert answers[0].json()["path"] == "/books/one" and answers[4].json()["path"] == "/books/two"
    assert answers[2].json()["path"] == "/books/late" and not closed


def test_bodies_are_forwarded_whole_and_an_expectation_is_confirmed(edge: Edge) -> None:
    post = (
        b"POST /api/cart HTTP/1.1\r\nHost: " + edge.host_header + b"\r\nContent-Type: application/json\r\n"
        b'Content-Length: 11\r\n\r\n{"a": "b"}\n'
    )
    chunked = (
        b"PUT /api/cart/items HTTP/1.1\r\nHost: "
        + edge.host_header
        + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    answers, _ = edge.exchange(post + chunked, 2)
    assert [(a.json()["method"], a.json()["body"]) for a in answers] == [
        ("POST", '{"a": "b"}\n'),
        ("PUT", "hello world"),
    ]
    assert all(dict(a.json()["headers"]).get("content-length") for a in answers)
    with socket.create_connection((edge.host, edge.port), timeout=5) as s:
        s.sendall(
            b"POST /api/orders HTTP/1.1\r\nHost: " + edge.host_header + b"\r\nExpect: 100-continue\r\n"
            b"Content-Length: 4\r\n\r\n"
        )
        assert s.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"ping")
        answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 ") and b'"body":"ping"' in answer


def test_head_answers_carry_the_origins_length_and_no_body(edge: Edge) -> None:
    with socket.create_connection((edge.host, edge.port), timeout=5) as s:
        s.sendall(b"HEAD /api/books/x HTTP/1.1\r\nHost: " + edge.host_header + b"\r\n\r\n")
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += s.recv(65536)
        assert head.startswith(b"HTTP/1.1 200 ") and b"\r\ncontent-length: " in head
        assert int(head.split(b"\r\ncontent-length: ")[1].split(b"\r\n")[0]) > 0
        s.sendall(edge.get("/api/books/y"))
        assert s.recv(65536).startswith(b"HTTP/1.1 200 ")  # no body of the HEAD answer came before


def test_http_1_0_and_connection_close_end_the_connection_after_the_answer(edge: Edge) -> None:
    answers, closed = edge.exchange(
        b"GET /api/books/x HTTP/1.0\r\nHost: " + edge.host_header + b"\r\n\r\n", 1
    )
    assert answers[0].status == 200 and answers[0].header(b"connection") == b"close" and closed
    answers, closed = edge.exchange(edge.get("/api/books/x", b"Connection: close\r\n"), 1)
    assert answers[0].status == 200 and closed


def test_malformed_and_refused_requests_get_json_answers_not_a_dropped_connection(edge: Edge) -> None:
    cases = [
        (b"GET /api/books/x HTTP/1.1\r\nHost: " + edge.host_header + b"\r\nBad Header: x\r\n\r\n", 400),
        (b"GET /api/books/\x01 HTTP/1.1\r\nHost: " + edge.host_header + b"\r\n\r\n", 400),
        (b"GET /api/books/%00 HTTP/1.1\r\nHost: " + edge.host_header + b"\r\n\r\n", 400),
        (b"GET /api/books/x HTTP/1.1\r\nHost: evil.example\r\n\r\n", 400),
        (b"GET /api/books/x HTTP/1.1\r\n\r\n", 400),
        (b"TRACE /api/books/x HTTP/1.1\r\nHost: " + edge.host_header + b"\r\n\r\n", 405),
        (b"GET /api/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: " + edge.host_header + b"\r\n\r\n", 414),
        (edge.get("/api/books/x", b"X-Big: " + b"x" * 40_000 + b"\r\n"), 431),
        (
            b"POST /api/orders HTTP/1.1\r\nHost: "
            + edge.host_header
            + b"\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
    ]
    for request, status in cases:
        answers, _ = edge.exchange(request, 1)
        assert answers and answers[0].status == status, request[:60]
        assert answers[0].json()["error"], request[:60]
    # A refusal the edge decides (not the parser) keeps the connection for the next request.
    answers, closed = edge.exchange(
        b"DELETE /api/replication/x HTTP/1.1\r\nHost: "
        + edge.host_header
        + b"\r\n\r\n"
        + edge.get("/api/books/z"),
        2,
    )
    assert [a.status for a in answers] == [404, 200] and not closed
    allow = edge.exchange(b"TRACE /api/books HTTP/1.1\r\nHost: " + edge.host_header + b"\r\n\r\n", 1)[0][0]
    assert allow.header(b"allow") == b"GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE"


def test_a_body_over_the_limit_gets_413_as_it_arrives(edge: Edge) -> None:
    big = httpx.post(edge.url + "/api/orders", content=iter([b"x" * 65536] * 20))  # chunked, 1.25 MiB
    assert big.status_code == 413 and big.json()["error"] == "PayloadTooLarge"
    declared = (
        b"POST /api/orders HTTP/1.1\r\nHost: " + edge.host_header + b"\r\nContent-Length: 2000000\r\n\r\n"
    )
    assert edge.exchange(declared, 1)[0][0].status == 413


def test_a_region_that_does_not_answer_in_time_gives_504_and_the_next_request_is_served(edge: Edge) -> None:
    started = time.monotonic()
    # A POST without an Idempotency-Key is sent once: the 504 comes after one timeout.
    post = b"POST /api/books/slow HTTP/1.1\r\nHost: " + edge.host_header + b"\r\nContent-Length: 0\r\n\r\n"
    answers, closed = edge.exchange(post + edge.get("/api/books/after"), 2, wait_s=10)
    assert answers[0].status == 504 and answers[0].json()["error"] == "GatewayTimeout"
    assert 0.9 < time.monotonic() - started < 3.0
    assert answers[1].status == 200 and not closed


def test_a_failed_idempotent_request_is_retried_on_the_next_region(edge: Edge) -> None:
    # Whatever ran before, Ireland is back in rotation (its breaker closes at its next passing check).
    ireland = edge.app.checker.target("api", EU)
    deadline = time.monotonic() + 10
    while not ireland.routable:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    answer = httpx.get(edge.url + "/api/books/fail")
    assert answer.status_code == 200 and answer.json()["region"] == AP
    assert answer.headers["x-edge-origin"] == AP
    assert answer.headers["x-edge-failover"] == f"{EU}: answered 503"
    # Not idempotent: sent once, and the region's 503 is the answer.
    once = httpx.post(edge.url + "/api/books/fail", content=b"{}")
    assert once.status_code in (200, 503)  # the breaker may have taken Ireland out of rotation already


def test_the_blog_record_is_served_by_the_listener_too(edge: Edge) -> None:
    answers, closed = edge.exchange(edge.get("/blog/2026/a-post?page=2") + edge.get("/blog"), 2)
    assert [a.status for a in answers] == [200, 200] and not closed
    assert (answers[0].json()["path"], answers[0].json()["query"]) == ("/blog/2026/a-post", "page=2")
    assert answers[1].json()["path"] == "/blog"
    assert all(a.header(b"x-edge-origin") for a in answers)
