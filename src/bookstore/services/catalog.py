"""The catalog: books by id and by category, cached in memory and kept fresh by the Books stream."""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Iterator
from importlib import resources
from typing import Any

from bookstore.domain.books import check_book_id, check_category, public_view
from bookstore.domain.errors import NotFound, ValidationError
from bookstore.ports import ChangeBatch, Clock, Item, Table
from bookstore.services import pages
from bookstore.services.streams import StreamConsumer

CATEGORY_INDEX = "category-index"
# Entries kept in memory at most (books, and lists by category): past it, reads go to the table.
MAX_CACHED = 10_000
# Changes of one batch applied to the cached lists at most; a larger batch empties the cache instead.
MAX_APPLIED = 1_000


def all_pages(fetch: Any) -> Iterator[Item]:
    """Every item of a paginated read: `fetch(cursor)` returns a Page."""
    cursor: str | None = None
    while True:
        page = fetch(cursor)
        yield from page.items
        if page.cursor is None:
            return
        cursor = page.cursor


def seed_books() -> list[dict[str, Any]]:
    """The seed catalog shipped with the package (56 books in 7 categories)."""
    text = resources.files("bookstore.data").joinpath("books.json").read_text(encoding="utf-8")
    books: list[dict[str, Any]] = json.loads(text)
    return books


class Catalog:
    """Reads the books table; books are public.

    Books and lists are answered from memory once read. The cache follows the Books stream with a
    consumer of its own (`consumer`, run by the region like the others): each change to the table, local,
    replicated from another region or written by another process (`bookstore seed`), is applied to the
    cached lists (the book put in or taken out of each list by bisection, on copies, so a list already
    answered never changes), so a stale answer lasts at most one poll of that consumer
    (StreamConsumer.run: 50 ms) after the change is in the table, and a change never makes the next
    read load 100k books again. A batch larger than MAX_APPLIED empties the cache instead; `load`
    empties it at once. Answers are shared: callers must not change them.
    """

    def __init__(self, books: Table, *, region: str = "", clock: Clock | None = None) -> None:
        self.books = books
        self._books: dict[str, dict[str, Any]] = {}
        self._lists: dict[str | None, list[dict[str, Any]]] = {}
        # No stored cursor: the cache starts empty, so the consumer "rebuilds" it by emptying it and
        # follows the stream from its head (as it does when the stream was trimmed past its cursor).
        self.consumer = StreamConsumer(
            books,
            self._changed,
            cursor=None,
            region=region,
            name="catalog",
            batch_size=500,
            clock=clock,
            rebuild=lambda _head: self.forget(),
        )

    def get(self, book_id: str) -> dict[str, Any]:
        """The book as the API shows it (domain.books.public_view); NotFound when there is none."""
        # The cache this read may fill: a change meanwhile replaces it, dropping what the read brings.
        cache = self._books
        book = cache.get(book_id)
        if book is None:
            item = self.books.get({"id": check_book_id(book_id)})
            if item is None:
                raise NotFound(f"no book with id {book_id}")
            book = public_view(item)
            if len(cache) < MAX_CACHED:
                cache[book_id] = book
        return book

    def page(
        self, category: str | None = None, limit: int = pages.DEFAULT_LIMIT, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Up to `limit` books (of `category`) in id order after `cursor`, and the next page's cursor
        (None on the last page). A page is a slice of the cached list: O(log n) once it is cached."""
        pages.check_limit(limit)
        books = self.list(category)
        start = 0
        if cursor is not None:
            after = pages.decode("books", cursor)
            if not isinstance(after, str):
                raise ValidationError("cursor: not a cursor of this list of books; pass the previous page's")
            start = bisect.bisect_right(books, after, key=lambda b: str(b["id"]))
        chunk = books[start : start + limit]
        more = start + limit < len(books)
        return chunk, pages.encode("books", chunk[-1]["id"]) if more else None

    def list(self, category: str | None = None) -> list[dict[str, Any]]:
        """Every book, or those of `category`, as the API shows them, in id order."""
        cache = self._lists
        books = cache.get(category)
        if books is None:
            if category is None:
                items = all_pages(lambda c: self.books.scan(limit=500, cursor=c))
            else:
                cat = check_category(category)
                items = all_pages(lambda c: self.books.query(cat, index=CATEGORY_INDEX, limit=500, cursor=c))
            # In id order whatever the engine's (a DynamoDB scan is in hash order): pages are slices of it.
            books = sorted((public_view(b) for b in items), key=lambda b: str(b["id"]))
            if len(cache) < MAX_CACHED:
                cache[category] = books
        return books

    def forget(self) -> None:
        """Empty the cache: the next reads go to the table (reads under way fill the old, dropped dicts)."""
        self._books = {}
        self._lists = {}

    def _changed(self, batch: ChangeBatch) -> None:
        if not batch.records:
            return
        if len(batch.records) > MAX_APPLIED:
            self.forget()
            return
        books = dict(self._books)
        lists = {category: list(listed) for category, listed in self._lists.items()}
        for record in batch.records:
            book_id = str(record.key.get("id", ""))
            books.pop(book_id, None)
            new = None if record.kind == "REMOVE" or record.new is None else public_view(record.new)
            for category, listed in lists.items():
                at = bisect.bisect_left(listed, book_id, key=lambda b: str(b["id"]))
                if at < len(listed) and str(listed[at]["id"]) == book_id:
                    del listed[at]
                if new is not None and (category is None or new["category"] == category):
                    listed.insert(at, new)
        # Swapped in whole: a read under way fills the old, dropped dicts (as after `forget`).
        self._books, self._lists = books, lists

    def load(self, books: Iterable[dict[str, Any]]) -> int:
        """Put each book that is missing or differs; returns how many were written (0 on a re-run)."""
        written = 0
        for book in books:
            item = public_view(book)
            if self.books.get({"id": item["id"]}) != item:
                self.books.put(item)
                written += 1
        if written:
            self.forget()
        return written
