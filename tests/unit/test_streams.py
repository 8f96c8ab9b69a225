"""StreamConsumer over MemoryTable: batches, retries, the loop, lag figures; and the search consumer."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from bookstore.domain.errors import StorageError, ValidationError
from bookstore.ports import ChangeBatch
from bookstore.services.search import BookSearch
from bookstore.services.streams import StreamConsumer
from bookstore.storage.memory.tables import MemoryTable
from bookstore.storage.sqlite.search import SqliteSearchIndex
from bookstore.tables import BOOKS


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, now_ms: int = 1_000_000) -> None:
        self.ms = now_ms

    def now_ms(self) -> int:
        return self.ms


def book(
    book_id: str, name: str, author: str = "Ann Author", category: str = "Cookbooks"
) -> dict[str, object]:
    return {"id": book_id, "name": name, "author": author, "category": category, "price": 19.5, "rating": 4}


class Recorder:
    """A handler that keeps the ids it saw, and fails on purpose while `failures_left` > 0."""

    def __init__(self, failures_left: int = 0) -> None:
        self.failures_left = failures_left
        self.seen: list[str] = []
        self.calls = 0

    def __call__(self, batch: ChangeBatch) -> None:
        self.calls += 1
        if self.failures_left > 0:
            self.failures_left -= 1
            raise StorageError("disk on fire\nsecond line")
        self.seen.extend(str(r.key["id"]) for r in batch.records)


def test_poll_once_hands_batches_in_stream_order() -> None:
    table = MemoryTable(BOOKS)
    for i in range(7):
        table.put(book(f"b{i}", f"Book {i}"))
    recorder = Recorder()
    consumer = StreamConsumer(table, recorder, cursor=None, region="eu-west-1", name="t", batch_size=3)
    assert [consumer.poll_once() for _ in range(4)] == [3, 3, 1, 0]
    assert recorder.seen == [f"b{i}" for i in range(7)]
    # An empty poll does not bother the handler.
    assert recorder.calls == 3
    assert consumer.records_handled == 7


def test_consumer_starts_from_the_stored_cursor() -> None:
    table = MemoryTable(BOOKS)
    for i in range(4):
        table.put(book(f"b{i}", f"Book {i}"))
    stored = table.changes(None, limit=2).cursor
    recorder = Recorder()
    consumer = StreamConsumer(table, recorder, cursor=stored, region="eu-west-1", name="t")
    assert consumer.poll_once() == 2
    assert recorder.seen == ["b2", "b3"]


def test_failing_handler_is_retried_with_the_same_batch_and_logged_once_per_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    table = MemoryTable(BOOKS)
    table.put(book("b1", "One"))
    table.put(book("b2", "Two"))
    recorder = Recorder(failures_left=2)
    consumer = StreamConsumer(table, recorder, cursor=None, region="ap-southeast-1", name="t")
    with caplog.at_level(logging.WARNING, logger="bookstore.services.streams"):
        assert consumer.poll_once() == 0
        assert consumer.poll_once() == 0
        assert consumer.cursor is None
        assert consumer.poll_once() == 2
    assert recorder.seen == ["b1", "b2"]
    assert consumer.failures == 2 and consumer.consecutive_failures == 0
    failures = [r.getMessage() for r in caplog.records]
    assert len(failures) == 2
    assert all("region=ap-southeast-1" in m and "StorageError" in m and "\n" not in m for m in failures)


def test_a_failing_table_read_is_survived() -> None:
    class BrokenTable(MemoryTable):
        broken = True

        def changes(self, cursor: str | None = None, *, limit: int = 100) -> ChangeBatch:
            if self.broken:
                raise StorageError("database is locked")
            return super().changes(cursor, limit=limit)

    table = BrokenTable(BOOKS)
    table.put(book("b1", "One"))
    recorder = Recorder()
    consumer = StreamConsumer(table, recorder, cursor=None, region="eu-west-1", name="t")
    assert consumer.poll_once() == 0
    table.broken = False
    assert consumer.poll_once() == 1
    assert recorder.seen == ["b1"]


def test_lag_is_zero_when_caught_up_and_grows_while_failing() -> None:
    clock = ManualClock(5_000)
    table = MemoryTable(BOOKS, clock=clock)
    recorder = Recorder()
    consumer = StreamConsumer(
        table, recorder, cursor=None, region="eu-west-1", name="t", batch_size=2, clock=clock
    )
    assert consumer.lag_seconds(clock.ms) == 0.0
    table.put(book("b1", "One"))
    clock.ms = 6_000
    table.put(book("b2", "Two"))
    clock.ms = 8_000
    table.put(book("b3", "Three"))
    clock.ms = 9_000
    # A full batch: more may follow, so the lag is measured from the last record handled.
    assert consumer.poll_once() == 2
    assert consumer.last_written_ms == 6_000
    assert consumer.last_poll_ms == 9_000
    assert consumer.lag_seconds(9_000) == 3.0
    recorder.failures_left = 1
    assert consumer.poll_once() == 0
    # The unhandled record was written at 8 000.
    assert consumer.lag_seconds(10_000) == 2.0
    clock.ms = 10_500
    assert consumer.poll_once() == 1
    assert consumer.last_written_ms == 8_000
    assert consumer.last_poll_ms == 10_500
    assert consumer.lag_seconds(20_000) == 0.0


def test_run_loop_survives_failures_and_stops_when_told() -> None:
    table = MemoryTable(BOOKS)
    for i in range(25):
        table.put(book(f"b{i:02d}", f"Book {i}"))
    recorder = Recorder(failures_left=3)
    consumer = StreamConsumer(table, recorder, cursor=None, region="eu-west-1", name="t", batch_size=10)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop, interval_s=0.001))
        for _ in range(2000):
            if len(recorder.seen) == 25:
                break
            await asyncio.sleep(0.005)
        table.put(book("late", "Late Book"))
        for _ in range(2000):
            if len(recorder.seen) == 26:
                break
            await asyncio.sleep(0.005)
        stop.set()
        await asyncio.wait_for(task, timeout=10)

    asyncio.run(scenario())
    assert recorder.seen == [f"b{i:02d}" for i in range(25)] + ["late"]
    assert consumer.failures == 3


# The search consumer.


@pytest.fixture
def books() -> MemoryTable:
    return MemoryTable(BOOKS)


@pytest.fixture
def search(books: MemoryTable, tmp_path: Path) -> BookSearch:
    return BookSearch(books, SqliteSearchIndex(tmp_path / "search.db"), "eu-west-1")


def test_search_follows_inserts_modifies_and_removes(books: MemoryTable, search: BookSearch) -> None:
    assert search.consumer.poll_once() == 0  # a new index is built from the (empty) table first
    books.put(book("b1", "Sourdough Basics", author="Hana Miller"))
    books.put(book("b2", "Engines Explained", category="Cars"))
    assert search.consumer.poll_once() == 2
    assert [b["id"] for b in search.search("sourdough")] == ["b1"]
    assert [b["id"] for b in search.search("miller")] == ["b1"]
    assert [b["id"] for b in search.search("car")] == ["b2"]

    books.update({"id": "b1"}, {"name": "Rye and Spelt"})
    books.delete({"id": "b2"})
    assert search.consumer.poll_once() == 2
    assert search.search("sourdough") == []
    assert [b["id"] for b in search.search("spelt")] == ["b1"]
    assert search.search("engines") == []


def test_search_returns_public_books_in_rank_order(books: MemoryTable, search: BookSearch) -> None:
    books.put(book("in-category", "Gearboxes", category="Cars"))
    books.put(book("in-title", "Cars of the Fifties", category="History"))
    search.consumer.poll_once()
    results = search.search("cars")
    assert [b["id"] for b in results] == ["in-title", "in-category"]
    assert results[0] == {
        "id": "in-title",
        "name": "Cars of the Fifties",
        "author": "Ann Author",
        "category": "History",
        "price": 19.5,
        "rating": 4,
        "cover": None,
    }


def test_search_skips_books_deleted_since_indexed(books: MemoryTable, search: BookSearch) -> None:
    books.put(book("b1", "Soup Daily"))
    books.put(book("b2", "Soup Weekly"))
    search.consumer.poll_once()
    books.delete({"id": "b1"})
    # Not polled yet: the index still lists b1, the answer must not.
    assert [b["id"] for b in search.search("soup")] == ["b2"]


def test_search_consumer_resumes_from_the_index_cursor(books: MemoryTable, tmp_path: Path) -> None:
    books.put(book("b1", "First Loaves"))
    first = BookSearch(books, SqliteSearchIndex(tmp_path / "s.db"), "eu-west-1")
    first.consumer.poll_once()
    books.put(book("b2", "Second Loaves"))
    restarted = BookSearch(books, SqliteSearchIndex(tmp_path / "s.db"), "eu-west-1")
    assert restarted.consumer.cursor == first.consumer.cursor
    assert restarted.consumer.poll_once() == 1
    assert sorted(b["id"] for b in restarted.search("loaves")) == ["b1", "b2"]


@pytest.mark.parametrize(
    ("query", "message"),
    [("", "empty"), ("   ", "empty"), ("x" * 201, "at most 200")],
)
def test_search_rejects_empty_and_long_queries(search: BookSearch, query: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        search.search(query)


def test_search_accepts_a_query_of_200_characters_and_hostile_text(
    books: MemoryTable, search: BookSearch
) -> None:
    books.put(book("b1", "NEAR AND Far"))
    search.consumer.poll_once()
    assert search.search("x" * 200) == []
    assert [b["id"] for b in search.search('NEAR("and" OR *')] == []
    assert [b["id"] for b in search.search('"near" AND(')] == ["b1"]
    with pytest.raises(ValidationError):
        search.search("near", limit=0)
