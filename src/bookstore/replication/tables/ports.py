"""The storage side of table replication as narrow ports: each part of the replicator names what it uses.

storage/sqlite/replica.py (SqliteReplica) implements them all (ReplicaStore). The replicator depends on
ReplicatorStore (an applier, anti-entropy and trimming, plus its log head for status); the follow
stream it serves reads a LogSource only.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Protocol

from bookstore.ports import Key
from bookstore.replication.tables.model import (
    ApplyResult,
    ConflictRecord,
    LogEntry,
    LogRead,
    SnapshotPage,
    Version,
)


class LogSource(Protocol):
    """This region's log as its followers read it: batches after a position, the head, a snapshot.

    `read_log` returns entries after a sequence number, of the origins in `origins` when given (a
    follower takes a region's own changes from it, and a third region's only while it cannot reach that
    one); `last_seq` passes filtered rows too.
    """

    def read_log(
        self,
        after: int,
        *,
        limit: int,
        tables: Collection[str] | None = None,
        exclude_origin: str | None = None,
        origins: Collection[str] | None = None,
        old_images: bool = True,
    ) -> LogRead: ...

    def head_seq(self) -> int: ...

    def snapshot(
        self, after: str | None, limit: int, tables: Collection[str] | None = None
    ) -> SnapshotPage: ...

    def record_ack(self, peer: str, seq: int) -> None:
        """A follower holds this log up to `seq`: trimming may drop what every follower holds."""
        ...

    def add_listener(self, callback: Callable[[], None]) -> None:
        """`callback` runs (on any thread) after each commit that appended to the log."""
        ...


class Applier(Protocol):
    """Applies a peer's changes: `apply` keeps only versions that supersede the local ones (by the
    table's conflict rule), records conflicts, re-logs what it applied with its origin, and stores the
    source's checkpoint in the same transaction."""

    def apply(self, source: str, entries: Sequence[LogEntry], checkpoint: int | None) -> ApplyResult: ...

    def defer_key_index(self, holder: str, coming: int) -> bool:
        """`holder` is about to apply about `coming` entries: the store may leave its key-hash indexes
        out until `restore_key_index(holder)` (True while it does). Only the cost changes."""
        ...

    def restore_key_index(self, holder: str) -> bool:
        """`holder`'s catch-up is done (or ended): what it deferred is built again, once no other
        holder defers it (True when this call built it)."""
        ...

    def checkpoint(self, source: str) -> int | None: ...

    def conflict_count(self) -> int: ...

    def clock_version(self) -> int:
        """The latest version this region's hybrid clock issued or saw."""
        ...

    def cap_clock(self, ceiling: Callable[[], int | None]) -> None:
        """Makes the region's hybrid clock call `ceiling` for a time its physical part must not pass."""
        ...


class AntiEntropy(Protocol):
    """Digests of key buckets, and a bucket's entries, to find and repair what following missed.

    `buckets` is a power of two up to digests.LEAVES; bucket b holds the keys whose leaf (the top
    LEAF_BITS of the key hash) falls in digests.leaf_range(b, buckets). A bucket's digest is
    digests.fold of the XOR of digests.row_hash over its items and tombstones (only versions below
    `before` when given), so every store spells the same contents alike; a store keeps the leaves as
    it writes, so a digest costs the same whatever the size of the table.
    """

    def digest(self, table: str, buckets: int = 64, before: int | None = None) -> list[str]: ...

    def bucket_entries(self, table: str, bucket: int, buckets: int = 64) -> list[LogEntry]: ...

    def bucket_versions(self, table: str, bucket: int, buckets: int = 64) -> list[tuple[Key, Version]]:
        """The key and version of each item and tombstone of a bucket: a repair compares these, then
        moves the entries of the keys that differ only (`entries_of`)."""
        ...

    def entries_of(self, table: str, keys: Sequence[Key]) -> list[LogEntry]: ...


class Trimming(Protocol):
    """Drops log records every peer holds (by their checkpoints here and acknowledgements) and that
    are older than the retention."""

    def checkpoints(self) -> dict[str, int]: ...

    def acks(self) -> dict[str, int]:
        """How far each peer said it holds this region's log."""
        ...

    def trim(self, peers: Collection[str], retention_ms: int, now_ms: int) -> int: ...


class ReplicatorStore(Applier, AntiEntropy, Trimming, Protocol):
    """What the Replicator uses: the three ports, and its log's head for its status."""

    def head_seq(self) -> int: ...


class ReplicaStore(LogSource, ReplicatorStore, Protocol):
    """Everything a region's replica store offers: what it serves its peers, and what it applies; with
    the conflicts kept for the operator and a digest of the whole state for tests and drills."""

    def conflicts(self, limit: int = 100) -> list[ConflictRecord]: ...

    def state_digest(self, tables: Collection[str]) -> str: ...
