"""The embedded SearchIndex adapter: SQLite FTS5 over name, author and category, each query's work bounded.

A book matches when every word of the query occurs in one of its fields, the last word as a prefix.
How matches are ordered depends on how many there are:
- Up to RANKED_MATCHES (500): by FTS5's bm25 (fields weighted by WEIGHTS: title 10, author 4,
  category 2), best first, ties by document id.
- More than that (a common word, or a short prefix): not scored. Books whose title holds every word
  come first, then the others; each group in static rank order: fewer words in the title first, then
  fewer words in all, then the order the books were indexed in (a change that keeps both word counts
  keeps a book's place). So an exact title match leads the
  thousands of longer titles holding its words, as it does under bm25.
The static rank is the FTS5 rowid (title words << 48 | all words << 32 | sequence within that pair),
so `ORDER BY rowid LIMIT k` reads the first k matches of a doclist and stops: no query reads or
scores more than RANKED_MATCHES + 1 rows of the index (prefixes aside, which FTS5 expands first).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

from bookstore.storage.sqlite.engine import SqliteEngine
from bookstore.storage.words import FIELDS, MAX_TOKENS, RANKED_MATCHES, WEIGHTS, static_rank, tokens

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (rid INTEGER PRIMARY KEY, doc_id TEXT NOT NULL UNIQUE);
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5 (
  name, author, category, tokenize = 'unicode61 remove_diacritics 2'
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""
# Files written before rowids were static ranks have no layout, and are emptied (cursor too) on open:
# the consumer then rebuilds the index from the table, as after a trimmed stream.
_LAYOUT = "static-rank-rowid"
_SEQUENCE_BITS = 32
_MAX_WORDS = 0xFFFF
_MAX_TITLE_WORDS = 0x7FFF

_MATCHED = "SELECT count(*) FROM (SELECT rowid FROM fts WHERE fts MATCH ? LIMIT ?)"
_SCORED = (
    "SELECT d.doc_id FROM fts JOIN documents d ON d.rid = fts.rowid"
    " WHERE fts MATCH ? ORDER BY bm25(fts, ?, ?, ?), d.doc_id LIMIT ?"
)
_IN_STATIC_ORDER = (
    "SELECT d.doc_id FROM fts JOIN documents d ON d.rid = fts.rowid"
    " WHERE fts MATCH ? ORDER BY fts.rowid LIMIT ?"
)


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


def rank_bits(fields: Mapping[str, str]) -> int:
    """The static rank part of a document's rowid (its low bits are the sequence within that rank)."""
    title, words = static_rank(fields)
    return (min(title, _MAX_TITLE_WORDS) << 16 | min(words, _MAX_WORDS)) << _SEQUENCE_BITS


class SqliteSearchIndex:
    """Full-text index of documents' fields in one SQLite file, with the feeding consumer's cursor."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._engine = SqliteEngine(path, kind="search index")
        self._engine.script(_SCHEMA, "creating the schema")
        with self._engine.transaction("checking the layout") as db:
            row = db.execute("SELECT value FROM meta WHERE name = 'layout'").fetchone()
            if row is None or row[0] != _LAYOUT:
                db.execute("DELETE FROM fts")
                db.execute("DELETE FROM documents")
                db.execute("DELETE FROM meta")
                db.execute("INSERT INTO meta (name, value) VALUES ('layout', ?)", (_LAYOUT,))

    def upsert(self, doc_id: str, fields: Mapping[str, str], cursor: str | None = None) -> None:
        rank = rank_bits(fields)
        with self._engine.transaction("upsert") as db:
            row = db.execute("SELECT rid FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
            if row is not None and int(row[0]) >> _SEQUENCE_BITS == rank >> _SEQUENCE_BITS:
                # Same static rank (a price change leaves every field as it was): same place, fewer writes.
                db.execute("DELETE FROM fts WHERE rowid = ?", (row[0],))
                db.execute(
                    "INSERT INTO fts (rowid, name, author, category) VALUES (?, ?, ?, ?)",
                    (row[0], *_values(fields)),
                )
            else:
                _remove(db, doc_id)
                # The next sequence number among documents of the same static rank: later ones come after.
                top = db.execute(
                    "SELECT max(rid) FROM documents WHERE rid BETWEEN ? AND ?",
                    (rank, rank + (1 << _SEQUENCE_BITS) - 1),
                ).fetchone()[0]
                _insert(db, rank if top is None else int(top) + 1, doc_id, fields)
            if cursor is not None:
                _store_cursor(db, cursor)

    def remove(self, doc_id: str, cursor: str | None = None) -> None:
        with self._engine.transaction("remove") as db:
            _remove(db, doc_id)
            if cursor is not None:
                _store_cursor(db, cursor)

    def rebuild(self, docs: Sequence[tuple[str, Mapping[str, str]]], cursor: str) -> None:
        # A document listed twice is indexed once, with its last fields, where it was first listed.
        latest = dict(docs)
        sequence: dict[int, int] = {}
        rows = []
        for doc_id, fields in latest.items():
            rank = rank_bits(fields)
            n = sequence[rank] = sequence.get(rank, -1) + 1
            rows.append((rank + n, doc_id, fields))
        # In rowid order, FTS5 appends to each doclist instead of merging into it.
        rows.sort(key=lambda row: row[0])
        with self._engine.transaction("rebuild") as db:
            db.execute("DELETE FROM fts")
            db.execute("DELETE FROM documents")
            for rid, doc_id, fields in rows:
                _insert(db, rid, doc_id, fields)
            _store_cursor(db, cursor)

    def search(self, query: str, limit: int = 50) -> list[str]:
        expression = match_expression(query)
        if expression is None or limit <= 0:
            return []
        matched = self._engine.query(_MATCHED, (expression, RANKED_MATCHES + 1), "search")[0][0]
        if matched <= RANKED_MATCHES:
            rows = self._engine.query(_SCORED, (expression, *WEIGHTS, limit), "search")
            return [str(row[0]) for row in rows]
        in_title = f"{{name}} : ({expression})"
        found = [str(row[0]) for row in self._engine.query(_IN_STATIC_ORDER, (in_title, limit), "search")]
        if len(found) < limit:
            elsewhere = f"({expression}) NOT ({in_title})"
            rows = self._engine.query(_IN_STATIC_ORDER, (elsewhere, limit - len(found)), "search")
            found += [str(row[0]) for row in rows]
        return found

    def cursor(self) -> str | None:
        rows = self._engine.query("SELECT value FROM meta WHERE name = 'cursor'", (), "reading the cursor")
        return None if not rows else str(rows[0][0])

    def close(self) -> None:
        self._engine.close()


def _values(fields: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(str(fields.get(name) or "") for name in FIELDS)


def _insert(db: sqlite3.Connection, rid: int, doc_id: str, fields: Mapping[str, str]) -> None:
    db.execute("INSERT INTO documents (rid, doc_id) VALUES (?, ?)", (rid, doc_id))
    db.execute("INSERT INTO fts (rowid, name, author, category) VALUES (?, ?, ?, ?)", (rid, *_values(fields)))


def _remove(db: sqlite3.Connection, doc_id: str) -> None:
    row = db.execute("SELECT rid FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
    if row is not None:
        db.execute("DELETE FROM fts WHERE rowid = ?", (row[0],))
        db.execute("DELETE FROM documents WHERE rid = ?", (row[0],))


def _store_cursor(db: sqlite3.Connection, cursor: str) -> None:
    db.execute(
        "INSERT INTO meta (name, value) VALUES ('cursor', ?)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (cursor,),
    )
