"""The embedded Ranking adapter: best-seller scores, counted events and the cursor in one SQLite file."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

from bookstore.domain.errors import StorageError
from bookstore.storage.sqlite.single_file import SqliteFile

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scores (member TEXT PRIMARY KEY, score INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (event_id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS scores_by_rank ON scores (score DESC, member ASC);
"""


class SqliteRanking(SqliteFile):
    """Scores of members, each event counted once; `add` is one transaction (scores, event id, cursor)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, _SCHEMA, "ranking database")

    def add(self, event_id: str, scores: Mapping[str, int], cursor: str | None = None) -> bool:
        with self._transaction("add") as db:
            added = _add(db, event_id, scores)
            if added and cursor is not None:
                _store_cursor(db, cursor)
            return added

    def add_all(self, events: Sequence[tuple[str, Mapping[str, int]]], cursor: str) -> int:
        # One transaction for them all: a commit costs more than the events' own statements.
        with self._transaction("add_all") as db:
            added = sum(_add(db, event_id, scores) for event_id, scores in events)
            _store_cursor(db, cursor)
            return added

    def top(self, n: int = 20) -> list[tuple[str, int]]:
        if n <= 0:
            return []
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT member, score FROM scores ORDER BY score DESC, member ASC LIMIT ?", (n,)
                ).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"ranking {self.path}: top failed: {exc}") from exc
        return [(str(member), int(score)) for member, score in rows]

    def cursor(self) -> str | None:
        with self._lock:
            try:
                row = self._db.execute("SELECT value FROM meta WHERE name = 'cursor'").fetchone()
            except sqlite3.Error as exc:
                raise StorageError(f"ranking {self.path}: reading the cursor failed: {exc}") from exc
        return None if row is None else str(row[0])

    def set_cursor(self, cursor: str) -> None:
        with self._transaction("set_cursor") as db:
            _store_cursor(db, cursor)


def _add(db: sqlite3.Connection, event_id: str, scores: Mapping[str, int]) -> bool:
    """Count the event unless it was counted before; whether it was new."""
    inserted = db.execute("INSERT OR IGNORE INTO events (event_id) VALUES (?)", (event_id,))
    if inserted.rowcount == 0:
        return False
    db.executemany(
        "INSERT INTO scores (member, score) VALUES (?, ?)"
        " ON CONFLICT (member) DO UPDATE SET score = score + excluded.score",
        [(member, int(score)) for member, score in scores.items()],
    )
    return True


def _store_cursor(db: sqlite3.Connection, cursor: str) -> None:
    db.execute(
        "INSERT INTO meta (name, value) VALUES ('cursor', ?)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (cursor,),
    )
