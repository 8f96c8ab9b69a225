"""The embedded Ranking adapter: scores, the scores each event holds, and the cursor, in one SQLite file."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

from bookstore.domain.errors import StaleCursor
from bookstore.ports import Event
from bookstore.storage.scores import decode_scores, encode_scores
from bookstore.storage.sqlite.engine import SqliteEngine

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
            changed = sum(_put(db, event_id, scores) for event_id, scores in events)
            _store_cursor(db, cursor)
            return changed

    def rebuild(self, events: Sequence[Event], cursor: str) -> None:
        with self._engine.transaction("rebuild") as db:
            db.execute("DELETE FROM scores")
            db.execute("DELETE FROM counted")
            for event_id, scores in events:
                _put(db, event_id, scores)
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


def _put(db: sqlite3.Connection, event_id: str, scores: Mapping[str, int]) -> bool:
    """Set the event's scores, un-counting those it held; whether anything changed."""
    new = encode_scores(event_id, scores)
    row = db.execute("SELECT scores FROM counted WHERE event_id = ?", (event_id,)).fetchone()
    old = "" if row is None else str(row[0])
    if old == new:
        return False
    increments: dict[str, int] = {}
    for member, score in decode_scores(old):
        increments[member] = increments.get(member, 0) - score
    for member, score in decode_scores(new):
        increments[member] = increments.get(member, 0) + score
    db.executemany(
        "INSERT INTO scores (member, score) VALUES (?, ?)"
        " ON CONFLICT (member) DO UPDATE SET score = score + excluded.score",
        [(member, delta) for member, delta in increments.items() if delta],
    )
    db.executemany("DELETE FROM scores WHERE member = ? AND score <= 0", [(member,) for member in increments])
    if not new:
        db.execute("DELETE FROM counted WHERE event_id = ?", (event_id,))
    else:
        db.execute(
            "INSERT INTO counted (event_id, scores) VALUES (?, ?)"
            " ON CONFLICT (event_id) DO UPDATE SET scores = excluded.scores",
            (event_id, new),
        )
    return True


def _stored_cursor(db: sqlite3.Connection) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE name = 'cursor'").fetchone()
    return None if row is None else str(row[0])


def _store_cursor(db: sqlite3.Connection, cursor: str) -> None:
    db.execute(
        "INSERT INTO meta (name, value) VALUES ('cursor', ?)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (cursor,),
    )
