"""The change log of a region's tables file: its schema, its records as LogEntry, its head and trimmed prefix.

`changes` holds every table's writes in commit order by `seq`: local writes and changes applied from
other regions (with their origin, version and the version they replaced). `meta` keeps counters
(`trimmed_through`, the tombstone horizon, the conflict count); `hlc` keeps the newest version issued on
the file, so versions stay unique and rising across processes and restarts. The functions take the
connection of the caller's transaction or read, so several of them see one state.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from typing import Any, cast

import orjson

from bookstore.ports import Item
from bookstore.replication.tables.model import LogEntry, LogTrimmed

SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS hlc (id INTEGER PRIMARY KEY CHECK (id = 0), version INTEGER NOT NULL);
INSERT OR IGNORE INTO hlc (id, version) VALUES (0, 0);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tbl TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    old TEXT,
    new TEXT,
    written_ms INTEGER NOT NULL,
    origin TEXT NOT NULL,
    hlc INTEGER NOT NULL,
    region TEXT NOT NULL,
    prev_hlc INTEGER,
    prev_region TEXT,
    logged_ms INTEGER NOT NULL DEFAULT 0,
    trace TEXT
);
CREATE INDEX IF NOT EXISTS changes_by_table ON changes (tbl, seq);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
COMMIT;
"""

# The records of versions at or above a bound, for the digests that leave young versions out
# (SqliteTable.sql_young). Appended near its end, as versions rise.
VERSION_INDEX = "changes_by_version"
CREATE_VERSION_INDEX = f"CREATE INDEX IF NOT EXISTS {VERSION_INDEX} ON changes (hlc)"
# The columns a LogEntry is read from, in `log_entry`'s order.
COLUMNS = "seq, tbl, kind, key, old, new, written_ms, origin, hlc, region, prev_hlc, prev_region, trace"
# Appending a record whose seq SQLite chooses (a local write) and one whose seq the caller chose (a batch).
APPEND = (
    "INSERT INTO changes (tbl, kind, key, old, new, written_ms, origin, hlc, region, prev_hlc, "
    "prev_region, logged_ms, trace) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
APPEND_AT = (
    "INSERT INTO changes (seq, tbl, kind, key, old, new, written_ms, origin, hlc, region, "
    "prev_hlc, prev_region, logged_ms, trace) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def filtered_read(
    tables: Collection[str] | None, exclude_origin: str | None, origins: Collection[str] | None
) -> tuple[str, tuple[str, ...]]:
    """The SELECT of the log's records (as COLUMNS) with ?1 < seq <= ?2 of `tables` (all when None), not
    of `exclude_origin`, and of `origins` (all when None), in log order; and its parameters after the
    two bounds. Sorted, so one filter always spells one statement (sqlite3 caches them by their text)."""
    where = ["seq > ?", "seq <= ?"]
    params: list[str] = []
    if exclude_origin is not None:
        where.append("origin != ?")
        params.append(exclude_origin)
    # The origins first: SQLite tests the terms in this order, and they are what drops rows (a row that
    # came from the follower); the tables' IN list of eight cost a third more per row when it led.
    # `+tbl`: not through the index changes_by_table, which the planner would choose for an IN on tbl and
    # then sort the rows by seq; the scan of the seq range is the cheaper path and keeps log order.
    for column, values in (("origin", origins), ("+tbl", tables)):
        if values is not None:
            chosen = sorted(set(values))
            where.append(f"{column} IN ({', '.join(['?'] * len(chosen))})" if chosen else "0")
            params += chosen
    return f"SELECT {COLUMNS} FROM changes WHERE {' AND '.join(where)} ORDER BY seq", tuple(params)


def columns(conn: sqlite3.Connection, table: str) -> set[str]:
    """The column names of `table` (to bring a file of an older format up to date)."""
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})").fetchall()}


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the log of an older file up to date, inside the caller's transaction."""
    present = columns(conn, "changes")
    if "logged_ms" not in present:
        # Files from before trimming: their records count as logged when written.
        conn.execute("ALTER TABLE changes ADD COLUMN logged_ms INTEGER NOT NULL DEFAULT 0")
        conn.execute("UPDATE changes SET logged_ms = written_ms")
    if "trace" not in present:
        # Files from before tracing: their records carry no trace context.
        conn.execute("ALTER TABLE changes ADD COLUMN trace TEXT")


def loads(doc: str | None) -> Item | None:
    """A stored image (JSON text, NULL for none) as an item."""
    return None if doc is None else cast(Item, orjson.loads(doc))


def log_entry(row: tuple[Any, ...], *, old_image: bool = True) -> LogEntry:
    """The LogEntry of a `changes` row selected as COLUMNS."""
    seq, tbl, kind, key, old, new, written_ms, origin, hlc, region, prev_hlc, prev_region, trace = row
    return LogEntry(
        seq=seq,
        table=tbl,
        kind=kind,
        key=orjson.loads(key),
        old=loads(old) if old_image else None,
        new=loads(new),
        written_ms=written_ms,
        origin=origin,
        version=(hlc, region),
        previous=None if prev_hlc is None else (prev_hlc, prev_region),
        trace=trace,
    )


def head_seq(conn: sqlite3.Connection) -> int:
    """The seq of the newest record ever logged (0 when none), even if trimmed since."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
    return 0 if row is None else int(row[0])


def trimmed_through(conn: sqlite3.Connection) -> int:
    """The highest seq trimmed from the log (0 when none)."""
    row = conn.execute("SELECT value FROM meta WHERE name = 'trimmed_through'").fetchone()
    return 0 if row is None else int(row[0])


def check_not_trimmed(conn: sqlite3.Connection, after: int, region: str) -> None:
    """Raise LogTrimmed when records after `after` were trimmed away (reading on would skip them)."""
    trimmed = trimmed_through(conn)
    if after < trimmed:
        raise LogTrimmed(
            f"{region}: the change log was trimmed through seq {trimmed}; reading after {after} "
            "would skip changes, re-sync from a snapshot",
            after=after,
            trimmed_through=trimmed,
        )


def stored_version(conn: sqlite3.Connection) -> int:
    """The newest version issued on the file (by any process)."""
    (version,) = conn.execute("SELECT version FROM hlc WHERE id = 0").fetchone()
    return int(version)


def take_version(conn: sqlite3.Connection, candidate: int) -> int:
    """Issue a version at least `candidate` and above every version issued on the file, by any process."""
    (version,) = conn.execute(
        "UPDATE hlc SET version = max(version + 1, ?) WHERE id = 0 RETURNING version", (candidate,)
    ).fetchone()
    return int(version)


def store_version(conn: sqlite3.Connection, version: int) -> None:
    """Record `version` as issued, unless a higher one was."""
    conn.execute("UPDATE hlc SET version = max(version, ?) WHERE id = 0", (version,))


def set_meta(conn: sqlite3.Connection, name: str, value: int) -> None:
    """Set the counter `name` in `meta`."""
    conn.execute(
        "INSERT INTO meta (name, value) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (name, value),
    )


def add_meta(conn: sqlite3.Connection, name: str, increment: int) -> None:
    """Add `increment` to the counter `name` in `meta`."""
    conn.execute(
        "INSERT INTO meta (name, value) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
        (name, increment),
    )


def meta(conn: sqlite3.Connection, name: str) -> int | None:
    """The counter `name` of `meta`, None when never set."""
    row = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return None if row is None else int(row[0])
