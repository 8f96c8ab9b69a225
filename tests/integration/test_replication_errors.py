"""The table replication endpoints answer every domain error with its own status (issue 15).

They used to map only ValidationError (400) and Forbidden (403): any other domain error a replica
store raised escaped as a bare 500. A store on a database server (storage/mysql/sql.py) raises
Unavailable while its server is down, and NotFound/Conflict are as plain; a peer must get the status
that says whether to retry. Here a real SqliteReplica raises them from its snapshot read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from pathlib import Path

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from bookstore.domain import errors
from bookstore.kernel.clock import SystemClock
from bookstore.kernel.stream import ChangeFeed
from bookstore.replication.tables.http import replication_routes
from bookstore.replication.tables.model import SnapshotPage
from bookstore.storage.sqlite.replica import SqliteReplica
from bookstore.storage.sqlite.tables import SqliteDatabase
from bookstore.tables import CARTS

EU, AP = "eu-west-1", "ap-southeast-1"


class _FailingReplica(SqliteReplica):
    """A real replica whose snapshot read fails with `error`, as a store on a server that is down does."""

    error: errors.BookstoreError

    def snapshot(self, after: str | None, limit: int, tables: Collection[str] | None = None) -> SnapshotPage:
        raise self.error


class _SignedBy:
    """Stands in front of the routes as PeerAuthMiddleware does once it verified `region`'s signature."""

    def __init__(self, app: ASGIApp, region: str) -> None:
        self.app, self.region = app, region

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("state", {})["peer_region"] = self.region
        await self.app(scope, receive, send)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.Unavailable("the database server does not answer"), 503),
        (errors.NotFound("no such table"), 404),
        (errors.Conflict("a rebuild is running"), 409),
        (errors.ValidationError("malformed snapshot cursor"), 400),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_a_domain_error_of_the_store_answers_its_own_status(
    tmp_path: Path, error: errors.BookstoreError, status: int
) -> None:
    db = SqliteDatabase(tmp_path / "eu.db", EU, SystemClock())
    db.table(CARTS)
    store = _FailingReplica(db)
    store.error = error
    app = _SignedBy(Starlette(routes=replication_routes(store, ChangeFeed(), {"carts": CARTS}, (EU, AP))), AP)

    async def snapshot() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://eu") as client:
            return await client.post("/replication/snapshot", content=orjson.dumps({"limit": 10}))

    try:
        answer = asyncio.run(snapshot())
    finally:
        db.close()
    assert answer.status_code == status, answer.text
    assert answer.json() == {"error": error.code, "message": error.message}
