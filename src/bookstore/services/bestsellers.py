"""Best sellers: the Orders stream counted into a Ranking, each order as the table holds it; the top books."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from bookstore.domain.errors import ValidationError
from bookstore.ports import ChangeBatch, ChangeRecord, Clock, Event, Ranking, Table
from bookstore.services.catalog import all_pages
from bookstore.services.streams import StreamConsumer

log = logging.getLogger(__name__)

MAX_TOP = 1000


def order_event_id(key: Mapping[str, Any]) -> str:
    """The id under which an order counts once, in every region: `customerId/orderId`."""
    return f"{key['customerId']}/{key['orderId']}"


def order_scores(order: Mapping[str, Any]) -> dict[str, int]:
    """Quantity per book id, summed over the order's `books` lines; malformed lines are left out."""
    scores: dict[str, int] = {}
    lines = order.get("books")
    if not isinstance(lines, list):
        return scores
    for line in lines:
        if not isinstance(line, Mapping):
            continue
        book_id, quantity = line.get("bookId"), line.get("quantity")
        # bool is an int in Python; floats come from JSON numbers like 2.0.
        if isinstance(quantity, bool) or not isinstance(quantity, int | float) or quantity != int(quantity):
            continue
        if not isinstance(book_id, str) or not book_id or quantity <= 0:
            continue
        scores[book_id] = scores.get(book_id, 0) + int(quantity)
    return scores


class BestSellers:
    """Counts every order of the Orders table into `ranking`, as the table holds it; `top` lists the best.

    Each record of the Orders stream sets its order's quantities in the ranking (Ranking.put_all): a
    replay counts nothing twice, an order replaced by another version (replication keeps an order's
    first version in every region) is un-counted and the kept one counted, and a removed order no longer
    counts. A ranking with no cursor (new, emptied, another backend) or behind the trimmed stream is
    rebuilt from a scan of the table (Ranking.rebuild), so the ranking always equals the table's orders.
    """

    def __init__(
        self,
        orders: Table,
        ranking: Ranking,
        region: str,
        *,
        batch_size: int = 100,
        clock: Clock | None = None,
    ) -> None:
        self.orders = orders
        self.ranking = ranking
        self.region = region
        self.consumer = StreamConsumer(
            orders,
            self.handle,
            cursor=ranking.cursor(),
            region=region,
            name="bestsellers",
            batch_size=batch_size,
            clock=clock,
            rebuild=self.rebuild,
        )

    def handle(self, batch: ChangeBatch) -> None:
        """Set each record's order to its quantities and store the batch cursor, in one atomic step.

        After a crash mid-batch the consumer replays the batch from the previous cursor; setting an order
        to the quantities it already holds changes nothing.
        """
        events = [event for record in batch.records if (event := self._event(record)) is not None]
        self.ranking.put_all(events, batch.cursor)

    def rebuild(self, cursor: str) -> None:
        """Count every order the table holds now, replacing what the ranking held, and store `cursor`."""
        events: list[Event] = []
        for item in all_pages(lambda c: self.orders.scan(limit=500, cursor=c)):
            event = self._order_event(item, item)
            if event is not None:
                events.append(event)
        self.ranking.rebuild(events, cursor)

    def _event(self, record: ChangeRecord) -> Event | None:
        # A REMOVE un-counts the order: the ranking holds what the table holds.
        return self._order_event(record.key, record.new)

    def _order_event(self, key: Mapping[str, Any], order: Mapping[str, Any] | None) -> Event | None:
        try:
            event_id = order_event_id(key)
        except KeyError:
            log.warning("bestsellers region=%s skipped a record without an order key: %r", self.region, key)
            return None
        return event_id, {} if order is None else order_scores(order)

    def top(self, n: int = 20) -> list[dict[str, Any]]:
        """The n best-selling books, most sold first: [{"bookId": ..., "quantity": ...}]."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_TOP:
            raise ValidationError(f"the number of best sellers must be between 1 and {MAX_TOP}; got {n!r}")
        return [{"bookId": book_id, "quantity": quantity} for book_id, quantity in self.ranking.top(n)]
