"""bm25 as SQLite FTS5 computes it (k1 1.2, b 0.75, fields weighted by WEIGHTS), for the adapters that
rank by hand: the memory fake and DynamoDB's inverted index order their matches as the embedded one."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from bookstore.storage.words import WEIGHTS

_K1 = 1.2
_B = 0.75

# Per document: for each word of the query, how often it occurs in each field (in FIELDS order).
Occurrences = Mapping[str, Sequence[Sequence[int]]]


def bm25_order(
    matching: Occurrences,
    lengths: Mapping[str, int],
    documents: int,
    average_length: float,
    holding: Sequence[int],
) -> list[str]:
    """The ids of `matching` best first, ties by id.

    `lengths` is each matching document's word count, `documents` how many the index holds,
    `average_length` their mean word count, `holding[i]` how many documents hold the query's word i.
    """
    scores: dict[str, float] = {}
    for i, held in enumerate(holding):
        # FTS5's idf, floored at a tiny positive value so a word in most documents still counts.
        idf = math.log((documents - held + 0.5) / (held + 0.5))
        idf = idf if idf > 0 else 1e-6
        for doc_id, counts in matching.items():
            weighted = sum(w * n for w, n in zip(WEIGHTS, counts[i], strict=True))
            norm = _K1 * (1 - _B + _B * lengths[doc_id] / average_length)
            scores[doc_id] = scores.get(doc_id, 0.0) + idf * weighted * (_K1 + 1) / (weighted + norm)
    return sorted(matching, key=lambda doc_id: (-scores[doc_id], doc_id))


def occurrences(words: Sequence[Sequence[str]], terms: Sequence[str]) -> list[list[int]]:
    """Per query word, its occurrences in each field of a document's folded `words`; the last word of
    the query counts the words it begins, as a prefix."""
    last = len(terms) - 1
    return [
        [sum(1 for w in field if (w.startswith(term) if i == last else w == term)) for field in words]
        for i, term in enumerate(terms)
    ]


def matches(counts: Sequence[Sequence[int]]) -> bool:
    """Whether every word of the query occurs in some field (`counts` from `occurrences`)."""
    return all(any(fields) for fields in counts)
