"""A prototype: the bare proxy with the edge's per-request features, flattened into a few callbacks.

    python -m bench.lean_edge --listen HOST:PORT --topology PATH

What a proxied path rebuilt on its own protocol could cost (bench/edge_floor.py, bench/edge_path.py):
bench/bare_proxy.py's httptools framing plus, per request, the edge's own objects doing the edge's
work: the header checks and limits (count, bytes, dropped and hop-by-hop headers, one Host among the
allowed, path checks, shop paths only), the client's location and the latency record's order from
the real Routing over healthy targets, a request id (the client's if plain, else new), X-Forwarded-*
and the vouched client address, the answer judged (5xx or an unmapped 403 opens the target's breaker
through the real HealthChecker and goes once to the record's next region), the answer's hop-by-hop
headers dropped and X-Edge-Origin, X-Request-Id and Via added, and the request counted with its
latency in the real EdgeCounters.

Not a server to run: it has no header or idle deadlines, no connection cap, no upstream timeout, no
request bodies, no HEAD or pipelining care and no health probes; those cost a timer per connection
(lasting timers, runtime.listeners) or nothing per request, not what this measures.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import time
from pathlib import Path

import httptools
import uvloop

from bench.bare_proxy import _address, _Pool, _Up
from bookstore.api.client_address import HEADER as CLIENT_HEADER
from bookstore.api.client_address import vouch
from bookstore.config import Topology
from bookstore.edge.app import EdgeApp
from bookstore.edge.proxy import ORIGIN_HEADER, PROXY_METHODS, REGION_HEADER
from bookstore.edge.replies import DROPPED_ANSWER, VIA
from bookstore.edge.requests import DROPPED, MAX_HEADER_BYTES, MAX_HEADERS, shopper_api
from bookstore.kernel import request_ids
from bookstore.runtime.secret import Credentials

_STATUS = {200: b"HTTP/1.1 200 OK\r\n", 404: b"HTTP/1.1 404 Not Found\r\n"}
_PROTO = b"x-forwarded-proto: http"
_VIA = b": ".join(VIA)


class _LeanUp(_Up):
    """An upstream connection parsed by httptools; hands the status, headers and body to its client."""

    def __init__(self, pool: _Pool) -> None:
        super().__init__(pool)
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self.headers = []
        self.body = b""

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        client, self.client = self.client, None
        self.pool.idle.append(self)
        if client is not None:
            client.answered(self.parser.get_status_code(), self.headers, self.body)  # type: ignore[attr-defined]


class _LeanClient(asyncio.Protocol):
    """One client connection: checks, routing, forwarding and the reply in three callbacks."""

    transport: asyncio.Transport

    def __init__(self, edge: EdgeApp, pools: dict[str, _Pool], clients: dict[str, bytes]) -> None:
        self.edge = edge
        self.pools = pools
        self.clients = clients
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.forward: list[bytes] = []
        self.host: bytes | None = None
        self.region_header: bytes | None = None
        self.cookie: bytes | None = None
        self.rid: bytes | None = None
        self.size = 0
        self.count = 0
        self.attempts: list[str] = []
        self.attempt = 0
        self.line = b""
        self.request = b""
        self.rid_line = b""
        self.started = 0.0
        self.peer = "unknown"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else "unknown"

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self.url = b""
        self.forward = []
        self.host = self.region_header = self.cookie = self.rid = None
        self.size = self.count = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.size += len(name) + len(value) + 4
        self.count += 1
        name = name.lower()
        if name in DROPPED:
            if name == b"host":
                if self.host is not None:
                    raise ValueError("more than one Host header")
                self.host = value
            elif name == b"x-client-region":
                self.region_header = value
            elif name == b"x-request-id":
                self.rid = value
            return
        if name == b"cookie":
            self.cookie = value
        self.forward.append(name + b": " + value)

    def on_message_complete(self) -> None:
        self.started = time.perf_counter()
        edge = self.edge
        raw, _, query = self.url.partition(b"?")
        path = raw.decode("ascii")
        method = self.parser.get_method().decode("ascii")
        host = self.host
        if (
            self.count > MAX_HEADERS
            or self.size > MAX_HEADER_BYTES
            or host is None
            or host.lower() not in edge.allowed_hosts
            or not (path.isascii() and path.isprintable() and "\\" not in path)
            or "/." in path
            or method not in PROXY_METHODS
            or not shopper_api(path)
        ):
            self._reply(404, [], b'{"error":"NotFound","message":"not served by this prototype"}')
            return
        routing = edge.routing
        self.attempts = routing.api_order(routing.client_region(self.region_header, self.cookie))[:2]
        self.attempt = 0
        rid = request_ids.accepted(self.rid)
        self.rid_line = b"x-request-id: " + rid
        said = self.clients.get(self.peer)
        if said is None:
            said = self.clients[self.peer] = b"x-forwarded-for: %b\r\n%b: %b" % (
                self.peer.encode(),
                CLIENT_HEADER,
                vouch(edge.secret, self.peer),
            )
        target = raw[4:] + (b"?" + query if query else b"")
        lines = b"\r\n".join([*self.forward, self.rid_line, said, b"x-forwarded-host: " + host, _PROTO])
        self.line = b"%b %b HTTP/1.1\r\nhost: " % (self.parser.get_method(), target)
        self.request = lines
        self._send(self.attempts[0])

    def _send(self, region: str) -> None:
        pool = self.pools[region]
        request = b"%b%b\r\n%b\r\n\r\n" % (self.line, pool.authority, self.request)
        pool.send(request, self)  # type: ignore[arg-type]

    def answered(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        edge = self.edge
        region = self.attempts[self.attempt]
        if status >= 500 or (status == 403 and all(k != REGION_HEADER for k, _ in headers)):
            edge.checker.report_failure(edge.checker.target("api", region), f"answered {status}")
            if self.attempt + 1 < len(self.attempts):
                self.attempt += 1
                self._send(self.attempts[self.attempt])
                return
        kept = [k + b": " + v for k, v in headers if k not in DROPPED_ANSWER]
        kept += [ORIGIN_HEADER + b": " + region.encode(), self.rid_line, _VIA]
        edge.counters.served("api", region, status, time.perf_counter() - self.started)
        self._reply(status, kept, body)

    def _reply(self, status: int, lines: list[bytes], body: bytes) -> None:
        head = b"\r\n".join(lines)
        self.transport.write(
            b"%b%b\r\ncontent-length: %d\r\n\r\n%b"
            % (_STATUS.get(status, _STATUS[404]), head, len(body), body)
        )


def lean(
    topology: Topology, loop: asyncio.AbstractEventLoop, listen: str
) -> tuple[EdgeApp, dict[str, _Pool]]:
    """The edge's objects over `topology` with every target healthy, and a pool per region's API."""
    from bookstore.edge.server import build

    app = build(topology, dns=False, credentials=Credentials.generate())
    app.allowed_hosts = app.allowed_hosts | {listen.encode()}
    for target in app.checker.targets.values():
        target.healthy = True
    app.routing.refresh()
    return app, {r.id: _Pool(loop, r.address, r.api_port, make=_LeanUp) for r in topology.regions}


async def serve(listen: tuple[str, int], topology: Topology) -> None:
    loop = asyncio.get_running_loop()
    app, pools = lean(topology, loop, f"{listen[0]}:{listen[1]}")
    clients: dict[str, bytes] = {}
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(listen)
    server = await loop.create_server(lambda: _LeanClient(app, pools, clients), sock=sock, backlog=1024)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.lean_edge", description=__doc__)
    parser.add_argument("--listen", required=True, help="HOST:PORT to serve")
    parser.add_argument("--topology", required=True, type=Path, help="the system's topology file")
    args = parser.parse_args()
    uvloop.run(serve(_address(args.listen), Topology.load(args.topology, environ={})))


if __name__ == "__main__":
    main()
