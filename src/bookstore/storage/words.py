"""Words of the search index: how text is cut into words and folded, the fields and their weights.

Every SearchIndex adapter cuts and folds the same way (SQLite FTS5's unicode61 tokenizer with
remove_diacritics 2, which the memory fake reproduces), so a query finds the same documents on each.
"""

from __future__ import annotations

import unicodedata

FIELDS = ("name", "author", "category")
# bm25 column weights, in FIELDS order: a word of the title says more than one of the category.
WEIGHTS = (10.0, 4.0, 2.0)
# Beyond this many words a query only gets slower, never better.
MAX_TOKENS = 16


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


def folded(word: str) -> str:
    """`word` lower-cased and without diacritics, as the index compares words."""
    return "".join(c for c in unicodedata.normalize("NFKD", word) if unicodedata.category(c) != "Mn").lower()
