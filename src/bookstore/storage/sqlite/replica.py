"""Replication on a region's SQLite file: applying peers' changes, checkpoints, snapshots, digests, trims."""

from __future__ import annotations

import functools
import hashlib
import sqlite3
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, NamedTuple, cast

import orjson

from bookstore.domain.errors import StorageError, ValidationError
from bookstore.kernel.clock import HybridLogicalClock
from bookstore.ports import FIRST_WRITER_WINS, ChangeKind, Item, Key
from bookstore.replication.tables import digests
from bookstore.replication.tables.model import (
    ApplyResult,
    ConflictRecord,
    LogEntry,
    LogRead,
    SnapshotPage,
    Version,
    concurrent,
    supersedes,
)
from bookstore.storage.items import (
    KeyValue,
    check_limit,
    decode_cursor,
    encode_cursor,
    is_key_value,
)
from bookstore.storage.sqlite import log as change_log
from bookstore.storage.sqlite.tables import (
    NO_SORT,
    SqliteDatabase,
    SqliteTable,
    canonical_key_value,
    row_hash,
    row_hashes,
)

# The conflict log keeps this many newest records; the count of conflicts ever detected is kept apart.
MAX_CONFLICTS = 10_000

_REPLICA_SQL = (
    "CREATE TABLE IF NOT EXISTS checkpoints (source TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS acks (peer TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID",
    """CREATE TABLE IF NOT EXISTS conflicts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        tbl TEXT NOT NULL,
        key TEXT NOT NULL,
        winner_hlc INTEGER NOT NULL,
        winner_region TEXT NOT NULL,
        winner_doc TEXT,
        loser_hlc INTEGER NOT NULL,
        loser_region TEXT NOT NULL,
        loser_doc TEXT,
        detected_ms INTEGER NOT NULL,
        source TEXT NOT NULL,
        UNIQUE (tbl, key, winner_hlc, winner_region, loser_hlc, loser_region)
    )""",
)
_ROW_SELECT = "pk, sk, doc, hlc, region, prev_hlc, prev_region, seq"
_CONFLICT_COLUMNS = (
    "tbl, key, winner_hlc, winner_region, winner_doc, loser_hlc, loser_region, loser_doc, detected_ms, source"
)


# A batch reads the current rows of its keys this many at a time, by one statement each (two variables per
# key, far below SQLite's limit): one query per entry cost as much as writing the entry. A shorter last
# chunk is padded with its last key, so only a few statements (one per power of two) are ever prepared.
LOOKUP_KEYS = 256
# A catch-up of at least this many entries, and of at least a quarter of the rows held, is applied with
# the tables' key-hash indexes dropped, and they are built again once it is done (`defer_key_index`):
# a row written into that index lands on a random page, which at 1M rows cost the apply about half its
# CPU and 4 KB of WAL and checkpoint writes per row; building it again sorts once, about 2 us a row.
DEFER_KEY_INDEX_MIN = 50_000
_Slot = tuple[str, KeyValue, KeyValue]
_Local = tuple[str | None, Version | None, Version | None]
_ABSENT: _Local = (None, None, None)


# Rows are inserted ROWS_PER_INSERT to a statement (one VALUES list of that many rows). executemany of a
# one-row INSERT ran the statement once per row, each run opening the table's and its indexes' cursors
# again (and, for the log, reading and writing its AUTOINCREMENT counter): a quarter of the log's cost
# per row and about 1 us of a catch-up's apply per entry (docs/performance.md).
ROWS_PER_INSERT = 128


@functools.cache
def _multi_row(sql: str, rows: int) -> tuple[str, int]:
    """`sql`, an INSERT of one row ("VALUES (?, ...)", its only parameters), made to insert `rows` rows;
    and the number of values a row takes."""
    width = sql.count("?")
    one = "(" + ", ".join(["?"] * width) + ")"
    head, tail = sql.split("VALUES " + one)
    return head + "VALUES " + ", ".join([one] * rows) + tail, width


