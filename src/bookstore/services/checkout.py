"""Checkout and order history: orders priced from the catalog, idempotent under retries in any region."""

from __future__ import annotations

from typing import Any

from bookstore.domain.errors import ConditionFailed, Conflict, ValidationError
from bookstore.domain.orders import (
    OrderLine,
    check_idempotency_key,
    check_lines,
    order_id,
    price_lines,
    same_lines,
)
from bookstore.ports import Clock, ItemAbsent, Table
from bookstore.services import pages
from bookstore.services.catalog import Catalog, all_pages

ORDER_FIELDS = ("orderId", "orderDate", "books", "total")


def order_view(item: dict[str, Any]) -> dict[str, Any]:
    return {name: item[name] for name in ORDER_FIELDS}


class Checkout:
    """Turns a list of books into an order and empties those rows of the cart."""

    def __init__(self, orders: Table, carts: Table, catalog: Catalog, clock: Clock, region: str) -> None:
        self.orders = orders
        self.carts = carts
        self.catalog = catalog
        self.clock = clock
        self.region = region

    def place(
        self, customer_id: str, lines: list[OrderLine], idempotency_key: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """The order and whether it was created now (False: the same idempotency key was seen before)."""
        checked = check_lines(lines)
        key = None if idempotency_key is None else check_idempotency_key(idempotency_key)
        now = self.clock.now_ms()
        oid = order_id(customer_id, key, now)
        if key is not None:
            existing = self.orders.get({"customerId": customer_id, "orderId": oid})
            if existing is not None:
                return self._replay(existing, checked), False
        books, total = price_lines(checked, self.catalog.get)
        item = {
            "customerId": customer_id,
            "orderId": oid,
            "orderDate": now,
            "books": books,
            "total": float(total),
            "region": self.region,
        }
        try:
            self.orders.put(item, condition=ItemAbsent())
        except ConditionFailed:
            # A concurrent retry with the same key won the race: answer with its order.
            existing = self.orders.get({"customerId": customer_id, "orderId": oid})
            if existing is None:
                raise
            return self._replay(existing, checked), False
        for line in checked:
            self.carts.delete({"customerId": customer_id, "bookId": line.book_id})
        return order_view(item), True

    @staticmethod
    def _replay(existing: dict[str, Any], lines: list[OrderLine]) -> dict[str, Any]:
        if not same_lines(existing, lines):
            raise Conflict("this Idempotency-Key was already used for a different order; use a new key")
        return order_view(existing)

    def history_page(
        self, customer_id: str, limit: int = pages.DEFAULT_LIMIT, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Up to `limit` of the customer's orders, newest first, after `cursor`; and the next cursor.

        The position is (orderDate, orderId) of the last order shown. Each page reads the customer's
        orders whole (idempotent orders' ids are hashes, so no key order is the date order): a page costs
        O(orders of the customer), fine for thousands, not for millions.
        """
        pages.check_limit(limit)
        orders = self.history(customer_id)
        start = 0
        if cursor is not None:
            before = pages.decode("orders", cursor)
            if not (
                isinstance(before, list)
                and len(before) == 2
                and isinstance(before[0], int | float)
                and not isinstance(before[0], bool)
                and isinstance(before[1], str)
            ):
                raise ValidationError("cursor: not a cursor of this list of orders; pass the previous page's")
            position = (before[0], before[1])
            while start < len(orders) and (orders[start]["orderDate"], orders[start]["orderId"]) >= position:
                start += 1
        chunk = orders[start : start + limit]
        more = start + limit < len(orders)
        last = chunk[-1] if chunk else None
        return chunk, pages.encode("orders", [last["orderDate"], last["orderId"]]) if more and last else None

    def history(self, customer_id: str) -> list[dict[str, Any]]:
        """The customer's orders, newest first."""
        items = list(all_pages(lambda c: self.orders.query(customer_id, limit=200, cursor=c)))
        items.sort(key=lambda o: (o["orderDate"], o["orderId"]), reverse=True)
        return [order_view(o) for o in items]
