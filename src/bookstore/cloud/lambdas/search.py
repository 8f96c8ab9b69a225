"""The search function: batches of the Books table's stream (an event source mapping) indexed into the
region's search index table, which the region's API functions read (storage.dynamodb.search).

A batch that fails is reported by its first record (ReportBatchItemFailures), so Lambda retries from
there; indexing is idempotent (an upsert or removal applied twice leaves the index as once), so a
retry does no harm. An index without a cursor (new, or emptied) is rebuilt from a scan of the books
table, which holds the batch's books too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bookstore.cloud.lambdas.batches import consume
from bookstore.ports import ChangeBatch

if TYPE_CHECKING:
    from bookstore.services.search import BookSearch

_search: BookSearch | None = None


def index(search: BookSearch, event: dict[str, Any]) -> dict[str, Any]:
    """Index the event's records; the answer lists the failed batch's first record, if any."""

    def apply(batch: ChangeBatch) -> None:
        if search.index.cursor() is None:
            search.rebuild(batch.cursor)
        else:
            search.handle(batch)

    return consume(search.books, event, apply, "search")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _search
    if _search is None:
        from bookstore.cloud.lambdas.compose import LambdaEnvironment, build_search

        _search = build_search(LambdaEnvironment.from_env())
    return index(_search, event)
