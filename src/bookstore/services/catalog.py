"""The catalog: books by id and by category, and loading the seed catalog."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from importlib import resources
from typing import Any

from bookstore.domain.books import check_book_id, check_category, public_view
from bookstore.domain.errors import NotFound
from bookstore.ports import Item, Table

CATEGORY_INDEX = "category-index"


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
    """Reads the books table; books are public."""

    def __init__(self, books: Table) -> None:
        self.books = books

    def get(self, book_id: str) -> dict[str, Any]:
        item = self.books.get({"id": check_book_id(book_id)})
        if item is None:
            raise NotFound(f"no book with id {book_id}")
        return item

    def list(self, category: str | None = None) -> list[dict[str, Any]]:
        if category is None:
            items = all_pages(lambda c: self.books.scan(limit=500, cursor=c))
        else:
            cat = check_category(category)
            items = all_pages(lambda c: self.books.query(cat, index=CATEGORY_INDEX, limit=500, cursor=c))
        return [public_view(b) for b in items]

    def load(self, books: Iterable[dict[str, Any]]) -> int:
        """Put each book that is missing or differs; returns how many were written (0 on a re-run)."""
        written = 0
        for book in books:
            item = public_view(book)
            if self.books.get({"id": item["id"]}) != item:
                self.books.put(item)
                written += 1
        return written
