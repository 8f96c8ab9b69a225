"""What table replication exchanges: log entries, reads, apply results, conflicts, snapshots; merge rule."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from bookstore.domain.errors import StaleCursor
from bookstore.kernel.clock import COUNTER_BITS as HLC_COUNTER_BITS
from bookstore.ports import FIRST_WRITER_WINS, ChangeKind, ConflictRule, Item, Key

# (hlc, region): compared as a tuple, so the region breaks ties between equal clocks deterministically.
Version = tuple[int, str]


class LogEntry(NamedTuple):
    """One record of a region's change log, with the versions replication needs.

    A NamedTuple (immutable like the dataclasses here): a catch-up builds one per change on each side of
    the link, and a frozen dataclass's constructor cost four times as much (a setattr per field).
    """

    seq: int
    table: str
    kind: ChangeKind
    key: Key
    old: Item | None
    new: Item | None
    written_ms: int
    origin: str
    version: Version
    # The version the item (or its tombstone) had before this change; None when it never existed there.
    previous: Version | None
    # The W3C traceparent of the request that wrote the change, when tracing was on: the regions that
    # apply it join that request's trace (runtime.tracing). None otherwise.
    trace: str | None = None


@dataclass(frozen=True)
class LogRead:
    """Entries of one read of the log, the seq to resume after, and the newest seq in the log."""

    entries: list[LogEntry]
    # Seq of the last row scanned, kept or filtered out; the `after` asked for when nothing was scanned.
    last_seq: int
    head_seq: int
    # The source's wall clock when it sent this read (epoch ms; None when it did not say): the follower
    # measures the source's clock offset from it, idle streams included (heartbeats carry it too).
    sent_ms: int | None = None


@dataclass(frozen=True)
class ConflictRecord:
    """Two concurrent writes of one item met: which version won, which lost, and their images."""

    table: str
    key: Key
    winner_version: Version
    # None when that side is a tombstone.
    winner_image: Item | None
    loser_version: Version
    loser_image: Item | None
    detected_ms: int
    # The region whose batch brought the incoming side.
    source: str


@dataclass(frozen=True)
class ApplyResult:
    """What one applied batch did: entries written (newer than ours), entries skipped, conflicts met."""

    applied: int
    skipped: int
    conflicts: list[ConflictRecord] = field(default_factory=list)
    applied_entries: list[LogEntry] = field(default_factory=list)


@dataclass(frozen=True)
class SnapshotPage:
    """One page of a snapshot; `cursor` is None on the last page.

    `head_seq` of the FIRST page is the log position to follow from once every page is applied.
    `checkpoints` (of the first page, read with its head) is how far the snapshot's region held each
    other region's log: the snapshot holds every change up to there, so a region with no checkpoint of
    its own for one of them may follow its log from there rather than copy a second snapshot.
    """

    entries: list[LogEntry]
    cursor: str | None
    head_seq: int
    checkpoints: dict[str, int] = field(default_factory=dict)


class LogTrimmed(StaleCursor):
    """The log no longer holds records right after the position asked for: re-sync from a snapshot."""

    code = "LogTrimmed"

    def __init__(self, message: str, *, after: int = 0, trimmed_through: int = 0) -> None:
        super().__init__(message)
        self.after = after
        self.trimmed_through = trimmed_through


def concurrent(
    incoming: Version,
    incoming_previous: Version | None,
    local: Version | None,
    local_previous: Version | None,
) -> bool:
    """Whether an incoming write and the local one were concurrent: neither writer had seen the other.

    Equal versions are the same write. An incoming write based on the local one (or later), or a local
    write based on the incoming one (a late or repeated delivery), is not a conflict.
    """
    if local is None or local == incoming:
        return False
    incoming_blind = incoming_previous is None or incoming_previous < local
    local_blind = local_previous is None or local_previous < incoming
    return incoming_blind and local_blind


def supersedes(rule: ConflictRule, incoming: Version, local: Version) -> bool:
    """Whether `incoming` replaces the `local` version of an item under the table's conflict rule.

    Either rule is a total order on versions, so applying any set of versions in any order, any number
    of times, leaves every region with the same one: the highest (last writer wins) or the lowest
    (first writer wins). An equal version is the same write: it replaces nothing.
    """
    if rule == FIRST_WRITER_WINS:
        return incoming < local
    return incoming > local


class ClockRefusal(Exception):
    """A peer refused a signed request for its timestamp and said what its clock read (epoch ms)."""

    def __init__(self, peer: str, sent_ms: int, message: str) -> None:
        super().__init__(f"{peer} refused the request: {message}")
        self.peer = peer
        self.sent_ms = sent_ms


_VERSION = operator.attrgetter("version")


def ahead_ms(entry: LogEntry, now_ms: int) -> int:
    """How far the physical time of the entry's version is ahead of `now_ms` (negative when behind)."""
    return (entry.version[0] >> HLC_COUNTER_BITS) - now_ms


def within_bound(
    entries: Sequence[LogEntry], now_ms: int, bound_ms: int
) -> tuple[list[LogEntry], LogEntry | None]:
    """The entries before the first one more than `bound_ms` ahead of `now_ms`, and that one (or None).

    A change stamped that far in the future comes from a clock running fast: applied, it would win over
    every later write until real time caught up, and move this region's hybrid clock (so its own writes)
    as far ahead. Such a change is held back (never dropped) until it is within the bound.
    """
    # Most often none is: the highest version, found without a Python step per entry (a catch-up's batch
    # holds 10,000), below the first version too far ahead says so.
    if not entries or max(map(_VERSION, entries))[0] < (now_ms + bound_ms + 1) << HLC_COUNTER_BITS:
        return list(entries), None
    for i, entry in enumerate(entries):
        if ahead_ms(entry, now_ms) > bound_ms:
            return list(entries[:i]), entry
    return list(entries), None
