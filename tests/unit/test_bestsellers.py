"""Best sellers over MemoryTable and SqliteRanking: each order counts once, through replays and restarts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from bookstore.domain.errors import StorageError, ValidationError
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
    place_orders(orders)
    best = BestSellers(orders, ranking, "eu-west-1", batch_size=3)
    drain(best.consumer)
    assert best.top() == expected_top()
    assert best.top(1) == [{"bookId": "b2", "quantity": 4}]


def test_replaying_the_whole_stream_twice_changes_nothing(
    orders: MemoryTable, ranking: SqliteRanking
) -> None:
    place_orders(orders)
    best = BestSellers(orders, ranking, "eu-west-1", batch_size=2)
    drain(best.consumer)
    # A consumer that lost its cursor reads the whole stream again, twice.
    for _ in range(2):
        replay = StreamConsumer(orders, best.handle, cursor=None, region="eu-west-1", name="replay")
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
    assert restarted.top() == [{"bookId": "b2", "quantity": 6}, {"bookId": "b1", "quantity": 2}]


def test_the_same_order_written_again_counts_once(orders: MemoryTable, ranking: SqliteRanking) -> None:
    best = BestSellers(orders, ranking, "eu-west-1")
    orders.put(order("alice", "o1", ("b1", 2)))
    # The same order written twice more, as a retried checkout or the other region's write would.
    orders.put(order("alice", "o1", ("b1", 2)))
    orders.update({"customerId": "alice", "orderId": "o1"}, {"orderDate": 1_700_000_000_001})
    assert [r.kind for r in orders.changes(None).records] == ["INSERT", "MODIFY", "MODIFY"]
    drain(best.consumer)
    assert best.top() == [{"bookId": "b1", "quantity": 2}]


def test_a_modify_of_an_order_not_yet_counted_counts(orders: MemoryTable, ranking: SqliteRanking) -> None:
    # The INSERT lies before this region's cursor (as for an order first seen through replication).
    orders.put(order("alice", "o1", ("b1", 2)))
    ranking.set_cursor(orders.changes(None).cursor)
    orders.put(order("alice", "o1", ("b1", 2), ("b2", 1)))
    best = BestSellers(orders, ranking, "eu-west-1")
    drain(best.consumer)
    assert best.top() == [{"bookId": "b1", "quantity": 2}, {"bookId": "b2", "quantity": 1}]


def test_deleted_orders_stay_counted_and_move_the_cursor(orders: MemoryTable, ranking: SqliteRanking) -> None:
    best = BestSellers(orders, ranking, "eu-west-1")
    orders.put(order("alice", "o1", ("b1", 2)))
    orders.delete({"customerId": "alice", "orderId": "o1"})
    drain(best.consumer)
    assert best.top() == [{"bookId": "b1", "quantity": 2}]
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
    """A real SqliteRanking that fails once, on the `fail_on`-th add, like a crash mid-batch."""

    def __init__(self, inner: SqliteRanking, fail_on: int) -> None:
        self.inner = inner
        self.fail_on = fail_on
        self.adds = 0

    def add(self, event_id: str, scores: Mapping[str, int], cursor: str | None = None) -> bool:
        self.adds += 1
        if self.adds == self.fail_on:
            raise StorageError("disk I/O error")
        return self.inner.add(event_id, scores, cursor)

    def add_all(self, events: Sequence[tuple[str, Mapping[str, int]]], cursor: str) -> int:
        # Event by event, so a failure leaves the events before it counted, as a crash mid-batch would.
        added = sum(self.add(event_id, scores) for event_id, scores in events)
        self.inner.set_cursor(cursor)
        return added

    def top(self, n: int = 20) -> list[tuple[str, int]]:
        return self.inner.top(n)

    def cursor(self) -> str | None:
        return self.inner.cursor()

    def set_cursor(self, cursor: str) -> None:
        self.inner.set_cursor(cursor)


@pytest.mark.parametrize("fail_on", [1, 2, 3, 4])
def test_a_failure_mid_batch_is_retried_and_counts_each_order_once(
    orders: MemoryTable, ranking: SqliteRanking, fail_on: int
) -> None:
    place_orders(orders)
    flaky = FlakyRanking(ranking, fail_on)
    best = BestSellers(orders, flaky, "eu-west-1", batch_size=10)
    assert best.consumer.poll_once() == 0
    # The failed batch did not move the stored cursor, whatever was counted before the failure.
    assert ranking.cursor() is None
    assert best.consumer.poll_once() == 4
    assert best.top() == expected_top()
    assert ranking.cursor() == orders.changes(None).cursor
    # A restart from the stored cursor finds nothing more to count.
    again = BestSellers(orders, ranking, "eu-west-1")
    assert again.consumer.poll_once() == 0
    assert again.top() == expected_top()


@pytest.mark.parametrize("n", [0, -1, 1001, True])
def test_top_rejects_out_of_range_n(ranking: SqliteRanking, orders: MemoryTable, n: int) -> None:
    with pytest.raises(ValidationError):
        BestSellers(orders, ranking, "eu-west-1").top(n)
