"""Issue 13, item 3: headers are bounded in size, count and time on every listener.

Against a running system (the edge, both regions' APIs and S3 APIs, the supervisor's control API): a
header of up to 128 MiB, made as it is sent, is answered 431 once the head passes the listener's limit
(the attacker cannot send more than a little over it) while other shoppers are answered as usual; 150
headers get 431; a connection that trickles its head a byte a second, or sends nothing, is answered 408
and closed at the header deadline; an idle keep-alive connection is closed. The connection cap is tried
on a listener of the same factory with a small cap (the real ones hold thousands).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from bookstore.runtime.listeners import Limits
from tests.support.regions import System, system_up
from tests.support.threaded_server import ok_listener

pytestmark = [pytest.mark.system, pytest.mark.xdist_group("security-limits")]

MiB = 1 << 20
EU, AP = "eu-west-1", "ap-southeast-1"


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with system_up(tmp_path_factory.mktemp("limits"), edge="") as running:
        yield running


def listeners(system: System) -> dict[str, tuple[str, int]]:
    """Every HTTP listener of the system by name: (address, port)."""
    t = system.topology
    out = {"edge": (t.edge.address, t.edge.port), "control": (t.control_address, t.control_port)}
    for region in (EU, AP):
        r = t.region(region)
        out[f"{region} api"] = (r.address, r.api_port)
        out[f"{region} s3"] = (r.address, r.s3_port)
    return out


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1])


def huge_header(where: tuple[str, int], total: int = 128 * MiB) -> tuple[bytes, int]:
    """Send a request whose one header grows to `total` bytes, 64 KiB at a time, until answered.

    Returns what was answered and how many bytes of the header went out before the answer came.
    """
    host = f"{where[0]}:{where[1]}".encode()
    chunk = b"a" * 65536
    sent = 0
    with socket.create_connection(where, timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: " + host + b"\r\nX-Big: ")
        answer = b""
        while sent < total:
            readable, _, _ = select.select([s], [], [], 0)
            if readable:
                break
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        s.settimeout(10)
        try:
            while chunk_in := s.recv(65536):
                answer += chunk_in
        except (ConnectionResetError, TimeoutError):
            pass
    return answer, sent


def test_a_huge_header_gets_431_at_once_on_every_listener_and_shoppers_are_not_held(
    system: System,
) -> None:
    edge = system.topology.edge
    shopper_errors: list[str] = []
    shopper_answers = 0
    stop = threading.Event()

    def shop() -> None:
        nonlocal shopper_answers
        with httpx.Client(base_url=edge.url, timeout=5) as client:
            while not stop.is_set():
                try:
                    answer = client.get("/api/books")
                    assert answer.status_code == 200, answer.text[:200]
                    shopper_answers += 1
                except (httpx.HTTPError, AssertionError) as exc:
                    shopper_errors.append(repr(exc))
                time.sleep(0.01)

    shopper = threading.Thread(target=shop)
    shopper.start()
    deadline = time.monotonic() + 10
    while shopper_answers == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    answered_before = shopper_answers
    try:
        for name, where in [*listeners(system).items()] * 3:
            answer, sent = huge_header(where)
            assert status_of(answer) == 431, name
            assert b"RequestHeaderFieldsTooLarge" in answer, name
            # Refused as the head passed its limit (64 KiB), not after reading all 128 MiB.
            assert sent < 8 * MiB, (name, sent)
    finally:
        stop.set()
        shopper.join(10)
    assert not shopper_errors, shopper_errors[:3]
    # Shoppers kept being answered while the attacks went on.
    assert answered_before > 0 and shopper_answers > answered_before


def test_too_many_headers_get_431_on_every_listener(system: System) -> None:
    many = b"".join(b"X-H%d: 1\r\n" % i for i in range(150))
    for name, where in listeners(system).items():
        host = f"{where[0]}:{where[1]}".encode()
        with socket.create_connection(where, timeout=10) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: " + host + b"\r\n" + many + b"\r\n")
            assert status_of(s.recv(65536)) == 431, name


def test_slow_and_silent_connections_are_closed_at_the_header_deadline(system: System) -> None:
    """Slowloris: a head trickled a byte a second, and a connection that says nothing, on each listener."""
    results: dict[str, tuple[int, float]] = {}

    def trickle(name: str, where: tuple[str, int], silent: bool) -> None:
        head = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 100 + b"\r\n\r\n"
        started = time.monotonic()
        with socket.create_connection(where, timeout=60) as s:
            s.setblocking(False)
            answer = b""
            for byte in [b""] * 60 if silent else [head[i : i + 1] for i in range(len(head))]:
                if byte:
                    try:
                        s.send(byte)
                    except OSError:
                        break
                readable, _, _ = select.select([s], [], [], 1.0)
                if readable:
                    with contextlib.suppress(OSError):
                        answer = s.recv(65536)
                    break
            results[name] = (status_of(answer) if answer else 0, time.monotonic() - started)

    threads = [
        threading.Thread(target=trickle, args=(f"{name} {kind}", where, kind == "silent"))
        for name, where in listeners(system).items()
        for kind in ("slow", "silent")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert len(results) == len(threads)
    for name, (status, _) in results.items():
        # Answered 408 and closed long before the head (a byte a second, ~140 s) or 60 s of silence end.
        assert status == 408, (name, results[name])


def test_an_idle_keep_alive_connection_is_closed(system: System) -> None:
    """The control API closes a connection idle for 5 s after its answer (regions and the edge: 65 s)."""
    where = (system.topology.control_address, system.topology.control_port)
    request = (
        f"GET /regions HTTP/1.1\r\nHost: {where[0]}:{where[1]}\r\n"
        f"Authorization: Bearer {system.token}\r\n\r\n"
    ).encode()
    with socket.create_connection(where, timeout=30) as s:
        s.sendall(request)
        answer = s.recv(65536)
        assert status_of(answer) == 200, answer[:300]
        while s.recv(65536):  # the rest of the answer, then the close (b"")
            pass


@pytest.fixture
def capped() -> Iterator[tuple[str, int]]:
    """A listener made by the shared factory, capped at 5 connections."""

    with ok_listener(Limits(max_connections=5)) as address:
        yield address


def test_a_listener_refuses_connections_beyond_its_cap_with_503(capped: tuple[str, int]) -> None:
    held = [socket.create_connection(capped, timeout=10) for _ in range(5)]
    try:
        with socket.create_connection(capped, timeout=10) as extra:
            answer = extra.recv(65536)
            assert status_of(answer) == 503
            assert b"holds 5 connections" in answer
        # The ones held are served.
        held[0].sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(held[0].recv(65536)) == 200
    finally:
        for s in held:
            s.close()
    # Once they are gone, new connections are served again.
    deadline = time.monotonic() + 10
    while True:
        with socket.create_connection(capped, timeout=10) as again:
            again.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = again.recv(65536)
        if status_of(answer) == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status_of(answer) == 200
