"""MemorySearchIndex: the SearchIndex port in a dict, for unit tests; orders as the SQLite adapter does.

Words are cut and folded as the embedded adapter's tokenizer does (storage.words); every word of a
query must occur in some field, the last as a prefix. Up to RANKED_MATCHES matches are ordered by
FTS5's bm25 (k1 1.2, b 0.75, the fields weighted by WEIGHTS), best first, ties by document id; more
are not scored: those whose title holds every word first, each group by static rank (storage.words),
then in the order they were indexed (a change keeping the static rank keeps the place). No
persistence.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence

from bookstore.storage.words import FIELDS, MAX_TOKENS, RANKED_MATCHES, WEIGHTS, folded, static_rank, tokens

_K1 = 1.2
_B = 0.75

# A document as the index holds it: the folded words of each field, in FIELDS order.
_Words = tuple[tuple[str, ...], ...]


class MemorySearchIndex:
    """Documents' folded words and the feeding consumer's cursor, behind one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._docs: dict[str, _Words] = {}
        # Per document: its static rank and when it was indexed, the order of a common word's matches.
        self._order: dict[str, tuple[int, int, int]] = {}
        self._indexed = 0
        self._cursor: str | None = None

    def upsert(self, doc_id: str, fields: Mapping[str, str], cursor: str | None = None) -> None:
        words = _words(fields)
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
        fresh = {doc_id: _words(fields) for doc_id, fields in docs}
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
        # Per term: how often it occurs in each field of each document that holds it.
        hits: list[dict[str, list[int]]] = []
        for i, term in enumerate(terms):
            prefix = i == len(terms) - 1
            found: dict[str, list[int]] = {}
            for doc_id, words in docs.items():
                counts = [
                    sum(1 for w in field if (w.startswith(term) if prefix else w == term)) for field in words
                ]
                if any(counts):
                    found[doc_id] = counts
            hits.append(found)
        matching = set(docs)
        for found in hits:
            matching &= set(found)
        if not matching:
            return []
        if len(matching) > RANKED_MATCHES:
            in_title = set.intersection(*({d for d, counts in found.items() if counts[0]} for found in hits))
            return sorted(matching, key=lambda doc_id: (doc_id not in in_title, order[doc_id]))[:limit]
        lengths = {doc_id: sum(len(field) for field in words) for doc_id, words in docs.items()}
        average = sum(lengths.values()) / len(docs)
        scores: dict[str, float] = {}
        for found in hits:
            # FTS5's idf, floored at a tiny positive value so a word in most documents still counts.
            idf = math.log((len(docs) - len(found) + 0.5) / (len(found) + 0.5))
            idf = idf if idf > 0 else 1e-6
            for doc_id in matching:
                weighted = sum(w * n for w, n in zip(WEIGHTS, found[doc_id], strict=True))
                norm = _K1 * (1 - _B + _B * lengths[doc_id] / average)
                scores[doc_id] = scores.get(doc_id, 0.0) + idf * weighted * (_K1 + 1) / (weighted + norm)
        return sorted(matching, key=lambda doc_id: (-scores[doc_id], doc_id))[:limit]

    def cursor(self) -> str | None:
        with self._lock:
            return self._cursor


def _words(fields: Mapping[str, str]) -> _Words:
    return tuple(tuple(folded(w) for w in tokens(str(fields.get(name) or ""))) for name in FIELDS)
