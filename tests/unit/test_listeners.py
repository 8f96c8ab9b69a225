"""The listeners' bounded protocol: the head counted before the parser, whatever pieces it arrives in."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from bookstore.runtime.listeners import Limits
from tests.support.threaded_server import ok_listener

LIMIT = 1000


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    with ok_listener(Limits(max_head_bytes=LIMIT, max_headers=10)) as address:
        yield address


def head_of(size: int) -> bytes:
    """A request whose head (request line, headers, blank line) is exactly `size` bytes."""
    start = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: "
    return start + b"a" * (size - len(start) - 4) + b"\r\n\r\n"


def status(where: tuple[str, int], pieces: list[bytes]) -> int:
    with socket.create_connection(where, timeout=10) as s:
        for piece in pieces:
            s.sendall(piece)
            time.sleep(0.001)
        answer = s.recv(65536)
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize("piece", [1, 3, 7, 4096], ids=lambda n: f"{n}-byte pieces")
def test_a_head_at_the_limit_passes_and_one_byte_more_gets_431(server: tuple[str, int], piece: int) -> None:
    for size, expected in ((LIMIT, 200), (LIMIT + 1, 431)):
        head = head_of(size)
        pieces = [head[i : i + piece] for i in range(0, len(head), piece)]
        assert status(server, pieces) == expected, (size, piece)


def test_requests_on_one_connection_are_counted_each_from_its_own_start(server: tuple[str, int]) -> None:
    with socket.create_connection(server, timeout=10) as s:
        for _ in range(3):
            s.sendall(head_of(LIMIT))
            assert s.recv(65536).startswith(b"HTTP/1.1 200")


def test_the_head_deadline_and_the_idle_timeout_hold_over_many_requests_on_one_connection() -> None:
    """Each deadline is one timer per connection, checked when it fires against the head or idleness then."""
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    with ok_listener(Limits(header_timeout_s=0.5, keep_alive_s=1)) as address:
        with socket.create_connection(address, timeout=5) as s:
            # Used every 0.3 s for 2.1 s: every head and every idle gap is within its bound.
            for _ in range(7):
                s.sendall(request)
                assert s.recv(65536).startswith(b"HTTP/1.1 200")
                time.sleep(0.3)
            # A head begun and left unfinished: 408 at its own deadline, not at an earlier head's.
            s.sendall(b"GET / HTTP/1.1\r\nHo")
            started = time.monotonic()
            assert s.recv(65536).startswith(b"HTTP/1.1 408")
            assert 0.4 < time.monotonic() - started < 1.0
        with socket.create_connection(address, timeout=5) as s:
            s.sendall(request)
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            assert s.recv(65536) == b""  # closed once idle for keep_alive_s, with no 408
            assert 0.9 < time.monotonic() - started < 2.0
