"""Multi-master table replication: each region follows every peer's change log and applies newer versions.

Following is a streaming long-poll: a region asks a peer for its log after a checkpoint and the peer
answers with a stream of NDJSON batches as its log grows (heartbeats while idle), so a change crosses
the link once, one one-way delay after it was written, instead of waiting for the next poll. Applying a
batch and storing the peer's checkpoint happen in one transaction, so a crash at any instant neither
loses nor repeats a change. A region that never followed a peer, or fell behind its trimmed log,
backfills from a snapshot first. Anti-entropy compares digests of key buckets and repairs both sides.

A change stamped more than `max_clock_offset_ms` ahead of this region's wall clock (or any change from a
peer whose clock runs that far ahead) is not applied and does not move the hybrid clock: the region stops
following that peer, says so with the offset (status, metrics), and resumes by itself once the offset is
back within the bound. Nothing is skipped: the stream resumes at the held change.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bookstore.kernel.clock import HybridLogicalClock
from bookstore.ports import Clock, Key
from bookstore.replication.tables.digests import LEAVES
from bookstore.replication.tables.model import (
    ApplyResult,
    ClockRefusal,
    LogEntry,
    LogRead,
    LogTrimmed,
    SnapshotPage,
    Version,
    ahead_ms,
    within_bound,
)
from bookstore.replication.tables.ports import ReplicatorStore

log = logging.getLogger("bookstore.replication")

LAG_WINDOW_MS = 60_000
RECENT_LAG_MS = 2_000
CHECKPOINT_EVERY_MS = 1_000
# How often a follower tells the peer how far it holds the peer's log (the peer trims only below every
# follower's acknowledgement); streams stay open for long, so this cannot wait for the next one.
ACK_EVERY_MS = 10_000
# The default bound on a peer's clock offset (the topology's replication.max_clock_offset_ms).
MAX_CLOCK_OFFSET_MS = 500
# How often a peer not followed for its clock is asked again whether its offset is back within bound.
CLOCK_RECHECK_S = 1.0
# A peer's measured clock offset counts for the clock ceiling this long (streams carry one a second).
OFFSET_FRESH_MS = 5_000
# A repair compares the keys and versions of this many differing leaves per batch (one apply, one push),
# asking the peer for at most REPAIR_FETCHES leaves at once: round trips overlap on a slow link.
REPAIR_LEAVES = 64
REPAIR_FETCHES = 16
# A repair asks for a whole bucket of REPAIR_SPAN when at least REPAIR_SPAN_LEAVES of its leaves differ.
REPAIR_SPAN = 64
REPAIR_SPAN_LEAVES = 16
# Anti-entropy with a peer waits while the logs are still delivering a backlog between the two: while
# this region is more than CATCHING_UP_PENDING entries behind the peer's log (known exactly from the
# stream), or the peer acknowledged ours more than CATCHING_UP_ACKED behind its head (acknowledgements
# come every ACK_EVERY_MS, so this bound is loose enough for a steady 5,000 writes/s). A round then
# would list and exchange the whole backlog a second time, beside the stream.
CATCHING_UP_PENDING = 4_000
CATCHING_UP_ACKED = 50_000
# A region's changes come from it, not relayed by every other peer too (which would apply each write
# N-1 times in N regions); a peer relays a third region's only while this region cannot follow that one.
# When one is lost, the streams from the others start again REWIND_MARGIN_S before it was last heard
# (their checkpoints are sampled every MARK_EVERY_S, for REWIND_WINDOW_S): its changes that reached them
# while this region still expected them directly are read again, not left to anti-entropy.
MARK_EVERY_S = 1.0
REWIND_MARGIN_S = 5.0
REWIND_WINDOW_S = 300.0
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.3, 0.5, 1, 2, 5, 10, 30)


def _key_id(key: Key) -> tuple[Any, ...]:
    """A key as a comparable value: 1 and 1.0 compare equal, as SQLite holds them as one key.

    Its values in order: every store lists a key's attributes in its schema's order, and the wire
    keeps that order.
    """
    return tuple(key.values())


# Told of each batch applied: (source region, entries applied, start and end in ns since the epoch).
AppliedHook = Callable[[str, Sequence[LogEntry], int, int], None]


class Peer(Protocol):
    """How a region reaches one peer's replication feed: over HTTP through the link, or in-process."""

    region: str

    def follow(self, after: int, origins: Sequence[str] | None = None) -> AsyncGenerator[LogRead, None]:
        """Batches of the peer's log after `after`, as they are written; raises LogTrimmed when behind.

        Only changes of `origins` when given (the last_seq of each batch still passes the others)."""
        ...

    async def snapshot(self, after: str | None, limit: int) -> SnapshotPage: ...

    async def digest(self, table: str, buckets: int, before: int | None = None) -> list[str]:
        """Bucket digests of the peer's items and tombstones (only versions below `before` when given)."""
        ...

    async def bucket(self, table: str, bucket: int, buckets: int) -> list[LogEntry]: ...

    async def bucket_versions(self, table: str, bucket: int, buckets: int) -> list[tuple[Key, Version]]:
        """The key and version of each item and tombstone of one of the peer's buckets."""
        ...

    async def entries(self, table: str, keys: Sequence[Key]) -> list[LogEntry]:
        """The peer's entries of `keys` (those it holds)."""
        ...

    async def push(self, entries: list[LogEntry]) -> list[LogEntry]:
        """Apply `entries` at the peer, in as many requests as its body limit needs; returns those not
        sent, each alone too large for any request."""
        ...

    async def ack(self, seq: int) -> None:
        """Tell the peer this region holds its log up to `seq`, so it may trim before it."""
        ...

    async def aclose(self) -> None: ...


