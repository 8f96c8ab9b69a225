"""Stream consumers behind the trimmed log, or over an emptied ranking store, rebuild and come back exact.

Real components throughout: the region's SQLite tables with their change log trimmed as replication
trims it, the SQLite and Redis rankings (a real redis-server, restarted empty under a running region),
the search index, and a whole region's API for /status and /metrics.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from bookstore.config import Storage, Topology
from bookstore.kernel.clock import HybridLogicalClock
from bookstore.ports import ItemAbsent, Ranking, Table
from bookstore.region.compose import build_region, region_app
from bookstore.replication.tables.model import LogEntry
from bookstore.services.bestsellers import BestSellers
from bookstore.services.catalog import Catalog, seed_books
from bookstore.services.search import BookSearch
from bookstore.services.streams import StreamConsumer
from bookstore.storage.redis.ranking import RedisRanking
from bookstore.storage.sqlite.ranking import SqliteRanking
from bookstore.storage.sqlite.replica import SqliteReplica
from bookstore.storage.sqlite.search import SqliteSearchIndex
from bookstore.storage.sqlite.tables import SqliteDatabase
from bookstore.tables import BOOKS, ORDERS
from tests.support.redis_server import free_port, redis_server

EU, AP = "eu-west-1", "ap-southeast-1"
PASSWORD = "rebuild-password"


def drain(consumer: StreamConsumer) -> None:
    """Poll until a poll finds nothing: the consumer has handed over the whole stream."""
    for _ in range(1000):
        if consumer.poll_once() == 0 and consumer.poll_once() == 0:
            return
    raise AssertionError(f"consumer {consumer.name} never caught up")


def order(customer: str, order_id: str, *lines: tuple[str, int]) -> dict[str, Any]:
    books = [{"bookId": b, "quantity": q, "price": 10.0} for b, q in lines]
    return {"customerId": customer, "orderId": order_id, "books": books}


def sold(orders: Table) -> list[tuple[str, int]]:
    """Quantities per book over every order the table holds, as the ranking must list them."""
    total: Counter[str] = Counter()
    cursor = None
    while True:
        page = orders.scan(limit=100, cursor=cursor)
        for item in page.items:
            for line in item["books"]:
                total[line["bookId"]] += line["quantity"]
        if page.cursor is None:
            return sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))
        cursor = page.cursor


def trim_everything(db: SqliteDatabase, replica: SqliteReplica) -> None:
    """Trim the log through its head, as replication does once every peer acknowledged it."""
    replica.record_ack(AP, db.head_seq())
    assert replica.trim([AP], 0, db.clock.now_ms() + 1) > 0
    assert db.trimmed_through() == db.head_seq()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def make_ranking(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Ranking]]:
    """Opens the region's ranking store (again, as a restarted region would)."""
    if request.param == "sqlite":
        yield lambda: SqliteRanking(tmp_path / "ranking.db")
        return
    with redis_server() as url:
        client = redis.Redis.from_url(url)
        yield lambda: RedisRanking(client, namespace=f"{EU}:")
        client.close()


def test_best_sellers_stopped_behind_the_trimmed_log_come_back_exact(
    tmp_path: Path, make_ranking: Callable[[], Ranking]
) -> None:
    with SqliteDatabase(tmp_path / "tables.db", EU) as db:
        orders, replica = db.table(ORDERS), SqliteReplica(db)
        best = BestSellers(orders, make_ranking(), EU)
        for i in range(5):
            orders.put(order(f"c{i}", "o1", ("b1", i + 1), ("b2", 1)), condition=ItemAbsent())
        drain(best.consumer)
        assert best.ranking.top(100) == sold(orders)

        # The consumer stops (its region's process is down) while orders go on: new ones, and one
        # replaced by an earlier version of it from another region (first writer wins).
        for i in range(5, 12):
            orders.put(order(f"c{i}", "o1", ("b3", 2), ("b1", 1)), condition=ItemAbsent())
        earlier = orders.version({"customerId": "c0", "orderId": "o1"})
        assert earlier is not None
        replaced = order("c0", "o1", ("b4", 7))
        entry = LogEntry(
            0,
            "orders",
            "INSERT",
            {"customerId": "c0", "orderId": "o1"},
            None,
            replaced,
            HybridLogicalClock.physical_ms(earlier[0]),
            AP,
            (earlier[0] - 1, AP),
            None,
        )
        replica.apply(AP, [entry], None)
        trim_everything(db, replica)

        restarted = BestSellers(orders, make_ranking(), EU)
        drain(restarted.consumer)
        assert restarted.ranking.top(100) == sold(orders)
        assert orders.get({"customerId": "c0", "orderId": "o1"}) == replaced
        assert ("b4", 7) in restarted.ranking.top(100)
        assert restarted.consumer.rebuilds == 1 and restarted.consumer.failures == 0

        # It follows the log again from where it rebuilt.
        orders.put(order("c99", "o1", ("b5", 3)), condition=ItemAbsent())
        drain(restarted.consumer)
        assert restarted.ranking.top(100) == sold(orders)
        assert restarted.consumer.rebuilds == 1


