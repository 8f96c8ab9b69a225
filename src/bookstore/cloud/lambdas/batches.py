"""A stream consumer function's answer to its event source mapping: the batch's records read as change
records, applied with the last one's sequence number as cursor, a failure reported by the first record
(ReportBatchItemFailures), so Lambda retries the batch from there."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from bookstore.ports import ChangeBatch

log = logging.getLogger(__name__)


def consume(
    table: Any, event: dict[str, Any], apply: Callable[[ChangeBatch], None], name: str
) -> dict[str, Any]:
    """Apply the event's records of `table` (a DynamoTable, which reads Lambda's records) with `apply`."""
    raw = event.get("Records", [])
    if not raw:
        return {"batchItemFailures": []}
    records = [table.change_record(r) for r in raw]
    cursor = str(raw[-1]["dynamodb"]["SequenceNumber"])
    try:
        apply(ChangeBatch(records, cursor))
    except Exception:
        log.exception("event=%s_batch_failed records=%d", name, len(raw))
        return {"batchItemFailures": [{"itemIdentifier": str(raw[0]["dynamodb"]["SequenceNumber"])}]}
    return {"batchItemFailures": []}
