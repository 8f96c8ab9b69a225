"""A small SQLite file of its own (WAL) behind one lock, with transactions that fail as StorageError."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bookstore.domain.errors import StorageError


class SqliteFile:
    """One connection to one file, shared by the threads of a region (stream consumers, API handlers)."""

    def __init__(self, path: Path, schema: str, kind: str) -> None:
        self.path = path
        self._kind = kind
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL survives a crash of the process; only an OS crash could lose the tail.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(schema)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open {kind} {path}: {exc}") from exc

    @contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StorageError(f"{self._kind} {self.path}: {what} failed: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()
