"""The SQLite engine's shared commits: each unit all-or-nothing, its caller told only after the commit."""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from bookstore.domain.errors import StorageError
from bookstore.storage.sqlite.engine import SqliteEngine


@pytest.fixture
def engine(tmp_path: Path) -> SqliteEngine:
    made = SqliteEngine(tmp_path / "shared.db", durability="power")
    made.script("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL);", "creating t")
    return made


def test_a_failing_unit_is_rolled_back_alone_and_its_caller_gets_a_storage_error(
    engine: SqliteEngine,
) -> None:
    outcomes: dict[str, object] = {}

    def insert(key: str, value: object) -> None:
        def unit(conn: sqlite3.Connection) -> str:
            conn.execute("INSERT INTO t (k, v) VALUES (?, ?)", (key, value))
            return key

        try:
            outcomes[key] = engine.commit_shared(unit, f"inserting {key}")
        except Exception as exc:
            outcomes[key] = exc

    threads = [threading.Thread(target=insert, args=(k, v)) for k, v in (("a", 1), ("bad", None), ("c", 3))]
    with engine.exclusive():  # all three wait for the writer, then share one transaction
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while engine.waiting() < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.waiting() == 3
    for thread in threads:
        thread.join(timeout=30)
    assert outcomes["a"] == "a" and outcomes["c"] == "c"
    assert isinstance(outcomes["bad"], StorageError) and "NOT NULL" in str(outcomes["bad"])
    assert engine.query("SELECT k, v FROM t ORDER BY k") == [("a", 1), ("c", 3)]
    assert (engine.shared_commits, engine.shared_units) == (1, 3)


def test_a_unit_alone_in_its_transaction_runs_without_a_savepoint_and_fails_whole(
    engine: SqliteEngine,
) -> None:
    statements: list[str] = []
    engine.trace_writes(statements.append)

    def fails_after_writing(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (k, v) VALUES ('half', 1)")
        raise ValueError("the unit fails after its first write")

    assert engine.commit_shared(lambda conn: conn.execute("INSERT INTO t VALUES ('a', 1)").rowcount, "a") == 1
    with pytest.raises(ValueError, match="first write"):
        engine.commit_shared(fails_after_writing, "half")
    with pytest.raises(StorageError, match="NOT NULL"):
        engine.commit_shared(lambda conn: conn.execute("INSERT INTO t VALUES ('b', NULL)"), "b")
    engine.trace_writes(None)
    assert engine.query("SELECT k, v FROM t") == [("a", 1)]
    assert not [s for s in statements if "SAVEPOINT" in s or "RELEASE" in s]
    assert statements[:3] == ["BEGIN IMMEDIATE", "INSERT INTO t VALUES ('a', 1)", "COMMIT"]


def test_a_closed_engine_fails_every_waiting_unit(engine: SqliteEngine) -> None:
    engine.close()
    with pytest.raises(StorageError, match="closed"):
        engine.commit_shared(lambda conn: conn.execute("INSERT INTO t VALUES ('x', 1)"), "inserting x")


def _temporary_files_open() -> list[str]:
    """The files SQLite made for its temporary data (etilqs_*) this process holds open now."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if "etilqs_" in target:
            found.append(target)
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads the open files from /proc")
def test_a_group_keeps_its_savepoints_journal_in_memory(engine: SqliteEngine) -> None:
    # Each unit runs in a savepoint, so SQLite journals every page a unit changes; past 64 KiB (a unit
    # changing more than 16 pages, as a checkout does with its rows, indexes and log) that journal was
    # a file in the temporary directory, written page by page until the commit.
    # Pages added by the transaction need no journal: the units change rows already on the file.
    with engine.transaction("filling t") as conn:
        conn.executemany(
            "INSERT INTO t (k, v) VALUES (?, ?)", [(f"{i:03d}" + "k" * 3000, 0) for i in range(200)]
        )
    seen: list[list[str]] = []

    def unit(n: int) -> None:
        with engine.transaction(f"unit {n}") as conn:
            conn.execute(
                "UPDATE t SET v = v + 1 WHERE k >= ? AND k < ?", (f"{n * 40:03d}", f"{n * 40 + 40:03d}")
            )
            seen.append(_temporary_files_open())

    outcomes = engine.run_group([functools.partial(unit, n) for n in range(5)])
    assert all(outcome.error is None for outcome in outcomes)
    assert engine.query("SELECT sum(v) FROM t") == [(200,)]
    assert seen == [[]] * 5


def test_none_binds_as_null_through_the_adapter_registered_for_it(engine: SqliteEngine) -> None:
    # Registered by the engine's module: CPython 3.11 otherwise looks None up by __adapt__ and
    # __conform__ per value bound (two failed attribute look-ups), about a tenth of a catch-up's CPU.
    assert (type(None), sqlite3.PrepareProtocol) in sqlite3.adapters
    engine.script("CREATE TABLE n (k TEXT PRIMARY KEY, v);", "creating n")
    with engine.transaction("writing NULLs") as conn:
        conn.executemany("INSERT INTO n (k, v) VALUES (?, ?)", [("a", None), ("b", 0), ("c", "")])
    rows = engine.reader().execute("SELECT k, v IS NULL, typeof(v) FROM n ORDER BY k").fetchall()
    assert rows == [("a", 1, "null"), ("b", 0, "integer"), ("c", 0, "text")]
