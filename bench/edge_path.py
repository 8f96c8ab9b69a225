"""The edge's own CPU per proxied request, in process: its protocol and proxy without sockets or kernel.

    .venv/bin/python -m bench.edge_path [--requests N] [--repeat R] [--profile]

The edge's benchmark against nginx (bench/edge.py) moves by tens of percent on this shared machine,
and its CPU time per request includes the kernel's socket work. This drives the edge's listener
(EdgeProtocol, as uvicorn makes it) and its upstream connection (upstream._Connection, pooled in the
home region's Origin) with in-memory transports on one event loop: each request is one
`data_received` of a GET /api/books/{id} as wrk sends it, and the region's answer (the bytes a real
region answers that request with) one `data_received` of the upstream connection, so the figure is
the Python the edge runs per request: parsing, checks, routing, counts, the request to the region
and the reply, with every feature on (health-checked routing, retries, breaker, metrics). CPU time
of the process (time.process_time) over N requests, the best of R repeats; `--profile` prints
cProfile's top functions too.

The machine's load moves that CPU time by a fifth; the instructions executed do not move. The timed
requests run inside `functools.reduce` (a C function nothing else here calls), so callgrind counts
them alone:

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce \
        .venv/bin/python -m bench.edge_path --requests 2000 --repeat 1

and the instructions per request are its total divided by N (the pyenv interpreter has symbols).
`--proxy find|httptools` drives bench/bare_proxy.py's connections the same way instead of the edge's:
the Python a proxy without features runs per request (the floor, bench/edge_floor.py); `--proxy lean`
drives bench/lean_edge.py, that floor with the edge's features.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import pstats
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop
from uvicorn.server import ServerState

from bench import bare_proxy, lean_edge
from bookstore.edge.server import build, server_config
from bookstore.edge.upstream import _Connection
from bookstore.runtime.secret import Credentials
from bookstore.supervisor.launch import loopback_topology

HOME = "eu-west-1"
OTHER = "ap-southeast-1"
# A real region's answer to GET /books/bk-cook-001 (headers as uvicorn sends them, a body of its size).
_BODY = b'{"id":"bk-cook-001","category":"Cooking","name":"' + b"x" * 300 + b'"}'
ANSWER = (
    b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\ncontent-type: application/json\r\n"
    b"x-bookstore-region: eu-west-1\r\nx-request-id: 9f3c2a51d0e84b7c\r\n\r\n" % len(_BODY)
) + _BODY


class _Transport(asyncio.Transport):
    """An in-memory transport: counts what is written, never closes."""

    def __init__(self, peer: tuple[str, int], sock: tuple[str, int]) -> None:
        super().__init__({"peername": peer, "sockname": sock})
        self.written = 0
        self.writes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += len(data)
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        raise AssertionError("the edge closed a keep-alive connection")

    def abort(self) -> None:
        raise AssertionError("the edge dropped its connection to the region")

    def get_write_buffer_size(self) -> int:
        return 0


def _bare(framing: str) -> tuple[Any, Any, Callable[[], None]]:
    """bench/bare_proxy.py's client and upstream connections on in-memory transports, and one request."""
    loop = asyncio.get_running_loop()
    up_class, client_class = (
        (bare_proxy._ParsedUp, bare_proxy._ParsedClient)
        if framing == "httptools"
        else (bare_proxy._Up, bare_proxy._Client)
    )
    pool = bare_proxy._Pool(loop, "127.0.1.1", 1, make=up_class)
    protocol = client_class(pool)
    client = _Transport(("127.0.0.1", 50000), ("127.0.0.1", 8080))
    protocol.connection_made(client)
    conn = up_class(pool)
    upstream = _Transport(("127.0.1.1", 1), ("127.0.0.1", 1))
    conn.connection_made(upstream)
    pool.idle.append(conn)
    request = b"GET /api/books/bk-cook-001 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"

    def one() -> None:
        protocol.data_received(request)
        conn.data_received(ANSWER)

    return client, upstream, one


