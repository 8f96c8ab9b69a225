"""MemorySearchIndex: the SearchIndex port in a dict, for unit tests; orders as the SQLite adapter does.

Words are cut and folded as the embedded adapter's tokenizer does (storage.words); every word of a
query must occur in some field, the last as a prefix. Up to RANKED_MATCHES matches are ordered by
FTS5's bm25 (k1 1.2, b 0.75, the fields weighted by WEIGHTS), best first, ties by document id; more
are not scored: those whose title holds every word first, each group by static rank (storage.words),
then in the order they were indexed (a change keeping the static rank keeps the place). No
persistence.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from bookstore.storage.scoring import bm25_order, matches, occurrences
from bookstore.storage.words import MAX_TOKENS, RANKED_MATCHES, folded, folded_fields, static_rank, tokens

# A document as the index holds it: the folded words of each field, in FIELDS order.
_Words = tuple[tuple[str, ...], ...]


class MemorySearchIndex:
    """Documents' folded words and the feeding consumer's cursor, behind one lock."""

    def __init__(self, ranked_matches: int = RANKED_MATCHES) -> None:
        # Matches scored by bm25 at most (storage.words); tests compare it with DynamoDB's at a lower one.
        self.ranked_matches = ranked_matches
        self._lock = threading.Lock()
        self._docs: dict[str, _Words] = {}
        # Per document: its static rank and when it was indexed, the order of a common word's matches.
        self._order: dict[str, tuple[int, int, int]] = {}
        self._indexed = 0
        self._cursor: str | None = None

    def upsert(self, doc_id: str, fields: Mapping[str, str], cursor: str | None = None) -> None:
        words = folded_fields(fields)
        with self._lock:
            self._docs[doc_id] = words
            rank = static_rank(fields)
            before = self._order.get(doc_id)
            # As the SQLite adapter: a change that keeps the static rank keeps the document's place.
            if before is None or before[:2] != rank:
                self._indexed += 1
                self._order[doc_id] = (*rank, self._indexed)
            if cursor is not None:
                self._cursor = cursor

    def remove(self, doc_id: str, cursor: str | None = None) -> None:
        with self._lock:
            self._docs.pop(doc_id, None)
            self._order.pop(doc_id, None)
            if cursor is not None:
                self._cursor = cursor

    def rebuild(self, docs: Sequence[tuple[str, Mapping[str, str]]], cursor: str) -> None:
        fresh = {doc_id: folded_fields(fields) for doc_id, fields in docs}
        latest = dict(docs)
        order = {doc_id: (*static_rank(latest[doc_id]), n) for n, doc_id in enumerate(fresh)}
        with self._lock:
            self._docs, self._order, self._cursor = fresh, order, cursor
            self._indexed = len(order)

    def search(self, query: str, limit: int = 50) -> list[str]:
        terms = [folded(word) for word in tokens(query)[:MAX_TOKENS]]
        if not terms or limit <= 0:
            return []
        with self._lock:
            docs = dict(self._docs)
            order = dict(self._order)
        holding = [0] * len(terms)
        matching: dict[str, list[list[int]]] = {}
        for doc_id, words in docs.items():
            counts = occurrences(words, terms)
            for i, fields in enumerate(counts):
                holding[i] += any(fields)
            if matches(counts):
                matching[doc_id] = counts
        if not matching:
            return []
        if len(matching) > self.ranked_matches:
            in_title = {d for d, counts in matching.items() if all(fields[0] for fields in counts)}
            return sorted(matching, key=lambda doc_id: (doc_id not in in_title, order[doc_id]))[:limit]
        lengths = {doc_id: sum(len(field) for field in words) for doc_id, words in docs.items()}
        average = sum(lengths.values()) / len(docs)
        return bm25_order(matching, lengths, len(docs), average, holding)[:limit]

    def cursor(self) -> str | None:
        with self._lock:
            return self._cursor
