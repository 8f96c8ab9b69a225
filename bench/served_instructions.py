"""Instructions per API request of a region's app as its server serves it, in process, counted by callgrind.

    .venv/bin/python -m bench.served_instructions [--against SRC ...] [--endpoint cart|orders|book]
        [--connections 64] [--rounds 20]

bench.instructions counts a whole region process over a window of sequential requests: every timer and
background loop that runs meanwhile counts too (consumers polling every 50 ms, replication retrying its
peers, anti-entropy), and under callgrind a request takes about fifty times as long, for longer still
on a loaded machine, so those loops weigh more or less per request from one run to the next (its POST
figures moved by up to 37%); and one request at a time makes every write a group commit of one. Here a
child process (the tree's code through PYTHONPATH) composes the region's whole app
(`region.compose.compose`, no lifespan: no background loop runs) and serves it with the region's own
uvicorn settings and protocol (`region.process.server_settings`, `settle`) on `--connections` fake
transports on one uvloop event loop: in each round every connection receives the same request, as wrk
sends it, and the round ends when every answer is written, so the writes of a round share one group
commit as they do under wrk -c64. Callgrind's counters are zeroed after the warm-up rounds and dumped
after `--rounds` more; the figure is the dump's total over the requests. What the kernel does for a
socket is not counted (the answers go to memory), nor what a background loop would take under load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BOOK_ID = "bk-cook-001"
EMAIL = "served@bench.example"
PASSWORD = "bench-password-42"
WARMUP_ROUNDS = 10
TOTALS = re.compile(r"^(?:summary|totals):\s+(\d+)", re.MULTILINE)
ENDPOINTS = ("cart", "orders", "book")


def _request(endpoint: str, token: str) -> bytes:
    """The request as bench/api.py's wrk script sends it."""
    if endpoint == "book":
        return b"GET /books/%s HTTP/1.1\r\nHost: 127.0.1.1:8000\r\n\r\n" % BOOK_ID.encode()
    line = {"bookId": BOOK_ID, "quantity": 1}
    path, content = ("/cart", line) if endpoint == "cart" else ("/orders", {"books": [line]})
    body = json.dumps(content, separators=(",", ":")).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.1.1:8000\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _Transport(asyncio.Transport):
    """A connection whose answers go to `written` (the server's writes, whole answers each)."""

    def __init__(self, written: Any) -> None:
        super().__init__()
        self.written = written
        self.closing = False

    def write(self, data: Any) -> None:
        self.written(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.1.1", 8000), "peername": ("127.0.0.1", 40000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def child(endpoint: str, connections: int, rounds: int) -> None:
    """Serve `rounds` rounds after the warm-up; "ready" and "done" on stdout, each awaiting a line."""
    import uvloop
    from uvicorn.server import ServerState

    from bookstore.config import Topology
    from bookstore.region.compose import compose
    from bookstore.region.process import server_settings, settle
    from bookstore.services.catalog import seed_books

    with tempfile.TemporaryDirectory(prefix="served-instructions-") as data:
        composed = compose(Topology(), "eu-west-1", Path(data))
        services = composed.services
        try:
            services.catalog.load(seed_books())
            services.identity.add_user(EMAIL, PASSWORD)
            request = _request(endpoint, services.identity.signin(EMAIL, PASSWORD)["accessToken"])
            config = server_settings(composed.app)
            config.load()
            settle()
            loop = uvloop.new_event_loop()
            asyncio.set_event_loop(loop)
            state = ServerState()
            left = 0
            round_done: asyncio.Future[None] = loop.create_future()

            def written(data: bytes) -> None:
                nonlocal left
                if not data.startswith((b"HTTP/1.1 200 ", b"HTTP/1.1 201 ")):
                    raise SystemExit(f"{endpoint} answered {data[:400]!r}")
                left -= 1
                if left == 0:
                    round_done.set_result(None)

            protocols = []
            for _ in range(connections):
                protocol = config.http_protocol_class(  # type: ignore[call-arg]
                    config=config, server_state=state, app_state={}, _loop=loop
                )
                protocol.connection_made(_Transport(written))
                protocols.append(protocol)

            async def serve(count: int) -> None:
                nonlocal left, round_done
                for _ in range(count):
                    left, round_done = connections, loop.create_future()
                    for protocol in protocols:
                        protocol.data_received(request)
                    await round_done

            loop.run_until_complete(serve(WARMUP_ROUNDS))
            print("ready", flush=True)
            sys.stdin.readline()
            loop.run_until_complete(serve(rounds))
            print("done", flush=True)
            sys.stdin.readline()
        finally:
            services.close()


def measure(src: Path | None, endpoint: str, connections: int, rounds: int) -> float:
    """Instructions per request of `endpoint` with the tree `src` (None: this checkout)."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    if src is not None:
        # The tree's bookstore, this checkout's bench (the child's code is this module).
        env["PYTHONPATH"] = f"{src}:{ROOT}"
    with tempfile.TemporaryDirectory(prefix="served-instructions-") as tmp:
        out = Path(tmp) / "callgrind.out"
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable]
        argv += ["-m", "bench.served_instructions", "--child", endpoint]
        argv += ["--connections", str(connections), "--rounds", str(rounds)]
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdin is not None and proc.stdout is not None
        try:
            for step, option in (("ready", "--zero"), ("done", "--dump")):
                line = proc.stdout.readline().strip()
                if line != step:
                    raise SystemExit(f"the child said {line!r}, not {step!r} (exit {proc.poll()})")
                subprocess.run(["callgrind_control", option, str(proc.pid)], check=True, capture_output=True)
                proc.stdin.write("go\n")
                proc.stdin.flush()
            proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
        dumps = sorted(out.parent.glob(out.name + ".*"))
        if len(dumps) != 1:
            raise SystemExit(f"expected one callgrind dump, found {dumps}")
        found = TOTALS.search(dumps[0].read_text(encoding="utf-8", errors="replace"))
        if found is None:
            raise SystemExit(f"no instruction total in {dumps[0]}")
        return int(found.group(1)) / (connections * rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--against", type=Path, action="append", default=[], help="another tree's src/")
    parser.add_argument("--endpoint", choices=ENDPOINTS, action="append")
    parser.add_argument("--connections", type=int, default=64, help="requests per round (default 64)")
    parser.add_argument("--rounds", type=int, default=20, help="rounds counted (default 20)")
    parser.add_argument("--child", choices=ENDPOINTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.connections, args.rounds)
        return
    trees: list[tuple[str, Path | None]] = [("this checkout", None)]
    trees += [(str(src), src.resolve()) for src in args.against]
    print(f"Instructions per request (callgrind; {args.connections} connections, {args.rounds} rounds)")
    for endpoint in args.endpoint or ["cart"]:
        base = None
        for name, src in trees:
            figure = measure(src, endpoint, args.connections, args.rounds)
            base = base or figure
            print(f"{endpoint}: {name}: {figure:,.0f} ({figure / base:.3f}x)", flush=True)


if __name__ == "__main__":
    main()