class PeerClockAhead(Exception):
    """A peer's clock, or a change it sent, is further ahead of ours than the bound: not followed."""

    def __init__(self, peer: str, offset_ms: int, what: str) -> None:
        super().__init__(f"{what} is {offset_ms} ms ahead of this region's clock")
        self.peer = peer
        self.offset_ms = offset_ms
        self.what = what


@dataclass
class LagWindow:
    """Replication lag samples of the last minute per origin, for p50/p99 in `status`.

    Kept in the batches they were added in, (time, lags): a catch-up adds tens of thousands a second,
    and a (time, lag) tuple each was a tenth of a microsecond and about 60 bytes a sample for a minute.
    """

    window_ms: int = LAG_WINDOW_MS
    samples: dict[str, deque[tuple[int, list[int]]]] = field(default_factory=dict)

    def add(self, origin: str, now_ms: int, lag_ms: int) -> None:
        self.add_all(origin, now_ms, [lag_ms])

    def add_all(self, origin: str, now_ms: int, lags_ms: list[int]) -> None:
        """Lags measured at `now_ms`, in the order of their changes (the last is the newest)."""
        if not lags_ms:
            return
        q = self.samples.setdefault(origin, deque())
        q.append((now_ms, lags_ms))
        while q and q[0][0] < now_ms - self.window_ms:
            q.popleft()

    def summary(self, now_ms: int) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for origin, q in self.samples.items():
            lags = sorted(lag for t, batch in q if t >= now_ms - self.window_ms for lag in batch)
            if lags:
                out[origin] = {
                    "p50Ms": float(_percentile(lags, 0.50)),
                    "p99Ms": float(_percentile(lags, 0.99)),
                    "count": float(len(lags)),
                }
                if q[-1][0] >= now_ms - RECENT_LAG_MS:
                    # The newest change's lag, while it is news: what a timeline shows (the
                    # percentiles trail a minute behind).
                    out[origin]["lastMs"] = float(q[-1][1][-1])
        return out


def observe_all(histogram: Any, ordered: Sequence[float]) -> None:
    """`histogram.observe(value)` for each of `ordered` (ascending), one increment per bucket.

    A catch-up applies tens of thousands of changes a second, and observe() walks the buckets for each
    (a lag of seconds passes all but the last ones): about 1 us a change. This counts each bucket's
    share with a binary search instead, through the histogram's value holders; a histogram without
    them (another client library's version) is observed one value at a time.
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in ordered:
            histogram.observe(value)
        return
    counted = 0
    for bound, bucket in zip(bounds, buckets, strict=True):
        # observe() counts a value in the first bucket whose bound it does not exceed.
        upto = bisect.bisect_right(ordered, bound)
        if upto > counted:
            bucket.inc(upto - counted)
            counted = upto
    if ordered:
        total.inc(math.fsum(ordered))


def _percentile(ordered: list[int], q: float) -> int:
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


class ReplicationMetrics:
    """Prometheus figures of one region's replication."""

    def __init__(self, registry: CollectorRegistry, region: str) -> None:
        self.region = region
        self.lag = Histogram(
            "bookstore_replication_lag_seconds",
            "Apply time minus the write's physical time at its origin",
            ["source", "destination"],
            registry=registry,
            buckets=LAG_BUCKETS,
        )
        self.applied = Counter(
            "bookstore_replication_applied", "Changes applied from peers", ["source"], registry=registry
        )
        self.skipped = Counter(
            "bookstore_replication_skipped", "Changes received but not newer", ["source"], registry=registry
        )
        self.conflicts = Counter(
            "bookstore_replication_conflicts", "Concurrent writes detected", registry=registry
        )
        self.pending = Gauge(
            "bookstore_replication_pending_changes",
            "Entries of a peer's log not yet received",
            ["source", "destination"],
            registry=registry,
        )
        self.repaired = Counter(
            "bookstore_replication_repaired", "Entries repaired by anti-entropy", ["peer"], registry=registry
        )
        self.too_large = Counter(
            "bookstore_replication_push_too_large",
            "Versions anti-entropy cannot push to the peer, each alone over its request body limit",
            ["peer"],
            registry=registry,
        )
        self.backfills = Counter(
            "bookstore_replication_backfills", "Snapshot backfills from a peer", ["source"], registry=registry
        )
        self.followed = Gauge(
            "bookstore_replication_peer_followed",
            "1 while this region applies the peer's changes; 0 while it holds them (clock too far ahead)",
            ["peer"],
            registry=registry,
        )
        self.clock_offset = Gauge(
            "bookstore_replication_peer_clock_offset_seconds",
            "How far the peer's clock (or the change held back) is ahead of this region's, as last measured",
            ["peer"],
            registry=registry,
        )
        self.held_back = Counter(
            "bookstore_replication_held_back",
            "Changes not applied because their time was too far ahead of this region's clock",
            ["source"],
            registry=registry,
        )


