"""The embedded SearchIndex adapter: SQLite FTS5 over name, author and category, ranked by bm25."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

from bookstore.storage.sqlite.engine import SqliteEngine
from bookstore.storage.words import FIELDS, MAX_TOKENS, WEIGHTS, tokens

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (rid INTEGER PRIMARY KEY, doc_id TEXT NOT NULL UNIQUE);
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5 (
  name, author, category, tokenize = 'unicode61 remove_diacritics 2'
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""


def match_expression(text: str) -> str | None:
    """An FTS5 query that cannot be a syntax error: each word quoted, the last a prefix; None if no word."""
    words = tokens(text)[:MAX_TOKENS]
    if not words:
        return None
    # Words hold no '"' (punctuation separates words), so quoting them is enough to neutralise
    # AND/OR/NOT/NEAR, column filters, '*', '^' and parentheses.
    quoted = [f'"{w}"' for w in words]
    quoted[-1] += "*"
    return " ".join(quoted)


class SqliteSearchIndex:
    """Full-text index of documents' fields in one SQLite file, with the feeding consumer's cursor."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._engine = SqliteEngine(path, kind="search index")
        self._engine.script(_SCHEMA, "creating the schema")

    def upsert(self, doc_id: str, fields: Mapping[str, str], cursor: str | None = None) -> None:
        with self._engine.transaction("upsert") as db:
            _upsert(db, doc_id, fields)
            if cursor is not None:
                _store_cursor(db, cursor)

    def remove(self, doc_id: str, cursor: str | None = None) -> None:
        with self._engine.transaction("remove") as db:
            rid = _rid(db, doc_id)
            if rid is not None:
                db.execute("DELETE FROM fts WHERE rowid = ?", (rid,))
                db.execute("DELETE FROM documents WHERE rid = ?", (rid,))
            if cursor is not None:
                _store_cursor(db, cursor)

    def rebuild(self, docs: Sequence[tuple[str, Mapping[str, str]]], cursor: str) -> None:
        with self._engine.transaction("rebuild") as db:
            db.execute("DELETE FROM fts")
            db.execute("DELETE FROM documents")
            for doc_id, fields in docs:
                _upsert(db, doc_id, fields)
            _store_cursor(db, cursor)

    def search(self, query: str, limit: int = 50) -> list[str]:
        expression = match_expression(query)
        if expression is None or limit <= 0:
            return []
        rows = self._engine.query(
            "SELECT d.doc_id FROM fts JOIN documents d ON d.rid = fts.rowid"
            " WHERE fts MATCH ? ORDER BY bm25(fts, ?, ?, ?), d.doc_id LIMIT ?",
            (expression, *WEIGHTS, limit),
            "search",
        )
        return [str(row[0]) for row in rows]

    def cursor(self) -> str | None:
        rows = self._engine.query("SELECT value FROM meta WHERE name = 'cursor'", (), "reading the cursor")
        return None if not rows else str(rows[0][0])

    def close(self) -> None:
        self._engine.close()


def _upsert(db: sqlite3.Connection, doc_id: str, fields: Mapping[str, str]) -> None:
    values = tuple(str(fields.get(name) or "") for name in FIELDS)
    rid = _rid(db, doc_id)
    if rid is None:
        rid = db.execute("INSERT INTO documents (doc_id) VALUES (?)", (doc_id,)).lastrowid
    else:
        db.execute("DELETE FROM fts WHERE rowid = ?", (rid,))
    db.execute("INSERT INTO fts (rowid, name, author, category) VALUES (?, ?, ?, ?)", (rid, *values))


def _rid(db: sqlite3.Connection, doc_id: str) -> int | None:
    row = db.execute("SELECT rid FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
    return None if row is None else int(row[0])


def _store_cursor(db: sqlite3.Connection, cursor: str) -> None:
    db.execute(
        "INSERT INTO meta (name, value) VALUES ('cursor', ?)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (cursor,),
    )
