"""The embedded Ranking adapter: scores, the scores each event holds, and the cursor, in one SQLite file."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from bookstore.domain.errors import StaleCursor
from bookstore.ports import Event
from bookstore.storage.scores import decode_scores, encode_scores
from bookstore.storage.sqlite.engine import SqliteEngine

# Event ids read in one statement at most (SQLite's limit of bound values is far above).
_IDS_PER_READ = 500
# Format 2 keeps each event's scores (to un-count a replaced one); files of format 1 kept only its id.
FORMAT = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scores (member TEXT PRIMARY KEY, score INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counted (event_id TEXT PRIMARY KEY, scores TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS scores_by_rank ON scores (score DESC, member ASC);
"""


class SqliteRanking:
    """Scores of members and the scores each event holds; `put_all` is one transaction with the cursor."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._engine = SqliteEngine(path, kind="ranking database")
        self._engine.script(_SCHEMA, "creating the schema")
        with self._engine.transaction("upgrading the format") as db:
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version < FORMAT:
                # An older file cannot un-count what it counted: drop its cursor, so it is rebuilt.
                db.execute("DROP TABLE IF EXISTS events")
                db.execute("DELETE FROM scores")
                db.execute("DELETE FROM counted")
                db.execute("DELETE FROM meta")
                db.execute(f"PRAGMA user_version = {FORMAT}")

    def put_all(self, events: Sequence[Event], cursor: str) -> int:
        # One transaction for them all: a commit costs more than the events' own statements.
        with self._engine.transaction("put_all") as db:
            if _stored_cursor(db) is None:
                raise StaleCursor(f"ranking {self.path} holds no cursor: rebuild it from the orders")
            changed = _put_batch(db, events)
            _store_cursor(db, cursor)
            return changed

    def rebuild(self, events: Sequence[Event], cursor: str) -> None:
        with self._engine.transaction("rebuild") as db:
            db.execute("DELETE FROM scores")
            db.execute("DELETE FROM counted")
            _put_batch(db, events)
            _store_cursor(db, cursor)

    def top(self, n: int = 20) -> list[tuple[str, int]]:
        if n <= 0:
            return []
        rows = self._engine.query(
            "SELECT member, score FROM scores ORDER BY score DESC, member ASC LIMIT ?", (n,), "top"
        )
        return [(str(member), int(score)) for member, score in rows]

    def cursor(self) -> str | None:
        rows = self._engine.query("SELECT value FROM meta WHERE name = 'cursor'", (), "reading the cursor")
        return None if not rows else str(rows[0][0])

    def close(self) -> None:
        self._engine.close()


def _put_batch(db: sqlite3.Connection, events: Sequence[Event]) -> int:
    """Set each event's scores in turn, un-counting those it held; how many events changed anything.

    The batch is summed in memory first and written once: a member's score moves by one statement per
    batch, not per event, and each event's row is read and written once (per event, four statements
    had cost best sellers about a fifth of an order's instructions, docs/performance.md).
    """
    held: dict[str, str] = {}
    ids = list(dict.fromkeys(event_id for event_id, _ in events))
    for start in range(0, len(ids), _IDS_PER_READ):
        chunk = ids[start : start + _IDS_PER_READ]
        held.update(
            db.execute(
                f"SELECT event_id, scores FROM counted WHERE event_id IN ({', '.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
        )
    increments: dict[str, int] = {}
    touched: dict[str, str] = {}
    changed = 0
    for event_id, scores in events:
        new = encode_scores(event_id, scores)
        old = held.get(event_id, "")
        if old == new:
            continue
        changed += 1
        for member, score in decode_scores(old):
            increments[member] = increments.get(member, 0) - score
        for member, score in decode_scores(new):
            increments[member] = increments.get(member, 0) + score
        held[event_id] = touched[event_id] = new
    moved = [(member, delta) for member, delta in increments.items() if delta]
    db.executemany(
        "INSERT INTO scores (member, score) VALUES (?, ?)"
        " ON CONFLICT (member) DO UPDATE SET score = score + excluded.score",
        moved,
    )
    db.executemany("DELETE FROM scores WHERE member = ? AND score <= 0", [(member,) for member, _ in moved])
    db.executemany(
        "DELETE FROM counted WHERE event_id = ?",
        [(event_id,) for event_id, new in touched.items() if not new],
    )
    db.executemany(
        "INSERT INTO counted (event_id, scores) VALUES (?, ?)"
        " ON CONFLICT (event_id) DO UPDATE SET scores = excluded.scores",
        [(event_id, new) for event_id, new in touched.items() if new],
    )
    return changed


def _stored_cursor(db: sqlite3.Connection) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE name = 'cursor'").fetchone()
    return None if row is None else str(row[0])


def _store_cursor(db: sqlite3.Connection, cursor: str) -> None:
    db.execute(
        "INSERT INTO meta (name, value) VALUES ('cursor', ?)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (cursor,),
    )
