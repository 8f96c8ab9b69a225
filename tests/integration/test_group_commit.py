"""Group commit on SQLite: units of writes share a transaction, each all-or-nothing, answered after it."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from bookstore.domain.errors import ConditionFailed, NotFound, StorageError
from bookstore.domain.orders import OrderLine
from bookstore.ports import ItemAbsent, ItemExists
from bookstore.region.services import RegionServices
from bookstore.services.writes import GroupCommit
from bookstore.storage.sqlite.tables import SqliteDatabase, SqliteTable
from bookstore.tables import CARTS


@pytest.fixture
def db(tmp_path: Path) -> Iterator[SqliteDatabase]:
    with SqliteDatabase(tmp_path / "tables.db", "eu-west-1") as database:
        yield database


@pytest.fixture
def carts(db: SqliteDatabase) -> SqliteTable:
    return db.table(CARTS)


def row(book: str, quantity: int = 1) -> dict[str, object]:
    return {"customerId": "c1", "bookId": book, "quantity": quantity, "price": 9.5}


def committed_books(path: Path) -> set[str]:
    """The cart rows another connection (another process would see the same) finds in the file."""
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute('SELECT sk FROM "items_carts" WHERE doc IS NOT NULL').fetchall()
    return {r[0] for r in rows}


def test_a_failing_unit_is_undone_alone(db: SqliteDatabase, carts: SqliteTable) -> None:
    carts.put(row("taken"))
    heard: list[int] = []
    db.add_listener(lambda: heard.append(1))

    def half_then_fail() -> None:
        carts.put(row("half"))
        raise NotFound("the unit changes its mind after one write")

    outcomes = db.run_group(
        [
            lambda: carts.put(row("a")),
            half_then_fail,
            lambda: carts.put(row("taken"), condition=ItemAbsent()),
            lambda: carts.delete({"customerId": "c1", "bookId": "a"}) and "deleted",
        ]
    )

    assert outcomes[0].error is None
    assert isinstance(outcomes[1].error, NotFound)
    assert isinstance(outcomes[2].error, ConditionFailed)
    assert outcomes[3].value == "deleted"
    assert committed_books(db.path) == {"taken"}
    kinds = [(r.kind, r.key["bookId"]) for r in carts.changes(None).records]
    assert kinds == [("INSERT", "taken"), ("INSERT", "a"), ("REMOVE", "a")]
    assert heard == [1], "listeners hear of a group once, after its commit"


def test_a_unit_going_on_after_a_write_failed_half_way_is_undone_all_the_same(
    db: SqliteDatabase, carts: SqliteTable
) -> None:
    """A write has no savepoint of its own in a group: one that fails after it changed rows (here its
    change record is appended, then the row's insert is refused) fails its whole unit, caught or not."""
    with db.transaction("a trigger refusing one row") as conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON \"items_carts\" WHEN NEW.sk = 'refused' "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )

    def carry_on() -> str:
        carts.put(row("before"))
        try:
            carts.put(row("refused"))
        except StorageError:
            return "went on"
        return "not refused"

    def condition_then_write() -> str:
        # A write refused before it changed anything leaves its unit free to go on.
        try:
            carts.put(row("a"), condition=ItemExists())
        except ConditionFailed:
            carts.put(row("after"))
        return "done"

    outcomes = db.run_group([carry_on, condition_then_write])

    assert isinstance(outcomes[0].error, StorageError) and "refused" in str(outcomes[0].error)
    assert outcomes[1].value == "done"
    assert committed_books(db.path) == {"after"}
    assert [r.key["bookId"] for r in carts.changes(None).records] == ["after"]


def test_units_run_once_unless_one_fails_after_it_wrote_then_the_group_runs_again(
    db: SqliteDatabase, carts: SqliteTable
) -> None:
    """Units run without a savepoint each; one failing after it wrote sends the whole group around again."""
    calls: list[str] = []

    def unit(name: str, fail: Exception | None = None, write: bool = True) -> Any:
        def run() -> str:
            calls.append(name)
            if write:
                carts.put(row(name))
            if fail is not None:
                raise fail
            return name

        return run

    refused = ConditionFailed("refused before any write")
    outcomes = db.run_group([unit("a"), unit("b", refused, write=False), unit("c")])
    assert calls == ["a", "b", "c"], "a unit failing before it wrote needs no second run"
    assert [o.value for o in outcomes] == ["a", None, "c"] and outcomes[1].error is refused

    calls.clear()
    broken = NotFound("changed its mind after a write")
    outcomes = db.run_group([unit("d"), unit("e", broken), unit("f")])
    assert calls == ["d", "e", "d", "e", "f"]
    assert [o.value for o in outcomes] == ["d", None, "f"] and outcomes[1].error is broken
    assert committed_books(db.path) == {"a", "c", "d", "f"}
    assert [r.key["bookId"] for r in carts.changes(None).records] == ["a", "c", "d", "f"]


