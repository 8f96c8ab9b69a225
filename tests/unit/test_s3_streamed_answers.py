"""S3 answers streamed from the store: some MiB per worker-thread hop, no hop to find the end, closed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from bookstore.objectstore import objects
from bookstore.objectstore.objects import HOP_BYTES, streamed

MIB = 1024 * 1024


class Body:
    """A stored body's reader: counts the pieces asked for and the threads they were asked in."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = iter(pieces)
        self.asked = 0
        self.threads: set[int] = set()
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        assert not self.closed
        self.threads.add(threading.get_ident())
        piece = next(self.pieces, None)
        if piece is None:
            raise AssertionError("asked for a piece past the announced length")
        self.asked += 1
        return piece

    def close(self) -> None:
        self.closed = True


def collect(body: Body, length: int) -> bytes:
    async def run() -> bytes:
        return b"".join([piece async for piece in streamed(body, length)])

    return asyncio.run(run())


def test_every_piece_in_order_then_closed_without_asking_past_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hops: list[int] = []
    real = objects._take

    def counted(pieces: Iterator[bytes], want: int) -> list[bytes]:
        hops.append(want)
        return real(pieces, want)

    monkeypatch.setattr(objects, "_take", counted)
    pieces = [bytes([n]) * MIB for n in range(8)] + [b"tail"]
    body = Body(pieces)
    assert collect(body, 8 * MIB + 4) == b"".join(pieces)
    # 8 MiB and 4 bytes: three hops of at most HOP_BYTES each, none more to learn that the body ended.
    assert hops == [HOP_BYTES, HOP_BYTES, 4] and body.asked == len(pieces)
    assert body.closed and threading.get_ident() not in body.threads


def test_a_consumer_that_stops_early_closes_the_body() -> None:
    body = Body([b"x" * MIB for _ in range(12)])

    async def first_piece() -> bytes:
        answer = streamed(body, 12 * MIB)
        piece = await anext(answer)
        await answer.aclose()
        return piece

    assert asyncio.run(first_piece()) == b"x" * MIB
    assert body.closed and body.asked == HOP_BYTES // MIB


def test_an_empty_answer_takes_no_hop_and_closes() -> None:
    body = Body([])
    assert collect(body, 0) == b""
    assert body.closed and body.asked == 0
