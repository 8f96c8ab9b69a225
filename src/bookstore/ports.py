"""The small ports services depend on: tables with change streams, rankings, search indexes, clocks."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

# An item is a JSON-like mapping: str, int, float, bool, None, lists and mappings of those.
Item = dict[str, Any]
Key = dict[str, Any]


@dataclass(frozen=True)
class Index:
    """A secondary index: items are found by `partition_key` (and ordered by `sort_key`)."""

    name: str
    partition_key: str
    sort_key: str | None = None


@dataclass(frozen=True)
class TableSchema:
    """Name and key attributes of a table, and its secondary indexes."""

    name: str
    partition_key: str
    sort_key: str | None = None
    indexes: tuple[Index, ...] = ()

    def key_of(self, item: Mapping[str, Any]) -> Key:
        """The key attributes of `item`; raises ValidationError when one is missing."""
        from bookstore.domain.errors import ValidationError

        names = [self.partition_key] if self.sort_key is None else [self.partition_key, self.sort_key]
        missing = [n for n in names if item.get(n) in (None, "")]
        if missing:
            raise ValidationError(f"table {self.name}: key attribute(s) {', '.join(missing)} missing")
        return {n: item[n] for n in names}

    def index(self, name: str) -> Index:
        from bookstore.domain.errors import ValidationError

        for idx in self.indexes:
            if idx.name == name:
                return idx
        raise ValidationError(f"table {self.name} has no index {name!r}")


@dataclass(frozen=True)
class ItemAbsent:
    """Condition: no item exists under the key."""


@dataclass(frozen=True)
class ItemExists:
    """Condition: an item exists under the key."""


@dataclass(frozen=True)
class AttributeEquals:
    """Condition: the stored item exists and its attribute `name` equals `value`."""

    name: str
    value: Any


Condition = ItemAbsent | ItemExists | AttributeEquals


@dataclass(frozen=True)
class SortRange:
    """Sort-key bounds for a query, both inclusive; None leaves that side open."""

    low: Any = None
    high: Any = None


@dataclass(frozen=True)
class Page:
    """One page of items; `cursor` is None on the last page, else passed back to get the next."""

    items: list[Item]
    cursor: str | None = None


ChangeKind = Literal["INSERT", "MODIFY", "REMOVE"]


@dataclass(frozen=True)
class ChangeRecord:
    """One entry of a table's change stream (NEW_AND_OLD_IMAGES)."""

    kind: ChangeKind
    key: Key
    old: Item | None
    new: Item | None
    # Time of the write at its origin, epoch milliseconds: replication lag is measured from it.
    written_ms: int
    # The region whose client made the write (the local region for local writes).
    origin: str = ""


@dataclass(frozen=True)
class ChangeBatch:
    """Records in stream order, and the cursor that resumes right after the last of them."""

    records: list[ChangeRecord]
    cursor: str
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """What one unit of a group of writes came to: its value, or the exception that rolled it back."""

    value: Any = None
    error: Exception | None = None


# Runs units of writes in one transaction, each all-or-nothing, committed together before it returns
# (SqliteDatabase.run_group): group commit, where the engine has transactions to share.
GroupRunner = Callable[[Sequence[Callable[[], Any]]], list[Outcome]]


class Table(Protocol):
    """A key-value table with conditions, queries, scans and an ordered change stream.

    Contract, kept by every adapter (tests/contract/test_table.py proves it):
    - `put` replaces the whole item; `delete` of an absent key is a no-op that returns None.
    - A failed `condition` raises ConditionFailed and changes nothing.
    - Missing key attributes raise ValidationError.
    - `query` returns the items of one partition (of the table or of `index`) in ascending sort-key
      order (descending when asked); `scan` returns every item once across its pages.
    - Page cursors are opaque strings; a page holds at most `limit` items.
    - Every successful put, update and delete appends exactly one ChangeRecord to the stream, in commit
      order; a delete of an absent item appends nothing. `changes(cursor)` returns records strictly after
      `cursor` (None = from the oldest record kept); reading is idempotent and resumable.
    - Once a write has returned, it survives a kill -9 of the process.
    - Engine errors surface as StorageError, never as the driver's own exception.
    """

    schema: TableSchema

    def get(self, key: Key) -> Item | None: ...

    def put(self, item: Item, *, condition: Condition | None = None) -> None: ...

    def update(self, key: Key, changes: Mapping[str, Any], *, condition: Condition | None = None) -> Item:
        """Set the given attributes (None removes one); creates the item when absent. Returns the new item."""
        ...

    def delete(self, key: Key, *, condition: Condition | None = None) -> Item | None:
        """Remove the item; returns the old item, or None when there was none."""
        ...

    def query(
        self,
        partition: Any,
        *,
        index: str | None = None,
        sort_range: SortRange | None = None,
        descending: bool = False,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page: ...

    def scan(self, *, limit: int = 100, cursor: str | None = None) -> Page: ...

    def changes(self, cursor: str | None = None, *, limit: int = 100) -> ChangeBatch: ...


class Ranking(Protocol):
    """Scores of members (book ids), fed by events (orders) that each count exactly once.

    Contract (tests/contract/test_ranking.py):
    - `add(event_id, scores, cursor)` adds every score of the event atomically and records `event_id`;
      the same event id again changes nothing and returns False. When `cursor` is given it is stored in
      the same atomic step, so a consumer that restarts from `cursor()` never counts an event twice.
    - `add_all(events, cursor)` adds each (event_id, scores) as `add` does and then stores `cursor`,
      returning how many events were new; the cursor is stored only once every event is counted, so a
      consumer restarting from `cursor()` never skips one. Adapters make it cheaper than one `add` each.
    - `top(n)` returns at most n (member, score) pairs, highest score first, ties by member ascending.
    """

    def add(self, event_id: str, scores: Mapping[str, int], cursor: str | None = None) -> bool: ...

    def add_all(self, events: Sequence[tuple[str, Mapping[str, int]]], cursor: str) -> int: ...

    def top(self, n: int = 20) -> list[tuple[str, int]]: ...

    def cursor(self) -> str | None: ...

    def set_cursor(self, cursor: str) -> None: ...


class SearchIndex(Protocol):
    """Full-text index over documents' fields; `search` returns ids, best match first."""

    def upsert(self, doc_id: str, fields: Mapping[str, str], cursor: str | None = None) -> None: ...

    def remove(self, doc_id: str, cursor: str | None = None) -> None: ...

    def search(self, query: str, limit: int = 50) -> list[str]: ...

    def cursor(self) -> str | None: ...


class Clock(Protocol):
    """Wall-clock time in epoch milliseconds; injected so tests can skew one region's clock."""

    def now_ms(self) -> int: ...


Tables = Mapping[str, Table]
Scores = Sequence[tuple[str, int]]
