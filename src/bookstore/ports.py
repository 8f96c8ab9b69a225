"""The small ports services depend on: tables with change streams, rankings, search indexes, keys, clocks."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from bookstore.domain.errors import ValidationError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# An item is a JSON-like mapping: str, int, float, bool, None, lists and mappings of those.
Item = dict[str, Any]
Key = dict[str, Any]


@dataclass(frozen=True)
class Index:
    """A secondary index: items are found by `partition_key` (and ordered by `sort_key`)."""

    name: str
    partition_key: str
    sort_key: str | None = None


# How regions settle two versions of one item written without seeing each other (see TableSchema).
ConflictRule = Literal["last-writer-wins", "first-writer-wins"]
LAST_WRITER_WINS: ConflictRule = "last-writer-wins"
FIRST_WRITER_WINS: ConflictRule = "first-writer-wins"


@dataclass(frozen=True)
class TableSchema:
    """Name and key attributes of a table, its secondary indexes, and its conflict rule.

    The conflict rule is how replication merges versions (hlc, region) of one item, the same on every
    path (the follow stream, anti-entropy, backfill), so regions converge whatever the order of arrival:
    - last-writer-wins (the default, as DynamoDB Global Tables): the highest version wins.
    - first-writer-wins (immutable items, e.g. orders): the LOWEST version wins, so the first accepted
      write of a key is the one every region keeps. Items are written once (put with ItemAbsent): an
      adapter that merges by this rule (SQLite) refuses a second local write of a key with
      ConditionFailed, since replication would undo it everywhere else.
    """

    name: str
    partition_key: str
    sort_key: str | None = None
    indexes: tuple[Index, ...] = ()
    conflict_rule: ConflictRule = LAST_WRITER_WINS
    # Key attributes (of the table or an index) that hold numbers: DynamoDB must declare their type.
    number_keys: tuple[str, ...] = ()

    def key_of(self, item: Mapping[str, Any]) -> Key:
        """The key attributes of `item`; raises ValidationError when one is missing."""
        # Every put takes its key here: no list or comprehension made per call (the import that was
        # in this method cost half a microsecond a call).
        partition = item.get(self.partition_key)
        if self.sort_key is None:
            if partition is not None and partition != "":
                return {self.partition_key: partition}
        else:
            sort = item.get(self.sort_key)
            if partition is not None and partition != "" and sort is not None and sort != "":
                return {self.partition_key: partition, self.sort_key: sort}
        names = [self.partition_key] if self.sort_key is None else [self.partition_key, self.sort_key]
        missing = [n for n in names if item.get(n) in (None, "")]
        raise ValidationError(f"table {self.name}: key attribute(s) {', '.join(missing)} missing")

    def index(self, name: str) -> Index:
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
    - `put` replaces the whole item; `delete` of an absent key returns None.
    - A failed `condition` raises ConditionFailed and changes nothing.
    - Missing key attributes raise ValidationError.
    - `query` returns the items of one partition (of the table or of `index`) in ascending sort-key
      order (descending when asked); `scan` returns every item once across its pages.
    - Page cursors are opaque strings; a page holds at most `limit` items.
    - Every successful put, update and delete appends exactly one ChangeRecord to the stream, in commit
      order. A delete of an absent item appends a REMOVE (old None) too: in the adapters that replicate
      themselves (SQLite, memory) it is a versioned tombstone, so a write of that key made elsewhere
      earlier and arriving later loses by last-writer-wins. DynamoDB appends nothing there (Global Tables
      replicate no delete of an absent item), the one documented exception. An adapter that merges by
      first-writer-wins (SQLite) refuses any delete on such a table with ConditionFailed.
      `changes(cursor)` returns records strictly after
      `cursor` (None = from the oldest record kept); reading is idempotent and resumable.
    - Once a write has returned, it survives a kill -9 of the process.
    - `changes` after a cursor the stream no longer leads on from (trimmed past it) raises StaleCursor:
      the reader rebuilds from a scan, then follows from `stream_head()` read before that scan.
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

    def stream_head(self) -> str:
        """A cursor at the newest record of the stream: `changes` after it returns only later records.

        A consumer rebuilding from a scan reads it BEFORE scanning, then follows the stream from it.
        """
        ...


# An event counted into a Ranking: its id and its scores (empty: the event no longer counts).
Event = tuple[str, Mapping[str, int]]


class Ranking(Protocol):
    """Scores of members (book ids): the sum, over events (orders), of each event's scores as last set.

    An event is (event_id, scores). Setting an event to the scores it holds changes nothing; setting it
    to others un-counts the old ones and counts the new (an order replaced by the version every region
    keeps); empty scores un-count it. So a consumer that hands over each record of a stream in order
    ends exact, however often it replays a part of the stream.

    Contract (tests/contract/test_ranking.py):
    - `put_all(events, cursor)` sets the events' scores in order and stores `cursor`, in ONE atomic step;
      returns how many events changed the ranking. A ranking holding no cursor (new, emptied, or of an
      older format) refuses with StaleCursor and changes nothing: it must be rebuilt first.
    - `rebuild(events, cursor)` replaces every event and score by `events` (each event id once) and
      stores `cursor`, atomically: a reader sees the whole old ranking or the whole new one.
    - `cursor()` is the stored cursor; None when the ranking must be rebuilt.
    - `top(n)` returns at most n (member, score) pairs, highest score first, ties by member ascending;
      members whose score fell to 0 are left out.
    """

    def put_all(self, events: Sequence[Event], cursor: str) -> int: ...

    def rebuild(self, events: Sequence[Event], cursor: str) -> None: ...

    def top(self, n: int = 20) -> list[tuple[str, int]]: ...

    def cursor(self) -> str | None: ...


class SearchIndex(Protocol):
    """Full-text index over documents' fields; `search` returns ids, best match first.

    `rebuild(docs, cursor)` replaces every document by `docs` and stores `cursor` in one transaction.
    """

    def upsert(self, doc_id: str, fields: Mapping[str, str], cursor: str | None = None) -> None: ...

    def remove(self, doc_id: str, cursor: str | None = None) -> None: ...

    def rebuild(self, docs: Sequence[tuple[str, Mapping[str, str]]], cursor: str) -> None: ...

    def search(self, query: str, limit: int = 50) -> list[str]: ...

    def cursor(self) -> str | None: ...


class SigningKeyStore(Protocol):
    """Where a region keeps its private signing keys: never in a table, since tables replicate.

    Contract, kept by every adapter (tests/contract/test_signing_keys.py proves it):
    - `load_or_create(kid)` returns the Ed25519 private key stored under `kid`. When there is none, it
      makes one and stores it durably before returning (it survives a kill -9 once returned).
    - Every later call, from this process or another one sharing the store, returns that same key; of
      two first calls racing, both return the key stored first.
    - Keys of different kids are different keys.
    - A store that cannot be read or written, or a stored key that is unreadable or not Ed25519, raises
      StorageError saying where it is; nothing is replaced then.
    """

    def load_or_create(self, kid: str) -> Ed25519PrivateKey: ...


class Clock(Protocol):
    """Wall-clock time in epoch milliseconds; injected so tests can skew one region's clock."""

    def now_ms(self) -> int: ...


Tables = Mapping[str, Table]
Scores = Sequence[tuple[str, int]]