def _lean() -> tuple[Any, Any, Callable[[], None]]:
    """bench/lean_edge.py's client and upstream connections on in-memory transports, and one request."""
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory(prefix="bookstore-bench-edge-path-") as tmp:
        topology = loopback_topology(
            Path(tmp) / "topology.toml", "127.0.0.1", {HOME: "127.0.1.1", OTHER: "127.0.2.1"}, edge=""
        )
    app, pools = lean_edge.lean(topology, loop, "127.0.0.1:8080")
    protocol = lean_edge._LeanClient(app, pools, {})
    client = _Transport(("127.0.0.1", 50000), ("127.0.0.1", 8080))
    protocol.connection_made(client)
    conn = lean_edge._LeanUp(pools[HOME])
    upstream = _Transport(("127.0.1.1", 1), ("127.0.0.1", 1))
    conn.connection_made(upstream)
    pools[HOME].idle.append(conn)
    request = b"GET /api/books/bk-cook-001 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"

    def one() -> None:
        protocol.data_received(request)
        conn.data_received(ANSWER)

    return client, upstream, one


async def _drive(requests: int, repeat: int, profile: bool, proxy: str) -> list[float]:
    if proxy == "lean":
        return _time(*_lean(), requests, repeat, profile)
    if proxy != "edge":
        return _time(*_bare(proxy), requests, repeat, profile)
    with tempfile.TemporaryDirectory(prefix="bookstore-bench-edge-path-") as tmp:
        topology = loopback_topology(
            Path(tmp) / "topology.toml", "127.0.0.1", {HOME: "127.0.1.1", OTHER: "127.0.2.1"}, edge=""
        )
    app = build(topology, dns=False, credentials=Credentials.generate())
    for target in app.checker.targets.values():
        target.healthy = True
    app.routing.refresh()
    config = server_config(app)
    config.load()
    loop = asyncio.get_running_loop()
    protocol_class: Any = config.http_protocol_class
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    client = _Transport(("127.0.0.1", 50000), (topology.edge.address, topology.edge.port))
    protocol.connection_made(client)
    conn = _Connection(loop)
    upstream = _Transport((topology.region(HOME).address, topology.region(HOME).api_port), ("127.0.0.1", 1))
    conn.connection_made(upstream)
    app.api_origins[HOME].idle.append(conn)
    request = b"GET /api/books/bk-cook-001 HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (
        topology.edge.address.encode(),
        topology.edge.port,
    )

    def edge_one() -> None:
        protocol.data_received(request)
        conn.data_received(ANSWER)

    return _time(client, upstream, edge_one, requests, repeat, profile)


def _time(
    client: _Transport,
    upstream: _Transport,
    one: Callable[[], None],
    requests: int,
    repeat: int,
    profile: bool,
) -> list[float]:
    """Process CPU time of `requests` calls of `one`, `repeat` times, after 1,000 that warm up."""
    for _ in range(1000):
        one()
    if client.writes != 1000 or upstream.writes != 1000:
        raise SystemExit(
            f"the edge answered {client.writes} and forwarded {upstream.writes} of 1000 requests"
        )
    seconds = []
    for _ in range(repeat):
        profiler = cProfile.Profile() if profile else None
        if profiler is not None:
            profiler.enable()
        start = time.process_time()
        # Inside a C function of its own, so callgrind can count these requests alone (see the module).
        functools.reduce(lambda _, __: one(), range(requests), None)
        seconds.append(time.process_time() - start)
        if profiler is not None:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return seconds


def main() -> None:
    """`python -m bench.edge_path [--requests N] [--repeat R] [--profile]`: CPU per request, printed."""
    parser = argparse.ArgumentParser(prog="python -m bench.edge_path", description=main.__doc__)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions")
    parser.add_argument(
        "--proxy",
        choices=("edge", "find", "httptools", "lean"),
        default="edge",
        help="the edge, bench/bare_proxy.py with that framing (the floor, bench/edge_floor.py), or "
        "bench/lean_edge.py (the floor with the edge's features)",
    )
    args = parser.parse_args()
    seconds = uvloop.run(_drive(args.requests, args.repeat, args.profile, args.proxy))
    per = [s * 1e6 / args.requests for s in seconds]
    runs = ", ".join(f"{x:.2f}" for x in per)
    print(f"{args.proxy} CPU per proxied request (in process): best {min(per):.2f} us; runs {runs}")


if __name__ == "__main__":
    main()
