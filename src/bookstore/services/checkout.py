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
from bookstore.ports import Clock, ItemAbsent, SortRange, Table
from bookstore.services import pages
from bookstore.services.catalog import Catalog, all_pages

# The orders table's index by (customerId, orderDate), bookstore.tables.ORDERS_BY_DATE.
ORDERS_BY_DATE = "date-index"
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

        The position is (orderDate, orderId) of the last order shown. A page reads the date index
        downwards from the position's date: about `limit` orders, however long the history (ids of
        orders with an Idempotency-Key are hashes, so the table's own key order is not the date order).
        """
        pages.check_limit(limit)
        position: tuple[Any, str] | None = None
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
        found = self._newest(customer_id, limit + 1, position)
        chunk = [order_view(o) for o in found[:limit]]
        more = len(found) > limit
        last = chunk[-1] if chunk else None
        return chunk, pages.encode("orders", [last["orderDate"], last["orderId"]]) if more and last else None

    def _newest(self, customer_id: str, count: int, position: tuple[Any, str] | None) -> list[dict[str, Any]]:
        """The `count` newest orders before `position` by (orderDate, orderId), newest first.

        The index orders by date only (an engine may return orders of one date in any order), so the
        read goes on past the count until the date drops: every order of the last date read is seen.
        """
        sort_range = None if position is None else SortRange(high=position[0])
        found: list[dict[str, Any]] = []
        page_cursor: str | None = None
        while True:
            page = self.orders.query(
                customer_id,
                index=ORDERS_BY_DATE,
                sort_range=sort_range,
                descending=True,
                limit=count,
                cursor=page_cursor,
            )
            for item in page.items:
                if len(found) >= count and item["orderDate"] < found[-1]["orderDate"]:
                    page_cursor = None
                    break
                if position is None or (item["orderDate"], item["orderId"]) < position:
                    found.append(item)
            else:
                page_cursor = page.cursor
            if page_cursor is None:
                break
        found.sort(key=lambda o: (o["orderDate"], o["orderId"]), reverse=True)
        return found[:count]

    def history(self, customer_id: str) -> list[dict[str, Any]]:
        """The customer's orders, newest first."""
        items = list(all_pages(lambda c: self.orders.query(customer_id, limit=200, cursor=c)))
        items.sort(key=lambda o: (o["orderDate"], o["orderId"]), reverse=True)
        return [order_view(o) for o in items]
