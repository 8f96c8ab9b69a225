"""Best sellers: the Orders stream counted into a Ranking, each order exactly once, and the top books."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from bookstore.domain.errors import ValidationError
from bookstore.ports import ChangeBatch, ChangeRecord, Clock, Ranking, Table
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
    """Counts every order of the Orders stream once into `ranking`; `top` is the best-sellers list."""

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
        )

    def handle(self, batch: ChangeBatch) -> None:
        """Count the batch's new orders, then store the batch cursor (Ranking.add_all).

        After a crash mid-batch the consumer replays the batch from the previous cursor, and the orders
        already counted are skipped by id.
        """
        events = [event for record in batch.records if (event := self._event(record)) is not None]
        self.ranking.add_all(events, batch.cursor)

    def _event(self, record: ChangeRecord) -> tuple[str, dict[str, int]] | None:
        # A MODIFY counts too: it is how an order written in another region, or written twice, may
        # arrive; the event id makes it count only the first time.
        if record.kind == "REMOVE" or record.new is None:
            return None
        try:
            event_id = order_event_id(record.key)
        except KeyError:
            log.warning(
                "bestsellers region=%s skipped a record without an order key: %r", self.region, record.key
            )
            return None
        scores = order_scores(record.new)
        if not scores:
            return None
        return event_id, scores

    def top(self, n: int = 20) -> list[dict[str, Any]]:
        """The n best-selling books, most sold first: [{"bookId": ..., "quantity": ...}]."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_TOP:
            raise ValidationError(f"the number of best sellers must be between 1 and {MAX_TOP}; got {n!r}")
        return [{"bookId": book_id, "quantity": quantity} for book_id, quantity in self.ranking.top(n)]