def _insert_rows(conn: sqlite3.Connection, sql: str, values: list[Any]) -> None:
    """Run the one-row INSERT `sql` for every row of `values` (its values one row after the other), in
    order: as executemany would, in fewer statements."""
    many, width = _multi_row(sql, ROWS_PER_INSERT)
    step = width * ROWS_PER_INSERT
    whole = len(values) - len(values) % step
    if whole:
        conn.executemany(many, [values[i : i + step] for i in range(0, whole, step)])
    if whole < len(values):
        conn.executemany(sql, [values[i : i + width] for i in range(whole, len(values), width)])


class _Incoming(NamedTuple):
    """An entry checked against its table, with what writing it stores (a tuple: built per entry)."""

    entry: LogEntry
    table: SqliteTable
    pk: KeyValue
    sk: KeyValue
    slot: tuple[str, KeyValue, KeyValue]
    doc: str | None
    key_json: str


def _version(value: Any, what: str) -> Version:
    if (
        not isinstance(value, tuple)
        or len(value) != 2
        or type(value[0]) is not int
        or value[0] < 0
        or type(value[1]) is not str
        or not value[1]
    ):
        raise ValidationError(f"{what} must be a (non-negative integer, region) pair, got {value!r}")
    return cast(Version, value)


def _row_entry(table: SqliteTable, row: tuple[Any, ...]) -> LogEntry:
    """A stored item or tombstone as the entry that recreates it elsewhere (snapshots, repairs)."""
    pk, sk, doc, hlc, region, prev_hlc, prev_region, seq = row
    return LogEntry(
        seq=seq,
        table=table.schema.name,
        kind="REMOVE" if doc is None else "INSERT",
        key=table.key_of_row(pk, sk),
        old=None,
        new=None if doc is None else cast(Item, orjson.loads(doc)),
        written_ms=HybridLogicalClock.physical_ms(hlc),
        origin=region,
        version=(hlc, region),
        previous=None if prev_hlc is None else (prev_hlc, prev_region),
    )


