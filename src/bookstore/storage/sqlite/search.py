"""The embedded SearchIndex adapter: SQLite FTS5 over name, author and category, ranked by bm25."""

from __future__ import annotations

import sqlite3
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path

from bookstore.domain.errors import StorageError
from bookstore.storage.sqlite.single_file import SqliteFile

FIELDS = ("name", "author", "category")
# bm25 column weights, in FIELDS order: a word of the title says more than one of the category.
WEIGHTS = (10.0, 4.0, 2.0)
# Beyond this many words a query only gets slower, never better.
MAX_TOKENS = 16

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (rid INTEGER PRIMARY KEY, doc_id TEXT NOT NULL UNIQUE);
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5 (
  name, author, category, tokenize = 'unicode61 remove_diacritics 2'
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""


def tokens(text: str) -> list[str]:
    """The words of `text` as FTS5's unicode61 tokenizer cuts them: runs of letters, digits and marks."""
    words: list[str] = []
    current: list[str] = []
    for ch in text + " ":
        cat = unicodedata.category(ch)
        if cat[0] in "LNM" or cat == "Co":
            current.append(ch)
            continue
        # A run of marks alone is no word to the tokenizer; as a phrase it would match nothing at all.
        if current and any(unicodedata.category(c)[0] != "M" for c in current):
            words.append("".join(current))
        current = []
    return words


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


class SqliteSearchIndex(SqliteFile):
    """Full-text index of documents' fields in one SQLite file, with the feeding consumer's cursor."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, _SCHEMA, "search index")

    def upsert(self, doc_id: str, fields: Mapping[str, str], cursor: str | None = None) -> None:
        with self._transaction("upsert") as db:
            _upsert(db, doc_id, fields)
            if cursor is not None:
                _store_cursor(db, cursor)

    def remove(self, doc_id: str, cursor: str | None = None) -> None:
        with self._transaction("remove") as db:
            rid = _rid(db, doc_id)
            if rid is not None:
                db.execute("DELETE FROM fts WHERE rowid = ?", (rid,))
                db.execute("DELETE FROM documents WHERE rid = ?", (rid,))
            if cursor is not None:
                _store_cursor(db, cursor)

    def rebuild(self, docs: Sequence[tuple[str, Mapping[str, str]]], cursor: str) -> None:
        with self._transaction("rebuild") as db:
            db.execute("DELETE FROM fts")
            db.execute("DELETE FROM documents")
            for doc_id, fields in docs:
                _upsert(db, doc_id, fields)
            _store_cursor(db, cursor)

    def search(self, query: str, limit: int = 50) -> list[str]:
        expression = match_expression(query)
        if expression is None or limit <= 0:
            return []
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT d.doc_id FROM fts JOIN documents d ON d.rid = fts.rowid"
                    " WHERE fts MATCH ? ORDER BY bm25(fts, ?, ?, ?), d.doc_id LIMIT ?",
                    (expression, *WEIGHTS, limit),
                ).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"search index {self.path}: search failed: {exc}") from exc
        return [str(row[0]) for row in rows]

    def cursor(self) -> str | None:
        with self._lock:
            try:
                row = self._db.execute("SELECT value FROM meta WHERE name = 'cursor'").fetchone()
            except sqlite3.Error as exc:
                raise StorageError(f"search index {self.path}: reading the cursor failed: {exc}") from exc
        return None if row is None else str(row[0])


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
