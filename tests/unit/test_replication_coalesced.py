"""A follower merges the lines of a stream that arrived while it applied the last batch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bookstore.replication.tables.model import LogEntry, LogRead
from bookstore.replication.tables.replicator import coalesced
from tests.support.log_entries import cart_entry


def entry(seq: int) -> LogEntry:
    return cart_entry(seq, "eu-west-1")


def line(seq: int, head: int, entries: int = 1) -> LogRead:
    return LogRead(
        entries=[entry(s) for s in range(seq - entries + 1, seq + 1)],
        last_seq=seq,
        head_seq=head,
        sent_ms=seq,
    )


async def lines(reads: list[LogRead | Exception], arrived: asyncio.Event) -> AsyncIterator[LogRead]:
    for read in reads:
        if isinstance(read, Exception):
            raise read
        yield read
    arrived.set()


def test_lines_that_arrived_while_a_batch_was_applied_come_as_one_read() -> None:
    async def stream(applying: asyncio.Event, arrived: asyncio.Event) -> AsyncIterator[LogRead]:
        yield line(1, 10)
        await applying.wait()  # the rest arrive while the first line is applied
        for seq in range(2, 11):
            yield line(seq, 10)
        arrived.set()

    async def run() -> list[LogRead]:
        applying, arrived = asyncio.Event(), asyncio.Event()
        got: list[LogRead] = []
        async for read in coalesced(stream(applying, arrived), limit=100):
            got.append(read)
            applying.set()
            await arrived.wait()  # a slow apply
        return got

    got = asyncio.run(run())
    assert [r.last_seq for r in got] == [1, 10]
    assert [e.seq for e in got[1].entries] == list(range(2, 11))
    assert got[1].head_seq == 10 and got[1].sent_ms == 10


def test_a_merged_read_holds_at_most_the_limit() -> None:
    async def run() -> list[LogRead]:
        arrived = asyncio.Event()
        reads = [line(s * 3, 30, entries=3) for s in range(1, 11)]
        got: list[LogRead] = []
        async for read in coalesced(lines(reads, arrived), limit=7):  # type: ignore[arg-type]
            got.append(read)
            await arrived.wait()
        return got

    got = asyncio.run(run())
    assert all(len(r.entries) <= 7 for r in got)
    assert [e.seq for r in got for e in r.entries] == list(range(1, 31))  # nothing lost, nothing twice


def test_an_error_of_the_stream_comes_after_the_lines_before_it() -> None:
    async def run() -> list[int]:
        arrived = asyncio.Event()
        seen: list[int] = []
        reads: list[LogRead | Exception] = [line(1, 3), line(2, 3), ConnectionResetError("link cut")]
        with pytest.raises(ConnectionResetError):
            async for read in coalesced(lines(reads, arrived), limit=100):
                seen.extend(e.seq for e in read.entries)
                await asyncio.sleep(0.01)
        return seen

    assert asyncio.run(run()) == [1, 2]


def test_lines_queued_behind_a_slow_apply_are_bounded_by_entries_not_only_by_lines() -> None:
    """A catch-up's lines carry up to 2,000 entries each: 64 of them queued were 128,000 parsed entries
    held while one batch applied (a region draining 1M changes grew to 552 MiB)."""
    from bookstore.replication.tables.replicator import QUEUED_ENTRIES

    read_ahead: list[int] = []

    async def run() -> None:
        produced = consumed = 0

        async def stream() -> AsyncIterator[LogRead]:
            nonlocal produced
            for n in range(1, 121):
                produced += 2000
                yield line(n * 2000, 240_000, entries=2000)

        async for read in coalesced(stream(), limit=10_000):
            await asyncio.sleep(0.01)  # a slow apply: the stream runs ahead as far as it is let
            read_ahead.append(produced - consumed - len(read.entries))
            consumed += len(read.entries)

    asyncio.run(run())
    # What waits besides the batch being applied: at most the bound and the one line read past it.
    assert max(read_ahead) <= QUEUED_ENTRIES + 2000
