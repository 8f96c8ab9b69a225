"""Words of the search index: how text is cut into words and folded, the fields and their weights.

Every SearchIndex adapter cuts and folds the same way (SQLite FTS5's unicode61 tokenizer with
remove_diacritics 2, which the memory fake reproduces), so a query finds the same documents on each.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

FIELDS = ("name", "author", "category")
# bm25 column weights, in FIELDS order: a word of the title says more than one of the category.
WEIGHTS = (10.0, 4.0, 2.0)
# Beyond this many words a query only gets slower, never better.
MAX_TOKENS = 16
# Queries matching more books than this are not scored by bm25: scoring every match of a common word
# costs tens of milliseconds at 100k books, listing the first matches in static order well under one.
RANKED_MATCHES = 500


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


# In ASCII text the tokenizer's word characters are exactly the letters and digits.
_ASCII_WORD = re.compile(r"[A-Za-z0-9]+")


def word_count(text: str) -> int:
    """len(tokens(text)), without building the words when the text is ASCII (most titles and names)."""
    return len(_ASCII_WORD.findall(text)) if text.isascii() else len(tokens(text))


def static_rank(fields: Mapping[str, str]) -> tuple[int, int]:
    """How a document ranks among the many matches of a common word: its title's word count, then its
    word count in all fields; fewer first (the closer its title is to the words asked for)."""
    counts = [word_count(str(fields.get(name) or "")) for name in FIELDS]
    return counts[0], sum(counts)


def folded(word: str) -> str:
    """`word` lower-cased and without diacritics, as the index compares words."""
    return "".join(c for c in unicodedata.normalize("NFKD", word) if unicodedata.category(c) != "Mn").lower()


def folded_fields(fields: Mapping[str, str]) -> tuple[tuple[str, ...], ...]:
    """The folded words of each of a document's FIELDS, as the index compares them."""
    return tuple(tuple(folded(w) for w in tokens(str(fields.get(name) or ""))) for name in FIELDS)
