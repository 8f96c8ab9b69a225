"""The sender's shared reads: streams at one position share one read and one encoding of each batch."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Collection, Sequence

import orjson
import pytest

from bookstore.replication.tables.batches import EncodedBatch, SharedReads, encoded
from bookstore.replication.tables.model import LogEntry, LogRead, LogTrimmed, SnapshotPage
from bookstore.replication.tables.wire import entry_json
from tests.support.log_entries import cart_entry

AP, EU, US = "ap-southeast-1", "eu-west-1", "us-east-1"


def entry(seq: int, origin: str = AP) -> LogEntry:
    return cart_entry(seq, origin)


class Log:
    """A LogSource in memory that counts its reads; `gate`, when set, holds reads until it opens."""

    def __init__(self) -> None:
        self.entries: list[LogEntry] = []
        self.reads = 0
        self.trimmed_through = 0
        self.gate: threading.Event | None = None

    def write(self, origin: str = AP) -> None:
        self.entries.append(entry(len(self.entries) + 1, origin))

    def read_log(
        self,
        after: int,
        *,
        limit: int,
        tables: Collection[str] | None = None,
        exclude_origin: str | None = None,
        origins: Collection[str] | None = None,
        old_images: bool = True,
    ) -> LogRead:
        self.reads += 1
        if self.gate is not None:
            assert self.gate.wait(5.0)
        if after < self.trimmed_through:
            raise LogTrimmed(f"trimmed past {after}")
        scanned = self.entries[after : after + limit]
        kept = [e for e in scanned if e.origin != exclude_origin and (origins is None or e.origin in origins)]
        return LogRead(kept, scanned[-1].seq if scanned else after, self.head_seq())

    def head_seq(self) -> int:
        return len(self.entries)

    def snapshot(self, after: str | None, limit: int, tables: Collection[str] | None = None) -> SnapshotPage:
        raise NotImplementedError

    def record_ack(self, peer: str, seq: int) -> None:
        pass

    def add_listener(self, callback: Callable[[], None]) -> None:
        pass


def shared(
    log: Log, *, inline_rows: int = 64, max_batches: int = 32, max_bytes: int = 1 << 20
) -> SharedReads:
    return SharedReads(log, ("carts",), inline_rows=inline_rows, max_batches=max_batches, max_bytes=max_bytes)


async def after(
    reads: SharedReads,
    position: int,
    peer: str,
    origins: Sequence[str] | None = (AP,),
    wake: asyncio.Event | None = None,
    limit: int = 100,
) -> EncodedBatch:
    return await reads.after(position, peer=peer, origins=origins, limit=limit, wake=wake or asyncio.Event())


def seqs(batch: EncodedBatch) -> list[int]:
    return [e["seq"] for e in orjson.loads(batch.entries)]


def test_two_followers_at_one_position_get_the_same_bytes_from_one_read() -> None:
    log = Log()
    for _ in range(3):
        log.write()

    async def run() -> tuple[EncodedBatch, EncodedBatch, tuple[int, int]]:
        reads = shared(log)
        eu, us = await after(reads, 0, EU), await after(reads, 0, US)
        return eu, us, (reads.reads, reads.shared)

    eu, us, counted = asyncio.run(run())
    assert log.reads == 1 and counted == (1, 1)
    assert eu.line(7) == us.line(7) and seqs(eu) == [1, 2, 3]


def test_followers_waiting_on_a_read_on_a_thread_share_it() -> None:
    log = Log()
    for _ in range(10):
        log.write()
    log.gate = threading.Event()

    async def run() -> list[EncodedBatch]:
        reads = shared(log, inline_rows=2)  # ten rows behind: the read goes to a thread
        waiting = [asyncio.create_task(after(reads, 0, peer)) for peer in (EU, US, "sa-east-1")]
        await asyncio.sleep(0.05)  # all three are waiting on the one read the gate holds
        assert log.gate is not None
        log.gate.set()
        return list(await asyncio.gather(*waiting))

    batches = asyncio.run(run())
    assert log.reads == 1
    assert len({b.line(1) for b in batches}) == 1 and seqs(batches[0]) == list(range(1, 11))


def test_followers_asking_other_origins_or_at_other_positions_read_their_own() -> None:
    log = Log()
    for origin in (AP, US, AP, EU, AP):
        log.write(origin)

    async def run() -> dict[str, list[int]]:
        reads = shared(log)
        return {
            "eu relays us": seqs(await after(reads, 0, EU, (AP, US))),
            "us": seqs(await after(reads, 0, US, (AP,))),
            "eu, no origins": seqs(await after(reads, 0, EU, None)),
            "us, no origins": seqs(await after(reads, 0, US, None)),
            "us, later": seqs(await after(reads, 2, US, (AP,))),
        }

    got = asyncio.run(run())
    assert got == {
        "eu relays us": [1, 2, 3, 5],
        "us": [1, 3, 5],
        "eu, no origins": [1, 2, 3, 5],
        "us, no origins": [1, 3, 4, 5],
        "us, later": [3, 5],
    }
    assert log.reads == 5


def test_the_same_origins_asked_for_by_other_followers_share_a_read() -> None:
    log = Log()
    for origin in (AP, US, AP):
        log.write(origin)

    async def run() -> tuple[list[int], list[int]]:
        reads = shared(log)
        # A follower's own origin never comes back to it: these two keep the same origins (AP's).
        return seqs(await after(reads, 0, US, (AP, US))), seqs(await after(reads, 0, EU, (AP,)))

    assert asyncio.run(run()) == ([1, 3], [1, 3])
    assert log.reads == 1


def test_a_follower_behind_gets_every_change_once_in_order_while_the_others_keep_up() -> None:
    log = Log()

    async def run() -> dict[str, list[int]]:
        reads = shared(log, max_batches=2)  # the follower behind finds the batches it needs dropped
        got: dict[str, list[int]] = {EU: [], US: [], "sa-east-1": []}
        at = dict.fromkeys(got, 0)
        for round_ in range(40):
            log.write()
            log.write(EU)
            for peer in got:
                if peer == "sa-east-1" and round_ % 7:
                    continue  # a slow follower: it takes a batch now and then
                batch = await after(reads, at[peer], peer, (AP, EU))
                got[peer] += seqs(batch)
                at[peer] = batch.last_seq
        while at["sa-east-1"] < log.head_seq():
            batch = await after(reads, at["sa-east-1"], "sa-east-1", (AP, EU))
            got["sa-east-1"] += seqs(batch)
            at["sa-east-1"] = batch.last_seq
        return got

    got = asyncio.run(run())
    every = [e.seq for e in log.entries]
    assert got["sa-east-1"] == every
    assert got[EU] == [e.seq for e in log.entries if e.origin == AP]
    assert got[US] == every


def test_a_read_that_found_nothing_is_not_kept_once_the_wake_event_fires() -> None:
    log = Log()
    log.write()

    async def run() -> tuple[EncodedBatch, EncodedBatch, EncodedBatch]:
        reads = shared(log)
        wake = asyncio.Event()
        empty = await after(reads, 1, EU, wake=wake)
        # Nothing committed since (the wake event is not set): another stream here need not read.
        also_empty = await after(reads, 1, US, wake=wake)
        assert log.reads == 1
        log.write()
        wake.set()  # the feed's wake after the commit
        return empty, also_empty, await after(reads, 1, US, wake=asyncio.Event())

    empty, also_empty, then = asyncio.run(run())
    assert (empty.count, empty.last_seq, empty.head_seq) == (0, 1, 1)
    assert also_empty.line(5) == empty.line(5)
    assert seqs(then) == [2] and log.reads == 2


def test_at_most_the_bounds_are_kept_the_oldest_dropped_first() -> None:
    log = Log()
    for _ in range(10):
        log.write()

    async def run() -> SharedReads:
        reads = shared(log, max_batches=3)
        for position in range(10):
            await after(reads, position, EU)
        for position in range(7, 10):  # the three newest are still held
            await after(reads, position, US)
        assert log.reads == 10
        await after(reads, 0, US)  # dropped: read again
        assert log.reads == 11
        return reads

    asyncio.run(run())

    async def by_bytes() -> None:
        one = len(encoded(log.read_log(0, limit=1)).entries)  # a batch of one entry, as each below
        reads = shared(log, max_bytes=2 * one)
        for position in range(3):
            await after(reads, position, EU, limit=1)
        before = log.reads
        await after(reads, 2, US, limit=1)
        await after(reads, 1, US, limit=1)
        assert log.reads == before
        await after(reads, 0, US, limit=1)
        assert log.reads == before + 1

    asyncio.run(by_bytes())


def test_an_error_of_a_shared_read_reaches_every_follower_and_is_not_kept() -> None:
    log = Log()
    for _ in range(10):
        log.write()
    log.trimmed_through = 5
    log.gate = threading.Event()

    async def run() -> list[BaseException | EncodedBatch]:
        reads = shared(log, inline_rows=2)
        waiting = [asyncio.create_task(after(reads, 0, peer)) for peer in (EU, US)]
        await asyncio.sleep(0.05)
        assert log.gate is not None
        log.gate.set()
        outcomes = list(await asyncio.gather(*waiting, return_exceptions=True))
        log.trimmed_through = 0
        return [*outcomes, await after(reads, 0, EU)]

    eu, us, again = asyncio.run(run())
    assert isinstance(eu, LogTrimmed) and isinstance(us, LogTrimmed)
    assert isinstance(again, EncodedBatch) and seqs(again) == list(range(1, 11))
    assert log.reads == 2


def test_a_follower_that_goes_away_does_not_cancel_the_read_the_others_wait_for() -> None:
    log = Log()
    for _ in range(10):
        log.write()
    log.gate = threading.Event()

    async def run() -> EncodedBatch:
        reads = shared(log, inline_rows=2)
        leaving = asyncio.create_task(after(reads, 0, EU))
        staying = asyncio.create_task(after(reads, 0, US))
        await asyncio.sleep(0.05)
        leaving.cancel()
        await asyncio.sleep(0.01)
        assert log.gate is not None
        log.gate.set()
        return await staying

    assert seqs(asyncio.run(run())) == list(range(1, 11)) and log.reads == 1


def test_a_batch_s_line_is_the_stream_s_json_line() -> None:
    read = LogRead([entry(1), entry(2, EU)], last_seq=3, head_seq=9)
    payload = {"entries": [entry_json(e) for e in read.entries], "lastSeq": 3, "headSeq": 9, "nowMs": 12}
    assert encoded(read).line(12) == orjson.dumps(payload) + b"\n"


@pytest.mark.parametrize("inline_rows", [64, 0])
def test_a_batch_that_reached_the_head_is_handed_on_as_the_start_of_a_later_read(inline_rows: int) -> None:
    log = Log()
    log.write()

    async def run() -> tuple[list[int], list[int], list[int]]:
        reads = shared(log, inline_rows=inline_rows)
        first = await after(reads, 0, EU)
        log.write()  # a commit before the second follower comes to position 0
        second = await after(reads, 0, US)
        rest = await after(reads, second.last_seq, US)
        return seqs(first), seqs(second), seqs(rest)

    assert asyncio.run(run()) == ([1], [1], [2])


def test_a_read_that_ends_after_its_batch_was_dropped_and_read_again_keeps_the_count_of_bytes() -> None:
    log = Log()
    for _ in range(10):
        log.write()
    gate = log.gate = threading.Event()

    async def run() -> SharedReads:
        reads = shared(log, inline_rows=2, max_batches=1)
        first = asyncio.create_task(after(reads, 0, EU))  # on a thread, held by the gate
        await asyncio.sleep(0.02)
        gate.set()  # the later reads go through; the first is still on its way back
        await after(reads, 9, EU)  # inline: drops the first read's entry (one batch kept)
        again = asyncio.create_task(after(reads, 0, US))  # position 0 is read again
        await asyncio.gather(first, again)
        return reads

    reads = asyncio.run(run())
    held = [b for b in reads._held.values() if isinstance(b, EncodedBatch)]
    assert reads._bytes == sum(len(b.entries) for b in held) and len(held) <= 1