def test_every_caller_is_answered_after_the_commit_holding_its_write(
    db: SqliteDatabase, carts: SqliteTable
) -> None:
    writes = GroupCommit(db.run_group)

    async def add(book: str) -> set[str]:
        await writes.run(lambda: carts.put(row(book)))
        # What another connection finds as soon as the caller has its answer.
        return committed_books(db.path)

    async def main() -> list[set[str]]:
        return await asyncio.gather(*(add(f"b{i}") for i in range(20)))

    seen = asyncio.run(main())

    for i, books in enumerate(seen):
        assert f"b{i}" in books
    assert writes.groups == 1 and writes.units == 20, "callers of one turn of the loop share a commit"


def test_a_callers_error_reaches_only_that_caller(db: SqliteDatabase, carts: SqliteTable) -> None:
    writes = GroupCommit(db.run_group)

    def missing() -> None:
        raise NotFound("no such book")

    def put_ok() -> str:
        carts.put(row("ok"))
        return "ok"

    async def main() -> tuple[object, object]:
        return await asyncio.gather(
            writes.run(put_ok),
            writes.run(missing),
            return_exceptions=True,
        )

    ok, failed = asyncio.run(main())

    assert ok == "ok"
    assert isinstance(failed, NotFound)
    assert committed_books(db.path) == {"ok"}


def test_a_group_larger_than_the_limit_commits_in_several_transactions(
    db: SqliteDatabase, carts: SqliteTable
) -> None:
    writes = GroupCommit(db.run_group, max_group=4)

    async def main() -> None:
        await asyncio.gather(*(writes.run(partial(carts.put, row(f"b{i}"))) for i in range(10)))

    asyncio.run(main())

    assert (writes.groups, writes.units) == (3, 10)
    assert len(committed_books(db.path)) == 10


def test_without_a_group_runner_each_unit_runs_at_once(carts: SqliteTable) -> None:
    writes = GroupCommit()

    def put_alone() -> str:
        carts.put(row("alone"))
        return "done"

    async def main() -> object:
        return await writes.run(put_alone)

    assert asyncio.run(main()) == "done"
    assert carts.get({"customerId": "c1", "bookId": "alone"}) is not None
    assert writes.groups == 0


def test_retries_of_one_checkout_in_one_group_write_one_order(services: RegionServices) -> None:
    """The second unit reads the first one's uncommitted order: one order, answered to both."""
    lines = [OrderLine("bk-cook-001", 2)]

    async def main() -> list[tuple[dict[str, Any], bool]]:
        return await asyncio.gather(
            *(services.writes.run(lambda: services.checkout.place("c1", lines, "same-key")) for _ in range(3))
        )

    placed = asyncio.run(main())

    assert [created for _, created in placed] == [True, False, False]
    assert len({order["orderId"] for order, _ in placed}) == 1
    assert len(services.checkout.history("c1")) == 1
    assert services.writes.groups == 1


class FrozenClock:
    """A wall clock that never moves, so versions rise only through the file's hlc row."""

    def now_ms(self) -> int:
        return 1_700_000_000_000


def test_versions_issued_in_a_group_rise_and_later_writers_go_above_them(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "frozen.db", "eu-west-1", FrozenClock())
    carts = db.table(CARTS)

    def put_then_fail() -> None:
        carts.put(row("undone"))
        raise NotFound("undone after its write took a version")

    db.run_group([lambda: carts.put(row("g1")), put_then_fail, lambda: carts.put(row("g2"))])
    # Another process's handle on the same file issues versions from the same row.
    with SqliteDatabase(db.path, db.region, FrozenClock()) as other:
        other.table(CARTS).put(row("other"))
    carts.put(row("after"))

    entries = db.read_log(0).entries
    db.close()
    assert [e.key["bookId"] for e in entries] == ["g1", "g2", "other", "after"]
    versions = [e.version[0] for e in entries]
    assert versions == sorted(set(versions)), "unique and rising in commit order"
