"""The log's batches as the follow streams send them: read and encoded once for every stream at one position.

A region followed by N peers had each stream read the log after its position and encode the batch it
found, so every write was read and encoded N times: the sender's cost per write grew with the number of
regions. Streams that stand at the same position and ask for the same changes (every follower caught
up, the common case) now share one read and one encoding of each batch; a follower that is behind, or
asks for other origins, reads on its own as before.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Final

import orjson

from bookstore.replication.tables.model import LogRead
from bookstore.replication.tables.ports import LogSource
from bookstore.replication.tables.wire import entry_json

# Batches kept for streams that come to the same position: the streams caught up take each batch within
# one pass of the loop, so a few suffice; a follower that comes later reads for itself. Both bounds hold
# (the bytes too: a backlog's batch of 2,000 entries is a few MB).
MAX_BATCHES: Final = 32
MAX_BYTES: Final = 32 * 1024 * 1024


@dataclass(frozen=True)
class EncodedBatch:
    """One read of the log, its entries already encoded: the JSON array, how many, and its positions."""

    entries: bytes
    count: int
    # The seq of the last row scanned (kept or filtered out); the position asked for when none was.
    last_seq: int
    # The log's head when the batch was read.
    head_seq: int
    # The feed's wake event taken before the read began (ChangeFeed.current()), when known: a stream
    # holding the same one, still unset, knows nothing was committed since the read (see `caught_up`).
    read_under: object = None

    def caught_up(self, wake: object) -> bool:
        """True when the batch reached the log's head and nothing was committed since it was read, as
        `wake` (taken before asking for the batch) tells: reading again now would find nothing."""
        return self.last_seq >= self.head_seq and self.read_under is wake

    def line(self, now_ms: int) -> bytes:
        """The stream's line for this batch, with the sender's clock (each stream's own, when it sends)."""
        return b'{"entries":%b,"lastSeq":%d,"headSeq":%d,"nowMs":%d}\n' % (
            self.entries,
            self.last_seq,
            self.head_seq,
            now_ms,
        )


def encoded(read: LogRead, read_under: object = None) -> EncodedBatch:
    """A read with its entries encoded (ms for a batch of thousands: the caller picks the thread);
    `read_under`: the feed's wake event taken before the read began."""
    entries = orjson.dumps([entry_json(e) for e in read.entries])
    return EncodedBatch(entries, len(read.entries), read.last_seq, read.head_seq, read_under)


# What a read returns besides its position: the most entries it scans, and the origins it keeps (a
# frozenset of origins, or every origin but one). Reads with equal keys return the same rows.
_Filter = tuple[int, frozenset[str] | str]


class SharedReads:
    """Batches of the log after a position, read and encoded once for every stream asking alike.

    Contract:
    - `after` returns what `LogSource.read_log(position, limit=..., tables=..., exclude_origin=peer,
      origins=..., old_images=False)` would, encoded: the entries after `position`, in log order, of
      the origins asked for; `last_seq` passes the rows filtered out. A follower resuming after each
      batch's `last_seq` gets every change it asks for once, in order, whichever reads it shared.
    - Calls for the same position and the same filter (the effective set of origins, and the limit)
      share one read and one encoding, also while that read runs on a thread; a batch that reached the
      head may be handed on a little later while more rows came: it is still the start of what a new
      read would return, and the next batch brings the rest.
    - A read that found nothing after the position is not kept (new rows may come at any time); but
      while the feed's wake event taken before it is not set, nothing was committed since, so others
      at that position wait without reading again (`wake`: ChangeFeed.current(), set after any commit).
    - At most MAX_BATCHES batches and MAX_BYTES are kept, the oldest dropped first: a follower behind
      reads for itself, and nobody waits for another stream's follower to take its lines.
    - Errors of the read (LogTrimmed, StorageError) reach every caller that shared it; none is kept.
    """

    def __init__(
        self,
        store: LogSource,
        tables: Collection[str],
        *,
        inline_rows: int,
        max_batches: int = MAX_BATCHES,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self._store = store
        self._tables = tuple(tables)
        self._inline_rows = inline_rows
        self._max_batches = max_batches
        self._max_bytes = max_bytes
        self._held: OrderedDict[tuple[int, _Filter], EncodedBatch | asyncio.Future[EncodedBatch]] = (
            OrderedDict()
        )
        self._bytes = 0
        # The position where a read last found nothing, the wake event taken before it, and the head then.
        self._idle: tuple[int, asyncio.Event, int] | None = None
        # Reads made and batches handed on without one: the figures the tests and benches look at.
        self.reads = 0
        self.shared = 0

    async def after(
        self,
        position: int,
        *,
        peer: str,
        origins: Sequence[str] | None,
        limit: int,
        wake: asyncio.Event,
    ) -> EncodedBatch:
        """The batch after `position` for follower `peer` (see the class's contract)."""
        idle = self._idle
        if idle is not None and idle[0] == position and idle[1] is wake and not wake.is_set():
            self.shared += 1
            return EncodedBatch(b"[]", 0, position, idle[2])
        key = (position, _filter(peer, origins, limit))
        held = self._held.get(key)
        if held is not None:
            self.shared += 1
            return held if isinstance(held, EncodedBatch) else await asyncio.shield(held)
        self.reads += 1

        def read() -> EncodedBatch:
            # The follower re-derives old images from its own state: they need not cross the link.
            return encoded(
                self._store.read_log(
                    position,
                    limit=limit,
                    tables=self._tables,
                    exclude_origin=peer,
                    origins=origins,
                    old_images=False,
                ),
                wake,
            )

        # A batch of at most inline_rows rows is read and encoded on the loop: a hop to a thread and back
        # costs more than that work does; a larger one (a backlog) must not hold up the API.
        if self._store.head_seq() - position <= self._inline_rows:
            batch = read()
            self._settled(key, batch, wake)
            return batch
        running = asyncio.ensure_future(asyncio.to_thread(read))
        self._keep(key, running)
        running.add_done_callback(lambda done: self._settled(key, done, wake))
        # Shielded: a stream that goes away must not cancel the read the others wait for.
        return await asyncio.shield(running)

    def _settled(
        self,
        key: tuple[int, _Filter],
        outcome: EncodedBatch | asyncio.Future[EncodedBatch],
        wake: asyncio.Event,
    ) -> None:
        if isinstance(outcome, asyncio.Future):
            if self._held.get(key) is outcome:
                del self._held[key]
            if outcome.cancelled() or outcome.exception() is not None:
                return
            outcome = outcome.result()
        if outcome.last_seq == key[0]:
            self._idle = (key[0], wake, outcome.head_seq)
        else:
            self._keep(key, outcome)

    def _keep(self, key: tuple[int, _Filter], held: EncodedBatch | asyncio.Future[EncodedBatch]) -> None:
        # A read that ended after its key was dropped, and read again meanwhile, replaces the other.
        replaced = self._held.pop(key, None)
        if isinstance(replaced, EncodedBatch):
            self._bytes -= len(replaced.entries)
        size = len(held.entries) if isinstance(held, EncodedBatch) else 0
        if size > self._max_bytes:
            return
        self._held[key] = held
        self._bytes += size
        while self._held and (len(self._held) > self._max_batches or self._bytes > self._max_bytes):
            _, dropped = self._held.popitem(last=False)
            if isinstance(dropped, EncodedBatch):
                self._bytes -= len(dropped.entries)


def _filter(peer: str, origins: Sequence[str] | None, limit: int) -> _Filter:
    """The read's key besides its position: reads that keep the same origins return the same rows."""
    # A peer's own changes never go back to it: without `origins` it gets every other origin's.
    return (limit, peer if origins is None else frozenset(origins) - {peer})
