"""Request limits: the latency shoppers see at the edge while an attacker abuses headers or connections.

`bookstore up` with two regions and the edge. Four shoppers, each on a keep-alive connection, send GET
/api/books/{id} through the edge one after another for 10 s (PHASE_S), three times in one run: with
no attacker; while one attacker sends requests whose single header grows to 128 MiB (each refused with
431 once the head passes the edge's 41 KiB limit, then sent again on a new connection); and while
1,000 slow connections trickle their heads to the edge a byte a second (closed at the 10 s header
deadline, and opened again at once, so 1,000 stay held). Each figure is the shoppers' p99 or worst
latency under attack divided by the same figure with no attacker (1 = no added latency); the
absolute latencies are in the notes. Shoppers, attackers and the system share the machine's cores.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import select
import selectors
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import httpx

from bench.edge import BOOK, system_up
from bench.report import BenchError, Figure, Goal, Section

PHASE_S = 10.0
SHOPPERS = 4
SLOW_CONNECTIONS = 1000
HEADER_BYTES = 128 << 20
# An attacker may cost shoppers some CPU (it shares the machine's two cores), never a stall: before
# the limits a 128 MiB header held every shopper at the edge for up to 12 s, hundreds of times the
# worst latency with no attacker.
WORST_RATIO_GOAL = 10.0
# [how many, most bytes] shared with an attacker's process.
Counts = Any


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _shop(url: str, until: float, out: list[float], errors: list[str]) -> None:
    with httpx.Client(timeout=30) as client:
        while time.monotonic() < until:
            started = time.perf_counter()
            try:
                answer = client.get(url)
            except httpx.HTTPError as exc:
                errors.append(repr(exc))
                continue
            out.append(time.perf_counter() - started)
            if answer.status_code != 200:
                errors.append(f"{answer.status_code} {answer.text[:100]}")


def _phase(url: str) -> list[float]:
    """Shoppers' latencies (s) over one phase."""
    latencies: list[float] = []
    errors: list[str] = []
    until = time.monotonic() + PHASE_S
    threads = [threading.Thread(target=_shop, args=(url, until, latencies, errors)) for _ in range(SHOPPERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors or not latencies:
        raise BenchError(f"shoppers failed during the phase: {errors[:3]}")
    return latencies


def _huge_headers(where: tuple[str, int], stop: Event, refused: Counts) -> None:
    """One attacker: a 128 MiB header, made as it is sent, again and again until told to stop."""
    host = f"{where[0]}:{where[1]}".encode()
    chunk = b"a" * 65536
    while not stop.is_set():
        with socket.create_connection(where, timeout=10) as s:
            s.sendall(b"GET /api/books HTTP/1.1\r\nHost: " + host + b"\r\nX-Big: ")
            sent = 0
            with contextlib.suppress(OSError):
                # Sent until the edge answers (it reads no more of it), as an attacker would.
                while sent < HEADER_BYTES and not stop.is_set():
                    if select.select([s], [], [], 0)[0]:
                        break
                    s.sendall(chunk)
                    sent += len(chunk)
                s.settimeout(10)
                if s.recv(64).startswith(b"HTTP/1.1 431"):
                    with refused.get_lock():
                        refused[0] += 1
                        refused[1] = max(refused[1], sent)


def _slow_connections(where: tuple[str, int], stop: Event, opened: Counts) -> None:
    """Hold SLOW_CONNECTIONS connections, each trickling a head a byte a second; reopen closed ones."""
    head = b"GET /api/books HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 4096
    selector = selectors.DefaultSelector()
    progress: dict[socket.socket, int] = {}

    def connect() -> None:
        s = socket.create_connection(where, timeout=10)
        s.setblocking(False)
        selector.register(s, selectors.EVENT_READ)
        progress[s] = 0
        with opened.get_lock():
            opened[0] += 1

    def drop(s: socket.socket) -> None:
        selector.unregister(s)
        progress.pop(s, None)
        s.close()

    try:
        for _ in range(SLOW_CONNECTIONS):
            connect()
        while not stop.is_set():
            tick = time.monotonic() + 1.0
            for s in list(progress):
                try:
                    s.send(head[progress[s] % len(head) : progress[s] % len(head) + 1])
                    progress[s] += 1
                except OSError:
                    drop(s)
            for key, _ in selector.select(timeout=0):
                drop(key.fileobj)  # type: ignore[arg-type]
            while len(progress) < SLOW_CONNECTIONS and not stop.is_set():
                connect()
            stop.wait(max(0.0, tick - time.monotonic()))
    finally:
        for s in list(progress):
            drop(s)
        selector.close()


@contextlib.contextmanager
def _attacking(target: Callable[..., None], where: tuple[str, int]) -> Iterator[Counts]:
    """`target(where, stop, counts)` in a process of its own (not competing with shoppers for the GIL)."""
    stop = multiprocessing.Event()
    counts: Counts = multiprocessing.Array("q", 2)
    process = multiprocessing.Process(target=target, args=(where, stop, counts), daemon=True)
    process.start()
    time.sleep(1.0)  # the attack under way before shoppers are measured
    try:
        yield counts
    finally:
        stop.set()
        process.join(30)
        if process.is_alive():
            process.kill()


def _figures(label: str, base: list[float], attacked: list[float], note: str) -> list[Figure]:
    p99, worst = _percentile(base, 0.99), max(base)
    a99, aworst = _percentile(attacked, 0.99), max(attacked)
    absolute = (
        f"p99 {a99 * 1000:.1f} ms vs {p99 * 1000:.1f} ms, max {aworst * 1000:.1f} ms vs "
        f"{worst * 1000:.1f} ms with no attacker; {len(attacked)} vs {len(base)} requests. {note}"
    )
    return [
        Figure(f"Shoppers' p99 latency at the edge {label} / no attacker", a99 / p99, "x", note=absolute),
        Figure(
            f"Shoppers' worst latency at the edge {label} / no attacker",
            aworst / worst,
            "x",
            Goal.maximum(WORST_RATIO_GOAL),
        ),
    ]


def run_bench() -> Section:
    figures: list[Figure] = []
    with (
        tempfile.TemporaryDirectory(prefix="bookstore-bench-limits-") as tmp,
        system_up(Path(tmp), (), None) as system,
    ):
        edge = system.topology.edge
        where = (edge.address, edge.port)
        url = f"{edge.url}/api/books/{BOOK}"
        _phase(url)  # warm-up: connections, caches
        base = _phase(url)
        with _attacking(_huge_headers, where) as refused:
            oversized = _phase(url)
        if not refused[0]:
            raise BenchError("no oversized header was refused with 431 during the phase")
        with _attacking(_slow_connections, where) as opened:
            slow = _phase(url)
        if opened[0] < SLOW_CONNECTIONS:
            raise BenchError(f"only {opened[0]} slow connections opened")
        figures += _figures(
            "while one attacker sends 128 MiB headers",
            base,
            oversized,
            f"{refused[0]} oversized requests refused with 431, each after {refused[1] // 1024} KiB at most.",
        )
        figures += _figures(
            f"while {SLOW_CONNECTIONS:,} slow connections are held",
            base,
            slow,
            f"{opened[0]} slow connections opened in all (each closed at the header deadline).",
        )
    return Section(
        module="limits",
        title="Request limits: shoppers' latency under header and connection attacks",
        figures=figures,
        method=" ".join((__doc__ or "").split("\n\n", 1)[1].split()),
        context={"phase": f"{PHASE_S:g} s per phase, {SHOPPERS} shoppers"},
    )