# Lines of a stream received while the previous batch was being applied, queued at most this many.
QUEUED_READS = 64
# A follower behind applies up to this many queued entries in one transaction. Each row written moves a
# page of the key-hash index at random, and a commit writes every page it dirtied: in 10,000 rows many
# share a page, so a catch-up writes fewer pages per row than in batches of one line (2,000). The write
# lock is held about 0.2 s meanwhile, only while lines are queued (a backlog).
CATCH_UP_BATCH = 10_000
# Queued lines hold at most about this many entries as well: a catch-up's lines carry up to 2,000 each,
# and 64 of them parsed held a region draining 1M changes at 552 MiB. Two batches ahead keep it fed.
QUEUED_ENTRIES = 2 * CATCH_UP_BATCH


class _KeyIndexDeferral:
    """One catch-up's request that the store leave its key-hash indexes out until it is done.

    Asked once, when a stream or a snapshot has a backlog (CATCH_UP_BATCH or more still to come), so a
    caught-up stream pays nothing; given back when little is left, or when the catch-up ends any way.
    """

    def __init__(self, store: ReplicatorStore, holder: str) -> None:
        self.store = store
        self.holder = holder
        self.asked = False
        self.deferred = False

    async def coming(self, entries: int) -> None:
        """About `entries` entries are still to apply, from the next batch on."""
        if entries >= CATCH_UP_BATCH:
            if not self.asked:
                self.asked = True
                self.deferred = await asyncio.to_thread(self.store.defer_key_index, self.holder, entries)
                if self.deferred:
                    log.info(
                        "%s: about %d entries to apply, without the key-hash indexes", self.holder, entries
                    )
        elif self.asked:
            await self.done()

    async def done(self, *, held: bool = False) -> None:
        """The catch-up is done; `held`: the holder may have deferred the indexes before this one."""
        deferred, self.asked, self.deferred = self.deferred or held, False, False
        if deferred:
            started = time.monotonic()
            if await asyncio.to_thread(self.store.restore_key_index, self.holder):
                log.info(
                    "%s: the key-hash indexes built again in %.1f s", self.holder, time.monotonic() - started
                )

    async def ended(self) -> None:
        """The catch-up ended (an error, a closed stream): `done`, without hiding why it ended."""
        try:
            await self.done()
        except Exception as exc:  # the indexes are built again by the next catch-up's end, or a restart
            log.warning("could not build the key-hash indexes again: %s: %s", type(exc).__name__, exc)


async def coalesced(reads: AsyncIterator[LogRead], limit: int) -> AsyncGenerator[LogRead, None]:
    """The reads of a stream, those that arrived while the last one was applied merged into one.

    A peer sends a line as soon as it has a change, so at a few hundred writes/s most lines hold one
    entry; applying each in a transaction of its own caps a follower at its commits per second, and
    behind that cap a lag that grows for good. Lines are read on (a task) while a batch is applied,
    and whatever is waiting when the next is wanted is applied at once, up to `limit` entries: one
    transaction when behind, no waiting when not.
    """
    end = object()  # the stream ended
    queue: asyncio.Queue[object] = asyncio.Queue(QUEUED_READS)
    # Entries queued and not yet taken; the pump waits for room while they are QUEUED_ENTRIES or more.
    queued = 0
    room = asyncio.Event()
    room.set()

    def taken(item: object) -> object:
        nonlocal queued
        if isinstance(item, LogRead):
            queued -= len(item.entries)
            room.set()
        return item

    async def pump() -> None:
        nonlocal queued
        try:
            async for read in reads:
                while queued >= QUEUED_ENTRIES:
                    room.clear()
                    await room.wait()
                queued += len(read.entries)
                await queue.put(read)
            await queue.put(end)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # passed to the reader in order, after what came before it
            await queue.put(exc)

    task = asyncio.create_task(pump())
    try:
        item = taken(await queue.get())
        while item is not end:
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, LogRead)
            merged = item
            item = None
            while len(merged.entries) < limit and not queue.empty():
                more = taken(queue.get_nowait())
                if not isinstance(more, LogRead) or len(merged.entries) + len(more.entries) > limit:
                    item = more  # the end, an error, or a read for the next batch
                    break
                merged = LogRead(
                    entries=merged.entries + more.entries,
                    last_seq=more.last_seq,
                    head_seq=more.head_seq,
                    sent_ms=more.sent_ms,
                )
            yield merged
            if item is None:
                item = taken(await queue.get())
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


