"""Books of the catalog: the shape of a book and the rules of a valid one."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from bookstore.domain.errors import ValidationError

BOOK_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
CATEGORY_MAX = 64
FIELDS = ("id", "name", "author", "category", "price", "rating", "cover")


def check_book_id(book_id: object) -> str:
    """The id if it is well formed (1-64 of letters, digits, '.', '_', '-'), else ValidationError."""
    if not isinstance(book_id, str) or not BOOK_ID.match(book_id):
        raise ValidationError(f"bookId must be 1-64 letters, digits, '.', '_' or '-'; got {book_id!r:.80}")
    return book_id


def check_category(category: str) -> str:
    if not category or len(category) > CATEGORY_MAX:
        raise ValidationError(f"category must be 1-{CATEGORY_MAX} characters")
    return category


def price_of(book: dict[str, Any]) -> Decimal:
    """The book's price as an exact decimal (prices are stored as JSON numbers)."""
    return Decimal(str(book["price"]))


def public_view(book: dict[str, Any]) -> dict[str, Any]:
    """The book as the API shows it: exactly the catalog fields, nothing internal."""
    return {name: book.get(name) for name in FIELDS}