def test_search_and_the_catalog_cache_behind_the_trimmed_log_come_back_exact(tmp_path: Path) -> None:
    with SqliteDatabase(tmp_path / "tables.db", EU) as db:
        books, replica = db.table(BOOKS), SqliteReplica(db)
        catalog = Catalog(books, region=EU)
        seed = seed_books()[:6]
        catalog.load(seed)
        search = BookSearch(books, SqliteSearchIndex(tmp_path / "search.db"), EU)
        drain(search.consumer)
        drain(catalog.consumer)
        assert catalog.get(seed[0]["id"])["name"] == seed[0]["name"]

        # Both consumers stop; a book is renamed and another deleted; the log is trimmed past them.
        books.update({"id": seed[0]["id"]}, {"name": "Zymurgy for Beginners"})
        books.delete({"id": seed[1]["id"]})
        trim_everything(db, replica)

        search = BookSearch(books, SqliteSearchIndex(tmp_path / "search.db"), EU)
        drain(search.consumer)
        drain(catalog.consumer)
        assert [b["id"] for b in search.search("zymurgy")] == [seed[0]["id"]]
        assert search.index.search(seed[1]["name"]) == []
        assert catalog.get(seed[0]["id"])["name"] == "Zymurgy for Beginners"
        assert seed[1]["id"] not in [b["id"] for b in catalog.list()]
        assert search.consumer.rebuilds == 1 and catalog.consumer.rebuilds == 2


def shop(client: TestClient, auth: dict[str, str], key: str, lines: list[tuple[str, int]]) -> None:
    body = {"books": [{"bookId": b, "quantity": q} for b, q in lines]}
    r = client.post("/orders", json=body, headers={**auth, "Idempotency-Key": key})
    assert r.status_code == 201, r.text


def wait_for(what: str, probe: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not ok(value := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {value!r} after {timeout} s")
        time.sleep(0.05)
    return value


def rebuilds_metric(client: TestClient, consumer: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for s in family.samples
        if s.name == "bookstore_stream_consumer_rebuilds_total" and s.labels.get("consumer") == consumer
    )


@pytest.mark.redis
def test_a_region_whose_redis_restarted_empty_counts_every_order_again(tmp_path: Path) -> None:
    port = free_port()
    with ExitStack() as first_redis, ExitStack() as region:
        url = first_redis.enter_context(redis_server(port))
        services = build_region(Topology(storage=Storage(ranking="redis", redis_url=url)), EU, tmp_path)
        region.callback(services.close)
        services.catalog.load(seed_books())
        services.identity.add_user("twice@example.com", PASSWORD)
        client = region.enter_context(TestClient(region_app(services)))
        token = client.post("/auth/signin", json={"email": "twice@example.com", "password": PASSWORD})
        auth = {"Authorization": f"Bearer {token.json()['accessToken']}"}
        books = [b["id"] for b in client.get("/books").json()]
        orders = services.tables["orders"]

        def exact() -> list[dict[str, Any]]:
            return [{"bookId": b, "quantity": q} for b, q in sold(orders)]

        for i in range(6):
            shop(client, auth, f"before-{i}", [(books[i % 3], i + 1), (books[5], 1)])
        wait_for(
            "best sellers of the first orders",
            lambda: client.get("/bestsellers").json(),
            lambda top: top == exact(),
        )

        # Redis restarts without persistence, under the running region: every key is gone.
        first_redis.close()
        region.enter_context(redis_server(port))
        shop(client, auth, "after-restart", [(books[4], 2)])
        top = wait_for(
            "best sellers of every order",
            lambda: client.get("/bestsellers").json(),
            lambda top: top == exact(),
        )
        assert {"bookId": books[4], "quantity": 2} in top and len(top) == 5
        status = client.get("/status").json()["consumers"]["bestsellers"]
        # Built once at start-up (a new ranking), once more after the restart emptied it.
        assert status["rebuilds"] == 2 and "StaleCursor" in status["lastRebuild"]["reason"]
        assert rebuilds_metric(client, "bestsellers") == 2
