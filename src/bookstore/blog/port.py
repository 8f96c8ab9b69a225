"""The SqlDatabase port the blog stores its rows through (SQLite embedded, MySQL/MariaDB as real engine)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Dialect = Literal["sqlite", "mysql"]
# Values a statement takes and a query returns: text, integers, floats, bytes and NULL.
Param = str | int | float | bytes | None
Row = tuple[Any, ...]


@dataclass(frozen=True)
class Executed:
    """What one statement did: rows it matched or changed, and the id an INSERT generated (else None)."""

    rowcount: int
    last_id: int | None = None


class SqlSession(Protocol):
    """Statements inside one transaction (the object `SqlDatabase.transaction()` yields)."""

    def execute(self, sql: str, params: Sequence[Param] = ()) -> Executed: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Param]]) -> int:
        """Runs `sql` once per parameter row; returns the rows matched or changed in all."""
        ...

    def query(self, sql: str, params: Sequence[Param] = ()) -> list[Row]: ...


class SqlDatabase(SqlSession, Protocol):
    """A SQL database: one statement per call, `?` placeholders, transactions as context managers.

    Contract, kept by every adapter (tests/contract/test_sql.py proves it over SQLite and MariaDB):
    - Placeholders are `?` in every dialect (the mysql adapter translates them); a `?` or `%` inside a
      quoted literal is text, not a placeholder. One statement per call.
    - `execute`, `executemany` and `query` called on the database run as a transaction of their own,
      committed before they return. Inside `with db.transaction() as tx:` the statements of `tx` see each
      other's effects, no other connection sees any of them before the block ends, and they commit together
      when it ends normally; when the block raises, all are rolled back and the exception propagates as it
      was. A transaction belongs to the thread that opened it; opening another inside it on the same
      thread raises StorageError (there are no nested transactions).
    - Writers of the same row are serialised: a second one waits for the first to end (up to the engine's
      lock timeout, then StorageError). SQLite serialises every write transaction; on MySQL a locking
      read (`SELECT ... FOR UPDATE`) of a shared row gives the same order where a caller needs it.
    - `Executed.rowcount` of an UPDATE counts the rows it matched, changed or not. `Executed.last_id` is
      the key an INSERT of one row generated for an auto-increment column. Inserting an explicit value
      into such a column moves the counter past it, so later generated keys never collide with it.
    - `query` returns rows as tuples; text comes back as str (UTF-8, any code point, compared and
      unique by code point), integers as int (64-bit), NULL as None, blobs as bytes.
    - A unique or primary-key violation raises Conflict; the failed statement changes nothing, and the
      transaction it ran in stays open and usable.
    - Every other engine failure (bad SQL, wrong number of parameters, lost connection, lock timeout,
      a closed database) raises StorageError chained to the driver's exception; nothing above an adapter
      sees sqlite3 or pymysql errors.
    - A committed transaction survives a kill -9 of the process.
    - Safe to share between threads. `close()` ends every connection; calling it again does nothing,
      and any other call afterwards raises StorageError.
    - SQL that differs between engines (DDL, locking reads, upserts) is chosen by the caller from
      `dialect`; the port does not rewrite anything but placeholders.
    """

    @property
    def dialect(self) -> Dialect:
        """The engine's SQL dialect: "sqlite" or "mysql"."""
        ...

    def transaction(self) -> AbstractContextManager[SqlSession]: ...

    def close(self) -> None: ...