class SqliteReplica:
    """The storage side of multi-master replication over one SqliteDatabase (ReplicaStore).

    - `apply` writes, in ONE transaction, every entry that supersedes the local version of its key under
      its table's conflict rule (model.supersedes: the higher version, or the lower on a first-writer-wins
      table), re-logs it with its origin, version and previous version, records conflicts, advances the
      HLC and stores the source's checkpoint: a crash at any instant leaves the whole batch or none of it.
      The follow stream, backfill and anti-entropy (pull and push) all merge here, by that one rule.
    - Versions compare as (hlc, region) tuples; an equal version is the same write, skipped.
    - Only tables opened on the database (`db.table(schema)`) take part; an entry of another table
      refuses its whole batch with ValidationError.
    """

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        with db.transaction("creating the replication tables") as conn:
            for statement in _REPLICA_SQL:
                conn.execute(statement)
            horizon = change_log.meta(conn, "tombstone_horizon")
        # Tombstones older than this were trimmed (here, and soon everywhere): they are left out of
        # digests and repairs, and one arriving late is not stored again, so trimming can finish.
        self._horizon: int = horizon or 0
        # The catch-ups (by source) applying while the key-hash indexes are dropped; built again when the
        # last is done. A restart builds them too (SqliteTable.create), so a crash leaves none missing.
        self._deferring: set[str] = set()
        self._deferring_lock = threading.Lock()

    @property
    def region(self) -> str:
        return self.db.region

    # -- the log (the database's own) ----------------------------------------------------------------

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
        """See SqliteDatabase.read_log."""
        return self.db.read_log(
            after,
            limit=limit,
            tables=tables,
            exclude_origin=exclude_origin,
            origins=origins,
            old_images=old_images,
        )

    def head_seq(self) -> int:
        return self.db.head_seq()

    def clock_version(self) -> int:
        return self.db.hlc.last

    def cap_clock(self, ceiling: Callable[[], int | None]) -> None:
        self.db.hlc.ceiling = ceiling

    def trimmed_through(self) -> int:
        return self.db.trimmed_through()

    def add_listener(self, callback: Callable[[], None]) -> None:
        """See SqliteDatabase.add_listener: called after local writes and applies that logged changes."""
        self.db.add_listener(callback)

    # -- applying ------------------------------------------------------------------------------------

    def apply(self, source: str, entries: Sequence[LogEntry], checkpoint: int | None) -> ApplyResult:
        """Apply a peer's batch and store `checkpoint` as the position reached in `source`'s log.

        A malformed entry refuses the whole batch (ValidationError) before anything is written.
        """
        if checkpoint is not None and (type(checkpoint) is not int or checkpoint < 0):
            raise ValidationError(f"checkpoint must be a non-negative integer, got {checkpoint!r}")
        tables = self.db.tables
        incoming = [self._checked(entry, tables) for entry in entries]
        db = self.db
        with db.transaction(f"applying {len(incoming)} changes from {source}") as conn:
            result, logged = self._apply_locked(conn, source, incoming, checkpoint)
        if logged:
            db.notify()
        return result

    def defer_key_index(self, holder: str, coming: int) -> bool:
        """Drop the tables' key-hash indexes while `holder` applies a catch-up of about `coming` entries,
        when it is large (DEFER_KEY_INDEX_MIN, and a quarter of the rows held); True while they are.

        Until `restore_key_index`, a repair's bucket reads scan their table, slower but as correct: and
        anti-entropy waits anyway while a backlog is on its way.
        """
        with self._deferring_lock:
            if holder in self._deferring:
                return True
            if coming < DEFER_KEY_INDEX_MIN:
                return False
            if not self._deferring:
                tables = list(self.db.tables.values())
                with self.db.transaction(f"dropping the key-hash indexes for {holder}'s catch-up") as conn:
                    held = sum(
                        conn.execute(f"SELECT count(*) FROM {t.sql_table}").fetchone()[0] for t in tables
                    )
                    if coming * 4 < held:
                        return False
                    for table in tables:
                        conn.execute(f"DROP INDEX IF EXISTS {table.sql_key_index}")
            self._deferring.add(holder)
            return True

    def restore_key_index(self, holder: str) -> bool:
        """`holder`'s catch-up is done: build the key-hash indexes again once no other one defers them.
        True when this built them."""
        with self._deferring_lock:
            if holder not in self._deferring:
                return False
            self._deferring.discard(holder)
            if self._deferring:
                return False
            with self.db.transaction("building the key-hash indexes again") as conn:
                for table in self.db.tables.values():
                    conn.execute(table.sql_create_key_index)
            return True

    def _checked(self, entry: LogEntry, tables: Mapping[str, SqliteTable]) -> _Incoming:
        """The entry with what writing it stores; ValidationError when it is malformed.

        A catch-up checks hundreds of thousands: the key is checked in place, not through a call per
        attribute, and one that fails goes the thorough way (`stored_key`) for the error to raise.
        """
        table = tables.get(entry.table)
        if table is None:
            raise ValidationError(f"table {entry.table!r} is not replicated here")
        _version(entry.version, "version")
        if entry.previous is not None:
            _version(entry.previous, "previous version")
        if type(entry.origin) is not str or not entry.origin:
            raise ValidationError(f"origin must be a region name, got {entry.origin!r}")
        if type(entry.written_ms) is not int:
            raise ValidationError(f"written_ms must be an integer, got {entry.written_ms!r}")
        key, new, kind = entry.key, entry.new, entry.kind
        partition, sort = table.key_names
        pk = sk = None
        if type(key) is dict:
            pk = key.get(partition)
            sk = NO_SORT if sort is None else key.get(sort)
        if not (
            ((type(pk) is str and pk) or type(pk) is int)
            and ((type(sk) is str and (sk or sort is None)) or type(sk) is int)
            and len(key) == (1 if sort is None else 2)  # with the attributes found: exactly the key's
        ):
            # Floats (finite ones are keys too), or no key: the thorough way, which raises if it must.
            pk, sk = table.stored_key(key)
        if kind not in ("INSERT", "MODIFY", "REMOVE"):
            raise ValidationError(f"{entry.table} {entry.key}: unknown change kind {entry.kind!r}")
        if (kind == "REMOVE") != (new is None):
            raise ValidationError(
                f"{entry.table} {entry.key}: a REMOVE carries no new image, and only a REMOVE"
            )
        doc: str | None = None
        if new is not None:
            doc = self._image(table, pk, sk, entry)
        # Key values as every region spells them: only a float may change (1.0 is the key 1).
        canonical_pk = canonical_key_value(pk) if type(pk) is float else pk
        canonical_sk = canonical_key_value(sk) if type(sk) is float else sk
        key_json = orjson.dumps(
            {partition: canonical_pk} if sort is None else {partition: canonical_pk, sort: canonical_sk}
        ).decode()
        return _Incoming(entry, table, pk, sk, (entry.table, canonical_pk, canonical_sk), doc, key_json)

    @staticmethod
    def _image(table: SqliteTable, pk: KeyValue, sk: KeyValue, entry: LogEntry) -> str:
        """The JSON to store for an entry's new image.

        Checks its key and index keys only: the origin ran check_item on it, and on this hot path a deep
        check again would double the cost of applying.
        """
        new = entry.new
        # The image's key attributes equal the entry's key (checked already): compared in place, which
        # costs a third of re-deriving and re-checking its stored key.
        key = entry.key
        if not isinstance(new, dict):
            raise ValidationError(f"{entry.table} {entry.key}: the new image is not an item of that key")
        for name in key:
            value = new.get(name)
            if value != key[name] or not is_key_value(value):
                raise ValidationError(f"{entry.table} {entry.key}: the new image is not an item of that key")
        for attribute, index in table.index_attributes:
            if attribute in new and not is_key_value(new[attribute]):
                raise ValidationError(f"{entry.table} {entry.key}: {attribute} keys index {index}")
        try:
            return orjson.dumps(new).decode()
        except TypeError as exc:
            raise ValidationError(f"{entry.table} {entry.key}: the new image is not JSON: {exc}") from exc

    def _apply_locked(
        self, conn: sqlite3.Connection, source: str, incoming: list[_Incoming], checkpoint: int | None
    ) -> tuple[ApplyResult, bool]:
        db = self.db
        now = db.clock.now_ms()
        # The batch may hold one key several times: later entries compare with what earlier ones wrote.
        current = self._current_rows(conn, incoming)
        seq = change_log.head_seq(conn)
        # The rows to write, their values one after the other: see `_insert_rows`.
        log_values: list[Any] = []
        item_values: dict[str, list[Any]] = {}
        conflicts: list[tuple[ConflictRecord, tuple[Any, ...]]] = []
        applied: list[LogEntry] = []
        horizon = self._horizon
        newest = 0
        for change in incoming:
            entry = change.entry
            version = entry.version
            hlc, region = version
            if hlc > newest:
                newest = hlc
            doc = change.doc
            local_doc, local_version, local_previous = current.get(change.slot, _ABSENT)
            if local_version is None and doc is None and hlc < horizon:
                continue  # a tombstone already trimmed here, brought back by a late repair
            rule = change.table.schema.conflict_rule
            if rule == FIRST_WRITER_WINS:
                if doc is None:
                    continue  # an item written once is never deleted: no tombstone may remove or block it
                if local_doc is None:
                    local_version = None  # a tombstone (of an older file) blocks no first write
            if local_version is not None:
                if concurrent(version, entry.previous, local_version, local_previous):
                    conflicts.append(self._conflict(change, local_doc, local_version, now, source))
                if not supersedes(rule, version, local_version):
                    continue
            seq += 1
            kind: ChangeKind = "REMOVE" if doc is None else "INSERT" if local_doc is None else "MODIFY"
            previous = entry.previous
            prev_hlc, prev_region = (None, None) if previous is None else previous
            if local_version is None:
                khash, rhash = row_hashes(change.pk, change.sk, hlc, region, doc is None)
            else:
                # The row exists (here or earlier in the batch), so the upsert updates it and keeps its
                # key hash (it does not set khash): hashing the key again would cost as much as the row.
                khash, rhash = 0, row_hash(change.pk, change.sk, hlc, region, doc is None)
            log_values += (
                seq,
                entry.table,
                kind,
                change.key_json,
                local_doc,
                doc,
                entry.written_ms,
                entry.origin,
                hlc,
                region,
                prev_hlc,
                prev_region,
                now,
                entry.trace,
            )
            values = item_values.get(entry.table)
            if values is None:
                values = item_values[entry.table] = []
            values += (change.pk, change.sk, doc, hlc, region, prev_hlc, prev_region, seq, khash, rhash)
            current[change.slot] = (doc, version, previous)
            applied.append(entry)
        if log_values:
            _insert_rows(conn, change_log.APPEND_AT, log_values)
            tables = self.db.tables
            for name, values in item_values.items():
                _insert_rows(conn, tables[name].sql_upsert, values)
        recorded = self._record_conflicts(conn, conflicts)
        if newest:
            # Later local writes must carry versions above every version seen, here and after a restart.
            change_log.store_version(conn, db.hlc.observe(newest))
        if checkpoint is not None:
            conn.execute(
                "INSERT INTO checkpoints (source, seq) VALUES (?, ?) "
                "ON CONFLICT (source) DO UPDATE SET seq = excluded.seq",
                (source, checkpoint),
            )
        result = ApplyResult(
            applied=len(applied),
            skipped=len(incoming) - len(applied),
            conflicts=recorded,
            applied_entries=applied,
        )
        return result, bool(log_values)

    @staticmethod
    def _current_rows(conn: sqlite3.Connection, incoming: list[_Incoming]) -> dict[_Slot, _Local]:
        """The stored (doc, version, previous version) of the batch's keys that are held here, by slot."""
        keys: dict[str, dict[_Slot, tuple[KeyValue, KeyValue]]] = {}
        for change in incoming:
            keys.setdefault(change.table.sql_table, {})[change.slot] = (change.pk, change.sk)
        current: dict[_Slot, _Local] = {}
        for sql_table, wanted in keys.items():
            pairs = list(wanted.values())
            name = next(iter(wanted))[0]
            for start in range(0, len(pairs), LOOKUP_KEYS):
                chunk = pairs[start : start + LOOKUP_KEYS]
                size = min(LOOKUP_KEYS, 1 << (len(chunk) - 1).bit_length())
                chunk += [chunk[-1]] * (size - len(chunk))
                # CROSS JOIN keeps the keys outside, so each is one seek of the primary key ("(pk, sk) IN
                # (VALUES ...)" scans the table).
                rows = conn.execute(
                    "SELECT t.pk, t.sk, t.doc, t.hlc, t.region, t.prev_hlc, t.prev_region "
                    f"FROM (VALUES {', '.join(['(?, ?)'] * size)}) AS v CROSS JOIN {sql_table} AS t "
                    "ON t.pk = v.column1 AND t.sk = v.column2",
                    [value for pair in chunk for value in pair],
                )
                for pk, sk, doc, hlc, region, prev_hlc, prev_region in rows:
                    current[(name, canonical_key_value(pk), canonical_key_value(sk))] = (
                        doc,
                        (hlc, region),
                        None if prev_hlc is None else (prev_hlc, prev_region),
                    )
        return current

    @staticmethod
    def _conflict(
        change: _Incoming, local_doc: str | None, local_version: Version, now: int, source: str
    ) -> tuple[ConflictRecord, tuple[Any, ...]]:
        entry = change.entry
        local_image = None if local_doc is None else cast(Item, orjson.loads(local_doc))
        ours = (local_version, local_image, local_doc)
        theirs = (entry.version, entry.new, change.doc)
        rule = change.table.schema.conflict_rule
        winner, loser = (theirs, ours) if supersedes(rule, entry.version, local_version) else (ours, theirs)
        record = ConflictRecord(
            table=entry.table,
            key=orjson.loads(change.key_json),
            winner_version=winner[0],
            winner_image=winner[1],
            loser_version=loser[0],
            loser_image=loser[1],
            detected_ms=now,
            source=source,
        )
        row = (
            entry.table,
            change.key_json,
            winner[0][0],
            winner[0][1],
            winner[2],
            loser[0][0],
            loser[0][1],
            loser[2],
            now,
            source,
        )
        return record, row

    @staticmethod
    def _record_conflicts(
        conn: sqlite3.Connection, conflicts: list[tuple[ConflictRecord, tuple[Any, ...]]]
    ) -> list[ConflictRecord]:
        """Store the conflicts not recorded before (the same pair may arrive again through another region)."""
        recorded: list[ConflictRecord] = []
        for record, row in conflicts:
            cursor = conn.execute(
                f"INSERT OR IGNORE INTO conflicts ({_CONFLICT_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            if cursor.rowcount == 1:
                recorded.append(record)
        if recorded:
            change_log.add_meta(conn, "conflicts", len(recorded))
        return recorded

    # -- checkpoints and acknowledgements ------------------------------------------------------------

    def checkpoint(self, source: str) -> int | None:
        """The position reached in `source`'s log (None before the first batch or backfill from it)."""
        row = self._read_one("SELECT seq FROM checkpoints WHERE source = ?", (source,))
        return None if row is None else int(row[0])

    def checkpoints(self) -> dict[str, int]:
        return dict(self._read_all("SELECT source, seq FROM checkpoints ORDER BY source", ()))

    def record_ack(self, peer: str, seq: int) -> None:
        """Remember that `peer` holds everything of our log up to `seq` (it asked to read after it)."""
        if type(seq) is not int or seq < 0:
            raise ValidationError(f"an acknowledged seq is a non-negative integer, got {seq!r}")
        with self.db.transaction(f"recording {peer}'s acknowledgement") as conn:
            conn.execute(
                "INSERT INTO acks (peer, seq) VALUES (?, ?) "
                "ON CONFLICT (peer) DO UPDATE SET seq = excluded.seq",
                (peer, seq),
            )

    def acks(self) -> dict[str, int]:
        return dict(self._read_all("SELECT peer, seq FROM acks ORDER BY peer", ()))

    # -- snapshots and anti-entropy ------------------------------------------------------------------

    def snapshot(self, after: str | None, limit: int, tables: Collection[str] | None = None) -> SnapshotPage:
        """A page of every item and tombstone of the open tables (or of `tables`), by table then key.

        Each page is one consistent read, but pages are read at different times: a caller applies every
        page, then follows the log from the FIRST page's `head_seq`. Whatever changed while it paged is
        in the log after that seq, and applying keeps the newest version, so the copy converges.
        """
        check_limit(limit)
        open_tables = self.db.tables
        names = sorted(open_tables if tables is None else set(tables) & set(open_tables))
        position: list[Any] | None = None
        if after is not None:
            position = decode_cursor(after)
            if (
                not isinstance(position, list)
                or len(position) != 3
                or position[0] not in names
                or not all(is_key_value(v) or v == NO_SORT for v in position[1:])
            ):
                raise ValidationError(f"malformed snapshot cursor {after!r}")
            names = names[names.index(position[0]) :]
        entries: list[LogEntry] = []
        cursor: str | None = None
        try:
            with self.db.engine.read() as conn:
                head = change_log.head_seq(conn)
                held = (
                    dict(conn.execute("SELECT source, seq FROM checkpoints").fetchall())
                    if after is None
                    else {}
                )
                for name in names:
                    if entries and len(entries) == limit:
                        # The page ended exactly with the previous table: go on after its last row.
                        last_entry = entries[-1]
                        previous = open_tables[last_entry.table]
                        cursor = encode_cursor([last_entry.table, *previous.stored_key(last_entry.key)])
                        break
                    table = open_tables[name]
                    sql = f"SELECT {_ROW_SELECT} FROM {table.sql_table} "
                    params: tuple[Any, ...] = ()
                    if position is not None and position[0] == name:
                        sql += "WHERE (pk, sk) > (?, ?) "
                        params = (position[1], position[2])
                    room = limit - len(entries)
                    rows = conn.execute(sql + "ORDER BY pk, sk LIMIT ?", (*params, room + 1)).fetchall()
                    entries += [_row_entry(table, row) for row in rows[:room]]
                    if len(rows) > room:
                        last = rows[room - 1]
                        cursor = encode_cursor([name, last[0], last[1]])
                        break
        except sqlite3.Error as exc:
            raise StorageError(f"reading a snapshot of {self.db.path} failed: {exc}") from exc
        return SnapshotPage(entries=entries, cursor=cursor, head_seq=head, checkpoints=held)

    def digest(self, table: str, buckets: int = 64, before: int | None = None) -> list[str]:
        """Per bucket of key hashes, the XOR of the hashes of (key, version, tombstone) of its rows.

        Equal digests mean equal versions, hence equal contents, in every region. The leaves are kept by
        triggers as rows are written (tables.py), so a digest reads LEAVES small rows whatever the size
        of the table. With `before`, only versions below it count: the rows at or above it (the last
        seconds' writes, found through the log's records: SqliteTable.sql_young) are XORed back out.
        """
        digests.check_buckets(buckets)
        sqlite_table = self._table(table)
        leaves = [0] * digests.LEAVES
        try:
            with self.db.engine.read() as conn:
                for leaf, x in conn.execute(f"SELECT leaf, x FROM {sqlite_table.sql_leaves}"):
                    leaves[leaf] = x
                if before is not None:
                    for _pk, _sk, leaf, x in conn.execute(sqlite_table.sql_young, (before, table)):
                        leaves[leaf] ^= x
        except sqlite3.Error as exc:
            raise StorageError(f"reading the digests of {self.db.path} failed: {exc}") from exc
        return digests.fold(leaves, buckets)

    def bucket_entries(self, table: str, bucket: int, buckets: int = 64) -> list[LogEntry]:
        """The items and tombstones of one digest bucket, as entries that recreate them elsewhere."""
        leaves = digests.leaf_range(bucket, buckets)
        low, high = leaves.start << digests.LEAF_SHIFT, leaves.stop << digests.LEAF_SHIFT
        sqlite_table = self._table(table)
        rows = self._read_all(
            f"SELECT {_ROW_SELECT} FROM {sqlite_table.sql_table} WHERE khash >= ? AND khash < ? "
            "AND (doc IS NOT NULL OR hlc >= ?) ORDER BY khash, pk, sk",
            (low, high, self._horizon),
        )
        return [_row_entry(sqlite_table, row) for row in rows]

    def bucket_versions(self, table: str, bucket: int, buckets: int = 64) -> list[tuple[Key, Version]]:
        """The key and version of each item and tombstone of one digest bucket (what a repair compares).

        Read from the key-hash index alone (ten times faster than reaching each row for its tombstone
        flag), so a tombstone under the horizon would be listed too; `entries_of` leaves it out.
        """
        leaves = digests.leaf_range(bucket, buckets)
        low, high = leaves.start << digests.LEAF_SHIFT, leaves.stop << digests.LEAF_SHIFT
        sqlite_table = self._table(table)
        rows = self._read_all(
            f"SELECT pk, sk, hlc, region FROM {sqlite_table.sql_table} WHERE khash >= ? AND khash < ?",
            (low, high),
        )
        return [(sqlite_table.key_of_row(pk, sk), (hlc, region)) for pk, sk, hlc, region in rows]

    def entries_of(self, table: str, keys: Sequence[Key]) -> list[LogEntry]:
        """The items and tombstones of `keys` (those held here), as entries that recreate them elsewhere."""
        sqlite_table = self._table(table)
        stored = [sqlite_table.stored_key(key) for key in keys]
        sql = (
            f"SELECT {_ROW_SELECT} FROM {sqlite_table.sql_table} "
            "WHERE pk = ? AND sk = ? AND (doc IS NOT NULL OR hlc >= ?)"
        )
        try:
            with self.db.engine.read() as conn:
                rows = [row for pk, sk in stored for row in conn.execute(sql, (pk, sk, self._horizon))]
        except sqlite3.Error as exc:
            raise StorageError(f"reading entries of {self.db.path} failed: {exc}") from exc
        return [_row_entry(sqlite_table, row) for row in rows]

    def state_digest(self, tables: Collection[str]) -> str:
        """One digest of every live item (key, version and image) of `tables`: equal iff the states are."""
        hasher = hashlib.blake2b(digest_size=20)
        try:
            with self.db.engine.read() as conn:
                for name in sorted(tables):
                    sql_table = self._table(name).sql_table
                    rows = conn.execute(
                        f"SELECT pk, sk, doc, hlc, region FROM {sql_table} "
                        "WHERE doc IS NOT NULL ORDER BY pk, sk"
                    ).fetchall()
                    for pk, sk, doc, hlc, region in rows:
                        item = orjson.loads(doc)
                        key = [name, canonical_key_value(pk), canonical_key_value(sk), hlc, region]
                        hasher.update(orjson.dumps([*key, item], option=orjson.OPT_SORT_KEYS) + b"\n")
        except sqlite3.Error as exc:
            raise StorageError(f"digesting {self.db.path} failed: {exc}") from exc
        return hasher.hexdigest()

    # -- trimming ------------------------------------------------------------------------------------

    def trim(self, peers: Collection[str], retention_ms: int, now_ms: int) -> int:
        """Remove log records and tombstones every peer has and that are older than the retention.

        A log record goes once its seq <= every peer's acknowledged seq (a peer that never acknowledged
        blocks everything) and it was logged more than `retention_ms` before `now_ms`; the log is cut
        as a prefix, so `trimmed_through` is exact. A tombstone goes once the record that wrote it is
        trimmed and its version is older than the retention. Returns log records + tombstones removed.
        """
        if type(retention_ms) is not int or retention_ms < 0:
            raise ValidationError(f"retention_ms must be a non-negative integer, got {retention_ms!r}")
        db = self.db
        cutoff_ms = now_ms - retention_ms
        removed = 0
        with db.transaction("trimming the change log") as conn:
            acked = dict(conn.execute("SELECT peer, seq FROM acks").fetchall())
            if any(peer not in acked for peer in peers):
                return 0
            head = change_log.head_seq(conn)
            reach = min([head, *(acked[peer] for peer in peers)])
            trimmed = change_log.trimmed_through(conn)
            (young,) = conn.execute(
                "SELECT min(seq) FROM changes WHERE seq > ? AND seq <= ? AND logged_ms >= ?",
                (trimmed, reach, cutoff_ms),
            ).fetchone()
            through = reach if young is None else young - 1
            if through > trimmed:
                removed += conn.execute("DELETE FROM changes WHERE seq <= ?", (through,)).rowcount
                change_log.set_meta(conn, "trimmed_through", through)
                trimmed = through
            oldest_kept = HybridLogicalClock.pack(max(cutoff_ms, 0))
            for table in db.tables.values():
                removed += conn.execute(
                    f"DELETE FROM {table.sql_table} WHERE doc IS NULL AND seq <= ? AND hlc < ?",
                    (trimmed, oldest_kept),
                ).rowcount
            # Only tombstones every peer has (their record trimmed) fall under the horizon.
            (oldest_live_tombstone,) = conn.execute(
                "SELECT min(hlc) FROM ("
                + " UNION ALL ".join(
                    f"SELECT hlc FROM {t.sql_table} WHERE doc IS NULL AND seq > ?" for t in db.tables.values()
                )
                + ")",
                (trimmed,) * len(db.tables),
            ).fetchone()
            horizon = (
                oldest_kept if oldest_live_tombstone is None else min(oldest_kept, oldest_live_tombstone)
            )
            if horizon > self._horizon:
                change_log.set_meta(conn, "tombstone_horizon", horizon)
                self._horizon = horizon
            conn.execute(
                "DELETE FROM conflicts WHERE id <= (SELECT max(id) FROM conflicts) - ?", (MAX_CONFLICTS,)
            )
        return removed

    # -- conflicts -----------------------------------------------------------------------------------

    def conflicts(self, limit: int = 100) -> list[ConflictRecord]:
        """The newest conflicts recorded here, newest first."""
        check_limit(limit)
        rows = self._read_all(f"SELECT {_CONFLICT_COLUMNS} FROM conflicts ORDER BY id DESC LIMIT ?", (limit,))
        return [
            ConflictRecord(
                table=tbl,
                key=orjson.loads(key),
                winner_version=(w_hlc, w_region),
                winner_image=None if w_doc is None else orjson.loads(w_doc),
                loser_version=(l_hlc, l_region),
                loser_image=None if l_doc is None else orjson.loads(l_doc),
                detected_ms=detected_ms,
                source=source,
            )
            for tbl, key, w_hlc, w_region, w_doc, l_hlc, l_region, l_doc, detected_ms, source in rows
        ]

    def conflict_count(self) -> int:
        """How many conflicts were ever detected here (the conflict log keeps only the newest)."""
        row = self._read_one("SELECT value FROM meta WHERE name = 'conflicts'", ())
        return 0 if row is None else int(row[0])

    # -- reading -------------------------------------------------------------------------------------

    def _table(self, name: str) -> SqliteTable:
        table = self.db.tables.get(name)
        if table is None:
            raise ValidationError(f"table {name!r} is not replicated here")
        return table

    def _read_all(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            return self.db.engine.reader().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"reading replication state of {self.db.path} failed: {exc}") from exc

    def _read_one(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        rows = self._read_all(sql, params)
        return rows[0] if rows else None
