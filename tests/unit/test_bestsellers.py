"""Best sellers over MemoryTable and SqliteRanking: each order as the table holds it, through replays,
restarts, replaced versions, trimmed streams and emptied rankings."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from bookstore.domain.errors import StaleCursor, StorageError, ValidationError
from bookstore.ports import ChangeBatch, Event, Page, Ranking, TableSchema
from bookstore.services.bestsellers import BestSellers, order_scores
from bookstore.services.streams import StreamConsumer
from bookstore.storage.memory.tables import MemoryTable
from bookstore.storage.sqlite.ranking import SqliteRanking
from bookstore.tables import ORDERS


def order(customer: str, order_id: str, *lines: tuple[str, int]) -> dict[str, Any]:
    return {
        "customerId": customer,
        "orderId": order_id,
        "orderDate": 1_700_000_000_000,
        "books": [{"bookId": b, "quantity": q, "price": 17.5} for b, q in lines],
    }


def drain(consumer: StreamConsumer) -> None:
    while consumer.poll_once():
        pass


@pytest.fixture
def orders() -> MemoryTable:
    return MemoryTable(ORDERS)


@pytest.fixture
def ranking(tmp_path: Path) -> SqliteRanking:
    return SqliteRanking(tmp_path / "ranking.db")


def following(orders: MemoryTable, ranking: Ranking, batch_size: int = 100) -> BestSellers:
    """Best sellers whose first poll has built the ranking from the table: later orders come by stream."""
    best = BestSellers(orders, ranking, "eu-west-1", batch_size=batch_size)
    assert best.consumer.poll_once() == 0 and best.consumer.rebuilds == 1
    return best


def place_orders(orders: MemoryTable) -> None:
    orders.put(order("alice", "o1", ("b1", 2), ("b2", 1)))
    orders.put(order("bob", "o1", ("b2", 3)))
    orders.put(order("alice", "o2", ("b3", 1), ("b1", 1)))
    orders.put(order("carol", "o9", ("b4", 4), ("b3", 2)))


EXPECTED = [
    {"bookId": "b2", "quantity": 4},
    {"bookId": "b1", "quantity": 3},
    {"bookId": "b3", "quantity": 3},
    {"bookId": "b4", "quantity": 4},
]


def expected_top() -> list[dict[str, Any]]:
    return sorted(EXPECTED, key=lambda e: (-e["quantity"], e["bookId"]))


def test_orders_are_counted_by_quantity(orders: MemoryTable, ranking: SqliteRanking) -> None:
    best = following(orders, ranking, batch_size=3)
    place_orders(orders)
    drain(best.consumer)
    assert best.top() == expected_top()
    assert best.top(1) == [{"bookId": "b2", "quantity": 4}]


def test_a_new_ranking_is_built_from_the_orders_already_placed(
    orders: MemoryTable, ranking: SqliteRanking
) -> None:
    place_orders(orders)
    best = BestSellers(orders, ranking, "eu-west-1", batch_size=2)
    drain(best.consumer)
    assert best.top() == expected_top()
    assert best.consumer.rebuilds == 1 and ranking.cursor() == orders.stream_head()


def test_replaying_the_whole_stream_twice_changes_nothing(
    orders: MemoryTable, ranking: SqliteRanking
) -> None:
    best = following(orders, ranking, batch_size=2)
    place_orders(orders)
    drain(best.consumer)
    # A consumer that lost its cursor reads the whole stream again, twice.
    for _ in range(2):
        replay = StreamConsumer(orders, best.handle, cursor="0", region="eu-west-1", name="replay")
        drain(replay)
    assert best.top() == expected_top()


def test_restart_resumes_from_the_ranking_cursor(orders: MemoryTable, tmp_path: Path) -> None:
    orders.put(order("alice", "o1", ("b1", 2)))
    orders.put(order("bob", "o1", ("b2", 1)))
    first = BestSellers(orders, SqliteRanking(tmp_path / "ranking.db"), "eu-west-1")
    drain(first.consumer)
    stored = first.ranking.cursor()
    assert stored == first.consumer.cursor

    orders.put(order("carol", "o1", ("b2", 5)))
    restarted = BestSellers(orders, SqliteRanking(tmp_path / "ranking.db"), "eu-west-1")
    assert restarted.consumer.cursor == stored
    assert restarted.consumer.poll_once() == 1
    assert restarted.consumer.rebuilds == 0
    assert restarted.top() == [{"bookId": "b2", "quantity": 6}, {"bookId": "b1", "quantity": 2}]


def test_the_same_order_written_again_counts_once(orders: MemoryTable, ranking: SqliteRanking) -> None:
    best = following(orders, ranking)
    orders.put(order("alice", "o1", ("b1", 2)))
    # The same order written twice more, as the other region's version of it would arrive.
    orders.put(order("alice", "o1", ("b1", 2)))
    orders.update({"customerId": "alice", "orderId": "o1"}, {"orderDate": 1_700_000_000_001})
    assert [r.kind for r in orders.changes(None).records] == ["INSERT", "MODIFY", "MODIFY"]
    drain(best.consumer)
    assert best.top() == [{"bookId": "b1", "quantity": 2}]


def test_a_replaced_order_is_uncounted_and_the_kept_version_counted_once(
    orders: MemoryTable, ranking: SqliteRanking
) -> None:
    best = following(orders, ranking)
    orders.put(order("alice", "o1", ("b1", 2), ("b2", 1)))
    orders.put(order("bob", "o1", ("b2", 1)))
    drain(best.consumer)
    # Replication replaced alice's order by the version every region keeps, with other lines.
    orders.put(order("alice", "o1", ("b3", 4)))
    drain(best.consumer)
    assert best.top() == [{"bookId": "b3", "quantity": 4}, {"bookId": "b2", "quantity": 1}]
    # And a restart replaying both versions ends the same.
    replay = StreamConsumer(orders, best.handle, cursor="0", region="eu-west-1", name="replay")
    drain(replay)
    assert best.top() == [{"bookId": "b3", "quantity": 4}, {"bookId": "b2", "quantity": 1}]


def test_a_removed_order_no_longer_counts(orders: MemoryTable, ranking: SqliteRanking) -> None:
    best = following(orders, ranking)
    orders.put(order("alice", "o1", ("b1", 2)))
    orders.put(order("bob", "o1", ("b1", 1)))
    drain(best.consumer)
    orders.delete({"customerId": "alice", "orderId": "o1"})
    drain(best.consumer)
    # What a rebuild from the table would count, too.
    assert best.top() == [{"bookId": "b1", "quantity": 1}]
    assert ranking.cursor() == orders.changes(None).cursor


def test_lines_of_one_book_are_summed_and_malformed_lines_left_out() -> None:
    scores = order_scores(
        {
            "books": [
                {"bookId": "b1", "quantity": 2},
                {"bookId": "b1", "quantity": 3.0},
                {"bookId": "b2", "quantity": True},
                {"bookId": "b3", "quantity": 0},
                {"bookId": "b4", "quantity": "2"},
                {"bookId": "b5", "quantity": 1.5},
                {"quantity": 1},
                "not a line",
                {"bookId": "b6", "quantity": 1},
            ]
        }
    )
    assert scores == {"b1": 5, "b6": 1}
    assert order_scores({"books": "nope"}) == {}
    assert order_scores({}) == {}


def test_an_order_without_books_does_not_stall_the_stream(
    orders: MemoryTable, ranking: SqliteRanking
) -> None:
    best = BestSellers(orders, ranking, "eu-west-1")
    orders.put({"customerId": "alice", "orderId": "o1", "books": []})
    orders.put(order("bob", "o2", ("b1", 1)))
    drain(best.consumer)
    assert best.top() == [{"bookId": "b1", "quantity": 1}]


class FlakyRanking:
    """A real SqliteRanking whose `fail_on`-th put_all fails (atomically: nothing of it is kept)."""

    def __init__(self, inner: SqliteRanking, fail_on: int) -> None:
        self.inner = inner
        self.fail_on = fail_on
        self.puts = 0

    def put_all(self, events: Sequence[Event], cursor: str) -> int:
        self.puts += 1
        if self.puts == self.fail_on:
            raise StorageError("disk I/O error")
        return self.inner.put_all(events, cursor)

    def rebuild(self, events: Sequence[Event], cursor: str) -> None:
        self.inner.rebuild(events, cursor)

    def top(self, n: int = 20) -> list[tuple[str, int]]:
        return self.inner.top(n)

    def cursor(self) -> str | None:
        return self.inner.cursor()


@pytest.mark.parametrize("fail_on", [1, 2, 3, 4])
def test_a_failed_batch_is_retried_and_counts_each_order_once(
    orders: MemoryTable, ranking: SqliteRanking, fail_on: int
) -> None:
    flaky = FlakyRanking(ranking, fail_on)
    best = following(orders, flaky, batch_size=1)
    place_orders(orders)
    handled = [best.consumer.poll_once() for _ in range(5)]
    assert handled == [1] * (fail_on - 1) + [0] + [1] * (5 - fail_on)
    assert best.consumer.failures == 1
    assert best.top() == expected_top()
    assert ranking.cursor() == orders.changes(None).cursor
    # A restart from the stored cursor finds nothing more to count.
    again = BestSellers(orders, ranking, "eu-west-1")
    assert again.consumer.poll_once() == 0
    assert again.top() == expected_top()


class TrimmedTable(MemoryTable):
    """A MemoryTable whose stream was trimmed: a cursor before `trimmed_through` is stale (as on SQLite)."""

    trimmed_through = 0

    def changes(self, cursor: str | None = None, *, limit: int = 100) -> ChangeBatch:
        if int(cursor or 0) < self.trimmed_through:
            raise StaleCursor(f"trimmed through {self.trimmed_through}; asked after {cursor}")
        return super().changes(cursor, limit=limit)


def test_a_consumer_behind_the_trimmed_stream_rebuilds_from_the_table(ranking: SqliteRanking) -> None:
    orders = TrimmedTable(ORDERS)
    best = following(orders, ranking)
    orders.put(order("alice", "o1", ("b1", 2)))
    drain(best.consumer)
    # Stopped while orders came and the stream was trimmed past its cursor.
    place_orders(orders)  # alice/o1 is replaced by other lines on the way
    orders.trimmed_through = int(orders.stream_head())
    orders.put(order("dave", "o1", ("b4", 1)))
    assert best.consumer.poll_once() == 0  # meets the trimmed stream
    assert best.consumer.rebuilds == 1 and best.consumer.failures == 0
    drain(best.consumer)
    assert best.consumer.rebuilds == 2
    assert ranking.cursor() == orders.stream_head()
    assert best.top() == [
        {"bookId": "b4", "quantity": 5},
        {"bookId": "b2", "quantity": 4},
        {"bookId": "b1", "quantity": 3},
        {"bookId": "b3", "quantity": 3},
    ]
    status = best.consumer.status(0)
    assert status["rebuilds"] == 2 and "StaleCursor" in status["lastRebuild"]["reason"]


class ScanningWhileWritten(MemoryTable):
    """A table that takes writes while a consumer scans it: some before the scan reads, some after."""

    def __init__(self, schema: TableSchema) -> None:
        super().__init__(schema)
        self.before_read: list[Callable[[], None]] = []
        self.after_read: list[Callable[[], None]] = []

    def scan(self, *, limit: int = 100, cursor: str | None = None) -> Page:
        for write in self.before_read:
            write()
        page = super().scan(limit=limit, cursor=cursor)
        for write in self.after_read:
            write()
        self.before_read, self.after_read = [], []
        return page


def test_a_rebuild_is_exact_when_orders_are_written_during_the_scan(ranking: SqliteRanking) -> None:
    orders = ScanningWhileWritten(ORDERS)
    place_orders(orders)
    # After the head was read: a new order the scan sees (and the stream brings again), then, once the
    # scan has read, alice/o1 replaced by its kept version, which only the stream brings.
    orders.before_read = [lambda: orders.put(order("dave", "o1", ("b5", 2)))]
    orders.after_read = [lambda: orders.put(order("alice", "o1", ("b1", 1)))]
    best = BestSellers(orders, ranking, "eu-west-1", batch_size=1)
    drain(best.consumer)
    assert best.top() == [
        {"bookId": "b4", "quantity": 4},
        {"bookId": "b2", "quantity": 3},
        {"bookId": "b3", "quantity": 3},
        {"bookId": "b1", "quantity": 2},
        {"bookId": "b5", "quantity": 2},
    ]


def test_an_emptied_ranking_is_rebuilt_while_following(orders: MemoryTable, tmp_path: Path) -> None:
    best = following(orders, SqliteRanking(tmp_path / "ranking.db"))
    place_orders(orders)
    drain(best.consumer)
    # The consumer runs on, but its store now holds nothing (as a Redis restarted without persistence,
    # or another ranking store switched in): counting on would count only the orders still to come.
    best.ranking = SqliteRanking(tmp_path / "emptied.db")
    orders.put(order("dave", "o1", ("b4", 1)))
    assert best.consumer.poll_once() == 0  # refused: the store holds no cursor
    drain(best.consumer)
    assert best.consumer.rebuilds == 2
    assert best.top()[0] == {"bookId": "b4", "quantity": 5}
    assert best.top()[1:] == [e for e in expected_top() if e["bookId"] != "b4"]


@pytest.mark.parametrize("n", [0, -1, 1001, True])
def test_top_rejects_out_of_range_n(ranking: SqliteRanking, orders: MemoryTable, n: int) -> None:
    with pytest.raises(ValidationError):
        BestSellers(orders, ranking, "eu-west-1").top(n)
