"""The best-sellers function: batches of the Orders table's stream (an event source mapping) counted
into the region's Redis ranking, as the region process's consumer counts them.

A batch that fails is reported by its first record (ReportBatchItemFailures), so Lambda retries from
there; counting is idempotent (Ranking.put_all sets each order's quantities), so a retry counts nothing
twice. A ranking without a cursor (new, or Redis emptied) is rebuilt from a scan of the orders table.
"""

from __future__ import annotations

import logging
from typing import Any

from bookstore.domain.errors import StaleCursor
from bookstore.ports import ChangeBatch

log = logging.getLogger(__name__)

_services: Any = None


def count(services: Any, event: dict[str, Any]) -> dict[str, Any]:
    """Count the event's records; the answer lists the failed batch's first record, if any."""
    from bookstore import tables

    orders = services.tables[tables.ORDERS.name]
    raw = event.get("Records", [])
    if not raw:
        return {"batchItemFailures": []}
    records = [orders.change_record(r) for r in raw]
    cursor = str(raw[-1]["dynamodb"]["SequenceNumber"])
    try:
        try:
            services.bestsellers.handle(ChangeBatch(records, cursor))
        except StaleCursor:
            # The scan sees these records' orders too: the table holds them already.
            services.bestsellers.rebuild(cursor)
    except Exception:
        log.exception("event=bestsellers_batch_failed records=%d", len(raw))
        return {"batchItemFailures": [{"itemIdentifier": str(raw[0]["dynamodb"]["SequenceNumber"])}]}
    return {"batchItemFailures": []}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _services
    if _services is None:
        from bookstore.cloud.lambdas.compose import LambdaEnvironment, build_services

        _services = build_services(LambdaEnvironment.from_env())
    return count(_services, event)
