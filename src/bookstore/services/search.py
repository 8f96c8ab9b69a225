"""Book search: the Books stream kept in a full-text index, and queries answered with the books themselves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bookstore.domain.books import public_view
from bookstore.domain.errors import ValidationError
from bookstore.ports import ChangeBatch, Clock, SearchIndex, Table
from bookstore.services.catalog import all_pages
from bookstore.services.streams import StreamConsumer

MAX_QUERY = 200
MAX_LIMIT = 100
INDEXED = ("name", "author", "category")
# Queries whose ranked ids are kept in memory at most; past it the cache starts over.
MAX_CACHED_QUERIES = 1024


class BookSearch:
    """Follows the Books stream into `index` (upsert on INSERT/MODIFY, remove on REMOVE) and searches it.

    The ranked ids of a query are kept in memory until the index changes, so a repeated query costs
    the table reads of its books alone (a first one adds the index's query, bounded however common its
    words: the SearchIndex adapters say what ranks first). Any batch the consumer applies (or a
    rebuild) empties the cache, so an answer trails the table by no more than the index itself does;
    books deleted since are still left out. An index fed by another process (`cached=False`: the shared
    index of a region's Lambda functions, fed by the search consumer function) is asked every time.
    """

    def __init__(
        self,
        books: Table,
        index: SearchIndex,
        region: str,
        *,
        batch_size: int = 100,
        clock: Clock | None = None,
        cached: bool = True,
    ) -> None:
        self.books = books
        self.index = index
        self._cached = cached
        self._ranked: dict[tuple[str, int], list[str]] = {}
        self.region = region
        self.consumer = StreamConsumer(
            books,
            self.handle,
            cursor=index.cursor(),
            region=region,
            name="search",
            batch_size=batch_size,
            clock=clock,
            rebuild=self.rebuild,
        )

    def handle(self, batch: ChangeBatch) -> None:
        """Apply the batch to the index; the last change stores the batch cursor in its transaction."""
        try:
            for i, record in enumerate(batch.records):
                # Replaying a batch after a failure is harmless: upsert and remove are idempotent.
                cursor = batch.cursor if i == len(batch.records) - 1 else None
                doc_id = str(record.key.get("id", ""))
                if record.kind == "REMOVE" or record.new is None:
                    self.index.remove(doc_id, cursor)
                else:
                    self.index.upsert(doc_id, _fields(record.new), cursor)
        finally:
            # Replaced once the index holds the batch: a search that took the old cache fills a dropped one.
            if batch.records:
                self._ranked = {}

    def rebuild(self, cursor: str) -> None:
        """Index every book the table holds now, replacing the whole index, and store `cursor`."""
        books = all_pages(lambda c: self.books.scan(limit=500, cursor=c))
        self.index.rebuild([(str(book["id"]), _fields(book)) for book in books], cursor)
        self._ranked = {}

    def search(self, q: str, limit: int = 50) -> list[dict[str, Any]]:
        """Books matching the words of `q` (the last word as a prefix), best match first."""
        query = q.strip() if isinstance(q, str) else ""
        if not query:
            raise ValidationError("the search query is empty; give one or more words, e.g. ?q=cookbook")
        if len(query) > MAX_QUERY:
            raise ValidationError(
                f"the search query is {len(query)} characters long; at most {MAX_QUERY} please"
            )
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValidationError(f"limit must be between 1 and {MAX_LIMIT}; got {limit!r}")
        found: list[dict[str, Any]] = []
        # The cache this search may fill: a change meanwhile replaces it, dropping what this one adds.
        cache = self._ranked
        ranked = cache.get((query, limit))
        if ranked is None:
            ranked = self.index.search(query, limit)
            if len(cache) >= MAX_CACHED_QUERIES:
                cache.clear()
            if self._cached:
                cache[(query, limit)] = ranked
        for doc_id in ranked:
            # The index may trail the table by a moment: a book deleted since is left out.
            item = self.books.get({"id": doc_id})
            if item is not None:
                found.append(public_view(item))
        return found


def _fields(book: Mapping[str, Any]) -> dict[str, str]:
    return {name: _text(book.get(name)) for name in INDEXED}


def _text(value: object) -> str:
    return "" if value is None else str(value)
