"""The best-sellers function: batches of the Orders table's stream (an event source mapping) counted
into the region's Redis ranking, as the region process's consumer counts them.

A batch that fails is reported by its first record (ReportBatchItemFailures), so Lambda retries from
there; counting is idempotent (Ranking.put_all sets each order's quantities), so a retry counts nothing
twice. A ranking without a cursor (new, or Redis emptied) is rebuilt from a scan of the orders table.
"""

from __future__ import annotations

from typing import Any

from bookstore.cloud.lambdas.batches import consume
from bookstore.domain.errors import StaleCursor
from bookstore.ports import ChangeBatch

_services: Any = None


def count(services: Any, event: dict[str, Any]) -> dict[str, Any]:
    """Count the event's records; the answer lists the failed batch's first record, if any."""
    from bookstore import tables

    def apply(batch: ChangeBatch) -> None:
        try:
            services.bestsellers.handle(batch)
        except StaleCursor:
            # The scan sees these records' orders too: the table holds them already.
            services.bestsellers.rebuild(batch.cursor)

    return consume(services.tables[tables.ORDERS.name], event, apply, "bestsellers")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _services
    if _services is None:
        from bookstore.cloud.lambdas.compose import LambdaEnvironment, build_services

        _services = build_services(LambdaEnvironment.from_env())
    return count(_services, event)
