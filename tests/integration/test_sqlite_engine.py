"""The SQLite engine's shared commits: each unit all-or-nothing, its caller told only after the commit."""

from __future__ import annotations

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


def test_a_closed_engine_fails_every_waiting_unit(engine: SqliteEngine) -> None:
    engine.close()
    with pytest.raises(StorageError, match="closed"):
        engine.commit_shared(lambda conn: conn.execute("INSERT INTO t VALUES ('x', 1)"), "inserting x")