class Replicator:
    """Keeps one region's tables converged with every peer's."""

    def __init__(
        self,
        store: ReplicatorStore,
        region: str,
        peers: Sequence[Peer],
        *,
        clock: Clock,
        metrics: ReplicationMetrics,
        snapshot_page: int = 2000,
        anti_entropy_s: float = 30.0,
        anti_entropy_settle_ms: int = 0,
        digest_buckets: int = 64,
        trim_every_s: float = 60.0,
        retention_ms: int = 3_600_000,
        tables: Collection[str] = (),
        active_peers: Collection[str] = (),
        max_clock_offset_ms: int = MAX_CLOCK_OFFSET_MS,
        on_applied: AppliedHook | None = None,
    ) -> None:
        """`on_applied(source, entries, start_ns, end_ns)` is told of each batch applied (tracing)."""
        self.store = store
        self.on_applied = on_applied
        self.region = region
        self.peers = list(peers)
        self.clock = clock
        self.metrics = metrics
        self.snapshot_page = snapshot_page
        self.anti_entropy_s = anti_entropy_s
        self.anti_entropy_settle_ms = anti_entropy_settle_ms
        self.digest_buckets = digest_buckets
        self.trim_every_s = trim_every_s
        self.retention_ms = retention_ms
        self.tables = tuple(tables)
        self.active_peers = set(active_peers)
        self.lags = LagWindow()
        self.pending: dict[str, int] = {}
        self.connected: dict[str, bool] = {p.region: False for p in self.peers}
        self.max_clock_offset_ms = max_clock_offset_ms
        # Each peer's clock minus ours (ms), as last measured from its stream (a one-way delay low).
        self.clock_offsets: dict[str, int] = {}
        # Peers not followed now because of their clock: the offset and what was ahead, since when.
        self.held: dict[str, dict[str, Any]] = {}
        # When each offset was measured (local wall clock), for the ceiling's fresh measurements only.
        self._measured_at: dict[str, int] = {}
        # The ceiling's reference offset, kept with the measurements it was taken from (their count) and
        # the span of local times [low, high) in which the same ones are fresh: every local write asks
        # (clock_ceiling), and sorting the offsets each time cost a write about 2 us.
        self._measurements = 0
        self._reference: tuple[int, int, int, int] = (-1, 0, 0, 0)
        store.cap_clock(self.clock_ceiling)
        for p in self.peers:
            self.metrics.followed.labels(p.region).set(1)
        self._backfilling = asyncio.Lock()
        # Per peer: the third regions it relays to us now, when we last heard from it (monotonic), and
        # samples of our checkpoint of its log (monotonic time, seq) to rewind to when one is lost.
        self.relays: dict[str, tuple[str, ...]] = {}
        self._heard: dict[str, float] = {}
        self._marks: dict[str, deque[tuple[float, int]]] = {}
        # Per peer: the versions (table, key, version) no push can carry to it, each alone over its body
        # limit; a repair leaves them out rather than find, read and refuse them again every round.
        self._too_large: dict[str, set[tuple[str, tuple[Any, ...], Version]]] = {}
        # Test-only fault (drills prove they catch it): receive changes but never apply them.
        self.apply_paused = False

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [
            asyncio.create_task(self._follow_forever(p, stop), name=f"follow-{p.region}") for p in self.peers
        ]
        tasks += [asyncio.create_task(self._every(self.anti_entropy_s, self._anti_entropy_all, stop))]
        tasks += [asyncio.create_task(self._every(self.trim_every_s, self._trim, stop))]
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for peer in self.peers:
            await peer.aclose()

    async def _follow_forever(self, peer: Peer, stop: asyncio.Event) -> None:
        backoff = 0.05
        while not stop.is_set():
            try:
                if not await self.follow_once(peer):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=CLOCK_RECHECK_S)
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a peer down or a link cut: retry with backoff, never give up
                if self.connected.get(peer.region):
                    log.warning("lost %s: %s: %s", peer.region, type(exc).__name__, exc)
                self.connected[peer.region] = False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=backoff)
                backoff = min(backoff * 2, 1.0)

    async def follow_once(self, peer: Peer) -> bool:
        """One stream from `peer`; False when it stopped at a clock too far ahead (the peer is held)."""
        try:
            await self.follow(peer)
        except PeerClockAhead as exc:
            self._hold(exc)
            return False
        except ClockRefusal as exc:
            # Refused for our request's timestamp: the clocks are further apart than the signed requests'
            # window. The refusal says the peer's time, which is all the clock bound needs.
            offset = self._measure(peer.region, exc.sent_ms)
            if offset > self.max_clock_offset_ms:
                self._hold(PeerClockAhead(peer.region, offset, f"{peer.region}'s clock"))
                return False
            raise
        return True

    async def follow(self, peer: Peer) -> None:
        """Follow one peer's log until its stream ends; backfill first when we have no checkpoint."""
        checkpoint = self.store.checkpoint(peer.region)
        if checkpoint is None:
            # One backfill at a time: the first may bring the checkpoints of the others (see backfill).
            async with self._backfilling:
                checkpoint = self.store.checkpoint(peer.region)
                if checkpoint is None:
                    checkpoint = await self.backfill(peer)
        relays = self._relays_wanted(peer.region)
        start = self._rewound(peer.region, checkpoint, relays)
        try:
            await self._stream(peer, start, relays)
        except LogTrimmed:
            if start < checkpoint:
                # The peer trimmed the part to read again: what it relayed there is anti-entropy's now.
                log.info(
                    "%s trimmed its log before seq %d; following from %d", peer.region, start, checkpoint
                )
                await self._stream(peer, checkpoint, relays)
            else:
                log.warning("fell behind %s's trimmed log; re-syncing from a snapshot", peer.region)
                await self.backfill(peer)

    def _relays_wanted(self, source: str) -> tuple[str, ...]:
        """The third regions whose changes `source` should relay to us: those we cannot follow now.

        Not one held for its clock: its changes would hold this stream too."""
        return tuple(
            sorted(
                p.region
                for p in self.peers
                if p.region != source and not self.connected.get(p.region) and p.region not in self.held
            )
        )

    def _rewound(self, source: str, checkpoint: int, relays: tuple[str, ...]) -> int:
        """Where to read `source`'s log from: earlier than `checkpoint` when it is to relay a region it
        did not relay before, so that region's changes it logged since we last heard that one come too."""
        added = set(relays) - set(self.relays.get(source, ()))
        marks = self._marks.get(source)
        if not added or not marks:
            return checkpoint
        since = min(self._heard.get(region, 0.0) for region in added) - REWIND_MARGIN_S
        before = [seq for at, seq in marks if at <= since]
        return min(checkpoint, before[-1] if before else marks[0][1])

    def _mark(self, source: str, seq: int) -> None:
        marks = self._marks.setdefault(source, deque())
        now = time.monotonic()
        if marks and now - marks[-1][0] < MARK_EVERY_S:
            return
        marks.append((now, seq))
        while now - marks[0][0] > REWIND_WINDOW_S and len(marks) > 1:
            marks.popleft()

    async def _stream(self, peer: Peer, checkpoint: int, relays: tuple[str, ...]) -> None:
        """Apply one stream of `peer`'s log from `checkpoint`, its own changes and those of `relays`;
        it ends (to be opened again) when the regions this region cannot reach change."""
        acks: set[asyncio.Task[None]] = set()
        acked, acked_at = checkpoint, self.clock.now_ms()
        self.relays[peer.region] = relays
        if relays:
            log.info("%s relays %s's changes: not reached directly", peer.region, ", ".join(relays))
        stored = checkpoint
        stored_at = self.clock.now_ms()
        deferral = _KeyIndexDeferral(self.store, peer.region)
        async with (
            contextlib.AsyncExitStack() as cleanup,
            contextlib.aclosing(peer.follow(checkpoint, (peer.region, *relays))) as stream,
            # Closed first, whatever ends the loop: its reading task ends before the stream is closed.
            contextlib.aclosing(coalesced(stream, CATCH_UP_BATCH)) as reads,
        ):
            cleanup.push_async_callback(deferral.ended)
            async for read in reads:
                self._heard[peer.region] = time.monotonic()
                if not self.connected.get(peer.region):
                    log.info("following %s from seq %d", peer.region, checkpoint)
                    self.connected[peer.region] = True
                held = self._check_clock(peer.region, read)
                if held is not None:
                    # Apply what comes before the held change, then stop: the next stream starts at it.
                    entries, ahead = held
                    if entries:
                        await self._apply(peer.region, entries, entries[-1].seq)
                    raise ahead
                self._resume(peer.region)
                await deferral.coming(read.head_seq - read.last_seq + len(read.entries))
                checkpoint = read.last_seq
                # A batch of only filtered rows (changes that came from here) moves the checkpoint but
                # needs no transaction each time: re-reading such rows after a crash is harmless.
                if read.entries or (
                    checkpoint != stored and self.clock.now_ms() - stored_at > CHECKPOINT_EVERY_MS
                ):
                    await self._apply(peer.region, read.entries, checkpoint)
                    stored, stored_at = checkpoint, self.clock.now_ms()
                if stored != acked and stored_at - acked_at > ACK_EVERY_MS:
                    # Off the stream's path: a slow acknowledgement must not hold up the next batch.
                    acked, acked_at = stored, stored_at
                    task = asyncio.create_task(self._ack(peer, stored))
                    acks.add(task)
                    task.add_done_callback(acks.discard)
                self.pending[peer.region] = max(0, read.head_seq - read.last_seq)
                self.metrics.pending.labels(peer.region, self.region).set(self.pending[peer.region])
                self._mark(peer.region, stored)
                if self._relays_wanted(peer.region) != relays:
                    return

    def _check_clock(self, source: str, read: LogRead) -> tuple[list[LogEntry], PeerClockAhead] | None:
        """None when the read may be applied whole; else the entries before the held one and why."""
        now = self.clock.now_ms()
        bound = self.max_clock_offset_ms
        if read.sent_ms is not None:
            offset = self._measure(source, read.sent_ms)
            if offset > bound:
                return [], PeerClockAhead(source, offset, f"{source}'s clock")
        entries, ahead = within_bound(read.entries, now, bound)
        if ahead is None:
            return None
        offset = ahead_ms(ahead, now)
        self.metrics.clock_offset.labels(source).set(offset / 1000)
        what = f"the change of {ahead.table} {ahead.key} written in {ahead.origin}"
        return entries, PeerClockAhead(source, offset, what)

    def _measure(self, peer: str, sent_ms: int) -> int:
        """Records the peer's clock offset from a time it sent (a one-way delay low); returns it."""
        now = self.clock.now_ms()
        offset = sent_ms - now
        self.clock_offsets[peer] = offset
        self._measured_at[peer] = now
        # After the offset: a writer's thread that read the count before it took the old offsets.
        self._measurements += 1
        self.metrics.clock_offset.labels(peer).set(offset / 1000)
        return offset

    def clock_ceiling(self) -> int | None:
        """The time this region's versions must not pass, when its clock runs ahead of the others'.

        The reference is the lower median clock of the regions heard from in the last seconds, this one
        included (of two regions the slower, of three the middle one), so one fast clock is pulled back to
        the others and one slow clock drags nobody. Versions stay within half the bound of it: the other
        regions apply them, and a later write elsewhere still wins. None when there is nothing to correct.
        """
        now = self.clock.now_ms()
        measurements, low, high, reference = self._reference
        if measurements != self._measurements or not low <= now < high:
            self._reference = (measurements, low, high, reference) = self._reference_at(now)
        half = self.max_clock_offset_ms // 2
        return now + reference + half if reference < -half else None

    def _reference_at(self, now: int) -> tuple[int, int, int, int]:
        """(measurements, low, high, reference): the lower median of the offsets fresh at `now` (ours, 0,
        among them), and the local times around `now` at which the same offsets are the fresh ones."""
        measurements = self._measurements
        offsets = [0]
        low, high = -(1 << 62), 1 << 62
        # A copy (taken atomically): writers' threads call this while the loop measures.
        for peer, offset in tuple(self.clock_offsets.items()):
            # A measurement is fresh while the local clock is below this (a clock moved back too).
            measured = self._measured_at.get(peer)
            if measured is None:
                continue
            stale_from = measured + OFFSET_FRESH_MS
            if now < stale_from:
                offsets.append(offset)
                high = min(high, stale_from)
            else:
                low = max(low, stale_from)
        offsets.sort()
        return measurements, low, high, offsets[(len(offsets) - 1) // 2]

    def _hold(self, exc: PeerClockAhead) -> None:
        """Stops following a peer whose clock is too far ahead, saying so once with the offset."""
        first = exc.peer not in self.held
        self.held[exc.peer] = {
            "offsetMs": exc.offset_ms,
            "reason": f"{exc} (bound {self.max_clock_offset_ms} ms)",
            "sinceMs": self.held.get(exc.peer, {}).get("sinceMs", self.clock.now_ms()),
        }
        self.metrics.followed.labels(exc.peer).set(0)
        if first:
            self.metrics.held_back.labels(exc.peer).inc()
            log.warning(
                "not following %s: %s (bound %d ms); its changes wait until the offset is back within it",
                exc.peer,
                exc,
                self.max_clock_offset_ms,
            )

    def _resume(self, source: str) -> None:
        if self.held.pop(source, None) is not None:
            self.metrics.followed.labels(source).set(1)
            log.warning(
                "following %s again: its clock is within %d ms of ours", source, self.max_clock_offset_ms
            )

    async def _ack(self, peer: Peer, seq: int) -> None:
        try:
            await peer.ack(seq)
        except Exception as exc:  # the next acknowledgement (or stream) carries it: only trimming waits
            log.info("could not acknowledge seq %d to %s: %s: %s", seq, peer.region, type(exc).__name__, exc)

    async def _apply(
        self, source: str, entries: Sequence[LogEntry], checkpoint: int | None, *, live: bool = True
    ) -> ApplyResult:
        """Apply a batch; `live` ones (the log as it grows) count towards lag, backfills and repairs not."""
        while self.apply_paused:
            await asyncio.sleep(0.05)
        started_ns = time.time_ns()
        result = await asyncio.to_thread(self.store.apply, source, entries, checkpoint)
        if self.on_applied is not None:
            self.on_applied(source, result.applied_entries, started_ns, time.time_ns())
        if live and result.applied_entries:
            self._observe_lags(result.applied_entries, self.clock.now_ms())
        self.metrics.applied.labels(source).inc(result.applied)
        self.metrics.skipped.labels(source).inc(result.skipped)
        for conflict in result.conflicts:
            self.metrics.conflicts.inc()
            log.info(
                "conflict on %s %s: %s wins over %s",
                conflict.table,
                conflict.key,
                conflict.winner_version,
                conflict.loser_version,
            )
        return result

    def _observe_lags(self, entries: Sequence[LogEntry], now: int) -> None:
        """Each applied change's lag, into the lag window and the histogram: per origin, not per change
        (a catch-up applies thousands at once, most often of one origin)."""
        origins = {entry.origin for entry in entries}
        for origin in origins:
            lags = [
                now - entry.written_ms if entry.written_ms < now else 0
                for entry in entries
                if len(origins) == 1 or entry.origin == origin
            ]
            self.lags.add_all(origin, now, lags)
            observe_all(self.metrics.lag.labels(origin, self.region), sorted(lag / 1000 for lag in lags))

    async def backfill(self, peer: Peer) -> int:
        """Copy a consistent-enough snapshot of the peer, then return the log position to follow from."""
        page = await peer.snapshot(None, self.snapshot_page)
        head, held = page.head_seq, page.checkpoints
        # Backfills run one at a time and share one holder: a copy that failed stored no checkpoint, so
        # it is begun again (from this peer or another), with the indexes still out; a restart builds them.
        deferral = _KeyIndexDeferral(self.store, "snapshots")
        if page.cursor is not None:
            # As many rows as the peer holds: its log's head is what is known of that before the end.
            await deferral.coming(head)
        copied = await self._copy(peer, page)
        await deferral.done(held=True)  # held by a failed copy before this one, perhaps
        self.metrics.backfills.labels(peer.region).inc()
        log.info("backfilled %d entries from %s; following from seq %d", copied, peer.region, head)
        # The snapshot held every change of another peer's log up to the peer's checkpoint of it (read
        # with the head): a region that never followed that one follows it from there, and does not
        # copy the same items a second time (a new region joining regions that hold 1M items each).
        others = {p.region for p in self.peers} - {peer.region, self.region}
        for region, seq in held.items():
            if region in others and self.store.checkpoint(region) is None:
                await self._apply(region, [], seq, live=False)
                log.info("following %s from seq %d, as %s held it", region, seq, peer.region)
        return head

    async def _copy(self, peer: Peer, page: SnapshotPage) -> int:
        """Apply a snapshot from its first page; the last page stores the first one's head as checkpoint."""
        head = page.head_seq
        copied = 0
        while True:
            _, ahead = within_bound(page.entries, self.clock.now_ms(), self.max_clock_offset_ms)
            if ahead is not None:
                # Begun again later: a backfill's checkpoint is the snapshot's, so it cannot skip one.
                offset = ahead_ms(ahead, self.clock.now_ms())
                raise PeerClockAhead(peer.region, offset, f"the snapshot's {ahead.table} {ahead.key}")
            # The next page is read, encoded and sent by the peer while this one is applied here: one
            # after the other, each region waited for the other's half of every page.
            following = (
                None
                if page.cursor is None
                else asyncio.create_task(peer.snapshot(page.cursor, self.snapshot_page))
            )
            try:
                await self._apply(peer.region, page.entries, head if following is None else None, live=False)
            except BaseException:
                if following is not None:
                    following.cancel()
                    with contextlib.suppress(BaseException):
                        await following
                raise
            copied += len(page.entries)
            if following is None:
                return copied
            page = await following

    def holds(self, region: str) -> bool:
        """True while `region` is not followed (its clock too far ahead): nothing of it is applied here."""
        return region in self.held

    async def anti_entropy(self, peer: Peer) -> int:
        """Compare bucket digests with `peer` and exchange the entries of buckets that differ."""
        if self.holds(peer.region):
            # Not followed means nothing of it is applied, by any path: repairs wait for following to
            # resume (the stream then carries the same changes in order).
            return 0
        repaired = 0
        # Versions younger than the settle time may still be in flight: both sides leave them out. The
        # bound is taken from the hybrid clock, not the wall clock: versions issued ahead of the wall
        # clock (a region whose clock ran fast) are compared too once they are older than that.
        before = (
            HybridLogicalClock.pack(
                max(
                    0,
                    HybridLogicalClock.physical_ms(self.store.clock_version()) - self.anti_entropy_settle_ms,
                )
            )
            if self.anti_entropy_settle_ms
            else None
        )
        for table in self.tables:
            theirs = await peer.digest(table, self.digest_buckets, before)
            ours = await asyncio.to_thread(self.store.digest, table, self.digest_buckets, before)
            if ours == theirs:
                continue
            # Some bucket differs: compare the leaves (the finest buckets the stores keep), so a repair
            # exchanges the rows of the leaves that differ only, whatever the size of the table.
            if self.digest_buckets != LEAVES:
                theirs = await peer.digest(table, LEAVES, before)
                ours = await asyncio.to_thread(self.store.digest, table, LEAVES, before)
            differing = [leaf for leaf, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b]
            for start in range(0, len(differing), REPAIR_LEAVES):
                repaired += await self._repair(peer, table, differing[start : start + REPAIR_LEAVES])
        if repaired:
            self.metrics.repaired.labels(peer.region).inc(repaired)
            log.info("anti-entropy with %s repaired %d entries here", peer.region, repaired)
        return repaired

    async def _repair(self, peer: Peer, table: str, leaves: Sequence[int]) -> int:
        """Exchange what differs in `leaves` with `peer`: keys and versions first, then the entries of
        the keys whose versions differ only, so a leaf that differs by one row moves one row."""
        limit = asyncio.Semaphore(REPAIR_FETCHES)
        # Where many leaves of one of the 64 buckets differ, one request for the bucket's versions
        # replaces one per leaf: on a slow link round trips, not rows, are what a mass repair waits for.
        width = LEAVES // REPAIR_SPAN
        spans: dict[int, list[int]] = {}
        for leaf in leaves:
            spans.setdefault(leaf // width, []).append(leaf)
        units = [
            (span, REPAIR_SPAN) if len(members) >= REPAIR_SPAN_LEAVES else (leaf, LEAVES)
            for span, members in spans.items()
            for leaf in (members[:1] if len(members) >= REPAIR_SPAN_LEAVES else members)
        ]

        async def fetch(bucket: int, buckets: int) -> list[tuple[Key, Version]]:
            async with limit:
                return await peer.bucket_versions(table, bucket, buckets)

        fetched = await asyncio.gather(*(fetch(bucket, buckets) for bucket, buckets in units))
        listed = [(_key_id(key), key, version) for versions in fetched for key, version in versions]
        theirs = {kid: version for kid, _, version in listed}
        ours = await asyncio.to_thread(
            lambda: {
                _key_id(key): (key, version)
                for bucket, buckets in units
                for key, version in self.store.bucket_versions(table, bucket, buckets)
            }
        )
        missing = (None, None)
        wanted = [key for kid, key, version in listed if ours.get(kid, missing)[1] != version]
        now = self.clock.now_ms()
        incoming = (
            [e for e in await peer.entries(table, wanted) if ahead_ms(e, now) <= self.max_clock_offset_ms]
            if wanted
            else []
        )
        result = await self._apply(peer.region, incoming, None, live=False) if incoming else None
        # What we just took from the peer superseded ours: the peer needs ours only where we kept it.
        taken = set() if result is None else {_key_id(e.key) for e in result.applied_entries}
        unsendable = self._too_large.get(peer.region, set())
        sending = [
            key
            for k, (key, version) in ours.items()
            if theirs.get(k) != version and k not in taken and (table, k, version) not in unsendable
        ]
        if sending:
            outgoing = await asyncio.to_thread(self.store.entries_of, table, sending)
            self._not_pushed(peer.region, await peer.push(outgoing))
        return 0 if result is None else result.applied

    def _not_pushed(self, peer: str, entries: Sequence[LogEntry]) -> None:
        """Counts and logs the versions no push can carry to `peer`, and keeps them out of later repairs:
        the same version would be refused every round, for ever. The log still brings it there."""
        if not entries:
            return
        known = self._too_large.setdefault(peer, set())
        known.update((e.table, _key_id(e.key), e.version) for e in entries)
        self.metrics.too_large.labels(peer).inc(len(entries))
        for entry in entries:
            log.warning(
                "anti-entropy cannot push %s %s (version %s) to %s: alone it is over the request body limit",
                entry.table,
                entry.key,
                entry.version,
                peer,
            )

    def catching_up(self, peer: str) -> bool:
        """True while a backlog is on its way between this region and `peer` by the log (either way)."""
        if self.pending.get(peer, 0) > CATCHING_UP_PENDING:
            return True
        acked = self.store.acks().get(peer)
        return acked is not None and self.store.head_seq() - acked > CATCHING_UP_ACKED

    def joining(self, peer: str) -> bool:
        """True while `peer` has not completed its snapshot of this region (a new region still copying
        it): a region asks to follow this log, which records its acknowledgement here, only once it has.

        Anti-entropy with such a peer would find every bucket different and push it the whole table
        beside the snapshot it is copying; its first stream ends this, and repairs resume."""
        return peer not in self.store.acks()

    async def _anti_entropy_all(self) -> None:
        for peer in self.peers:
            if self.connected.get(peer.region) and self.joining(peer.region):
                log.info("anti-entropy with %s waits: it has not completed its snapshot of us", peer.region)
                continue
            if self.catching_up(peer.region):
                log.info("anti-entropy with %s waits: a backlog is on its way by the log", peer.region)
                continue
            if self.connected.get(peer.region):
                try:
                    await self.anti_entropy(peer)
                except Exception as exc:
                    # The type too: a timeout's message is often empty.
                    log.warning("anti-entropy with %s failed: %s: %s", peer.region, type(exc).__name__, exc)

    async def _trim(self) -> None:
        # Trimming waits for every peer expected or ever seen; a region never started blocks nothing.
        seen = {p.region for p in self.peers if self.connected.get(p.region)}
        peers = self.active_peers | set(self.store.checkpoints()) | seen
        removed = await asyncio.to_thread(self.store.trim, peers, self.retention_ms, self.clock.now_ms())
        if removed:
            log.info("trimmed %d log entries every peer has", removed)

    @staticmethod
    async def _every(seconds: float, job: Callable[[], Any], stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=seconds)
                return
            except TimeoutError:
                pass
            try:
                await job()
            except Exception:
                log.exception("periodic replication job failed")

    def status(self) -> dict[str, Any]:
        now = self.clock.now_ms()
        return {
            "region": self.region,
            # This region's log position: a peer whose checkpoint reached it holds all of it.
            "headSeq": self.store.head_seq(),
            "peers": {
                p.region: {
                    "connected": self.connected.get(p.region, False),
                    "checkpoint": self.store.checkpoint(p.region),
                    "pending": self.pending.get(p.region),
                    # False while its clock (or a change it sent) is too far ahead: see notFollowed.
                    "followed": not self.holds(p.region),
                    "clockOffsetMs": self.clock_offsets.get(p.region),
                    "notFollowed": self.held.get(p.region),
                    # Third regions whose changes come through this peer: not reached directly now.
                    "relays": list(self.relays.get(p.region, ())),
                }
                for p in self.peers
            },
            "lag": self.lags.summary(now),
            "conflicts": self.store.conflict_count(),
            "applyPaused": self.apply_paused,
            "maxClockOffsetMs": self.max_clock_offset_ms,
        }
