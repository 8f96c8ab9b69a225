"""The shopper's cart: rows of books with quantities, priced from the catalog."""

from __future__ import annotations

from typing import Any

from bookstore.domain.books import check_book_id, price_of
from bookstore.domain.errors import ConditionFailed, NotFound
from bookstore.domain.orders import check_quantity
from bookstore.ports import ItemExists, Table
from bookstore.services.catalog import Catalog, all_pages

ROW_FIELDS = ("bookId", "quantity", "price")


def row_view(item: dict[str, Any]) -> dict[str, Any]:
    return {name: item[name] for name in ROW_FIELDS}


class Cart:
    """Each customer sees and changes only the rows under their own customer id."""

    def __init__(self, carts: Table, catalog: Catalog) -> None:
        self.carts = carts
        self.catalog = catalog

    def rows(self, customer_id: str) -> list[dict[str, Any]]:
        items = all_pages(lambda c: self.carts.query(customer_id, limit=200, cursor=c))
        return [row_view(i) for i in items]

    def row(self, customer_id: str, book_id: str) -> dict[str, Any]:
        item = self.carts.get({"customerId": customer_id, "bookId": check_book_id(book_id)})
        if item is None:
            raise NotFound(f"book {book_id} is not in your cart")
        return row_view(item)

    def put(self, customer_id: str, book_id: str, quantity: int) -> dict[str, Any]:
        """Add the book with this quantity, replacing any row for it (the original's POST /cart)."""
        book = self.catalog.get(book_id)
        item = {
            "customerId": customer_id,
            "bookId": book["id"],
            "quantity": check_quantity(quantity),
            "price": float(price_of(book)),
        }
        self.carts.put(item)
        return row_view(item)

    def set_quantity(self, customer_id: str, book_id: str, quantity: int) -> dict[str, Any]:
        key = {"customerId": customer_id, "bookId": check_book_id(book_id)}
        try:
            item = self.carts.update(key, {"quantity": check_quantity(quantity)}, condition=ItemExists())
        except ConditionFailed:
            raise NotFound(f"book {book_id} is not in your cart; add it with POST /cart") from None
        return row_view(item)

    def remove(self, customer_id: str, book_id: str) -> None:
        if self.carts.delete({"customerId": customer_id, "bookId": check_book_id(book_id)}) is None:
            raise NotFound(f"book {book_id} is not in your cart")
