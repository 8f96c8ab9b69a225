"""An in-process transport between regions' replica stores: the Peer protocol over direct calls, with cuts."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from bookstore.kernel.http import MAX_BODY_BYTES
from bookstore.ports import Key, TableSchema
from bookstore.replication.tables.model import LogEntry, LogRead, SnapshotPage, Version
from bookstore.replication.tables.wire import (
    MAX_KEYS,
    entry_json,
    parse_batch,
    parse_entries,
    parse_versions,
    push_bodies,
)
from bookstore.storage.sqlite.replica import SqliteReplica


class LinkCut(ConnectionError):
    """The link between two regions is cut: the request never reached the peer."""


@dataclass
class Network:
    """Every region's current replica store (replaced when a region restarts) and the cut links.

    A cut is symmetric, as `bookstore link cut A B` is by default.
    """

    stores: dict[str, SqliteReplica] = field(default_factory=dict)
    cuts: set[frozenset[str]] = field(default_factory=set)

    def cut(self, a: str, b: str) -> None:
        self.cuts.add(frozenset((a, b)))

    def heal(self, a: str, b: str) -> None:
        self.cuts.discard(frozenset((a, b)))

    def heal_all(self) -> None:
        self.cuts.clear()

    def reach(self, src: str, dst: str) -> SqliteReplica:
        """`dst`'s store as `src` reaches it; LinkCut when the link between them is cut."""
        if frozenset((src, dst)) in self.cuts:
            raise LinkCut(f"the link {src} <-> {dst} is cut")
        return self.stores[dst]


def _wire(payload: Any) -> Any:
    """`payload` as the other side of a real link would see it: serialised to JSON bytes and parsed back."""
    return orjson.loads(orjson.dumps(payload))


class InProcessPeer:
    """Region `me`'s view of peer `region`: the Peer protocol answered by the peer's store in this process.

    Everything crosses the wire format (entry_json out, parse_entries / parse_batch in), so the strict
    validation of entries is exercised as over HTTP. `follow` yields what the peer's log holds now, in
    batches of `batch` rows, then ends (at most `max_batches` batches when given): a bounded round of the
    endless stream HttpPeer follows, so a test decides when replication happens.
    """

    def __init__(
        self,
        me: str,
        region: str,
        network: Network,
        schemas: Mapping[str, TableSchema],
        regions: Collection[str],
        *,
        batch: int = 3,
        max_batches: int | None = None,
    ) -> None:
        self.me = me
        self.region = region
        self.network = network
        self.schemas = schemas
        self.regions = regions
        self.tables = tuple(schemas)
        self.batch = batch
        self.max_batches = max_batches

    def _store(self) -> SqliteReplica:
        return self.network.reach(self.me, self.region)

    def _read(self, after: int, origins: Sequence[str] | None) -> LogRead:
        # As the HTTP endpoint reads: no old images, nothing that originated at the follower itself.
        read = self._store().read_log(
            after,
            limit=self.batch,
            tables=self.tables,
            exclude_origin=self.me,
            origins=origins,
            old_images=False,
        )
        raw = _wire({"entries": [entry_json(e) for e in read.entries]})
        entries = parse_entries(raw["entries"], self.schemas, self.regions)
        # The peer's clock, as the HTTP stream's nowMs carries it.
        sent = self._store().db.clock.now_ms()
        return LogRead(entries=entries, last_seq=read.last_seq, head_seq=read.head_seq, sent_ms=sent)

    async def follow(self, after: int, origins: Sequence[str] | None = None) -> AsyncGenerator[LogRead, None]:
        first = self._read(after, origins)  # LogTrimmed from the store passes to the follower, as a 410 does
        self._store().record_ack(self.me, after)
        yield first  # at once, even when empty, as the stream's first line
        sent = 1
        position = first.last_seq
        while self.max_batches is None or sent < self.max_batches:
            read = self._read(position, origins)
            if read.last_seq == position:
                return
            yield read
            sent += 1
            position = read.last_seq

    async def snapshot(self, after: str | None, limit: int) -> SnapshotPage:
        page = self._store().snapshot(after, limit, self.tables)
        raw = _wire(
            {
                "entries": [entry_json(e) for e in page.entries],
                "cursor": page.cursor,
                "checkpoints": page.checkpoints,
            }
        )
        entries = parse_entries(raw["entries"], self.schemas, self.regions)
        return SnapshotPage(
            entries=entries, cursor=raw["cursor"], head_seq=page.head_seq, checkpoints=raw["checkpoints"]
        )

    async def digest(self, table: str, buckets: int, before: int | None = None) -> list[str]:
        digest: list[str] = _wire(self._store().digest(table, buckets, before))
        return digest

    async def bucket(self, table: str, bucket: int, buckets: int) -> list[LogEntry]:
        entries = self._store().bucket_entries(table, bucket, buckets)
        return parse_entries(_wire([entry_json(e) for e in entries]), self.schemas, self.regions)

    async def bucket_versions(self, table: str, bucket: int, buckets: int) -> list[tuple[Key, Version]]:
        versions = self._store().bucket_versions(table, bucket, buckets)
        return parse_versions(_wire([[key, hlc, region] for key, (hlc, region) in versions]))

    async def entries(self, table: str, keys: Sequence[Key]) -> list[LogEntry]:
        found: list[LogEntry] = []
        for start in range(0, len(keys), MAX_KEYS):
            entries = self._store().entries_of(table, _wire(list(keys[start : start + MAX_KEYS])))
            found += parse_entries(_wire([entry_json(e) for e in entries]), self.schemas, self.regions)
        return found

    async def push(self, entries: list[LogEntry]) -> list[LogEntry]:
        # The bodies HttpPeer sends, each parsed as the endpoint parses it.
        bodies, too_large = push_bodies(self.me, entries, MAX_BODY_BYTES)
        for body in bodies:
            source, parsed = parse_batch(orjson.loads(body), self.schemas, self.regions)
            self._store().apply(source, parsed, None)
        return too_large

    async def ack(self, seq: int) -> None:
        self._store().record_ack(self.me, seq)

    async def aclose(self) -> None:
        return None
