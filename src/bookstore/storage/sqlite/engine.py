"""The one SQLite engine: a file's connections, WAL, pragmas, busy timeout, transactions and group commit.

Every SQLite user of a region (the tables and their change log, the replica, the blog's SQL database, the
ranking, the search index, the local object store's metadata) opens its file through SqliteEngine, so
they share one busy timeout, one way to apply the durability setting and one set of transaction rules:
- one writer connection behind a re-entrant lock; a write transaction is BEGIN IMMEDIATE, so it is
  serialised from its first statement, also against other processes using the same file;
- one read-only reader connection per thread (WAL lets readers run beside the writer);
- synchronous=NORMAL for durability "process", FULL for "power" (see storage.durability);
- the writer's temporary files in memory (temp_store=MEMORY): a group's savepoints journal the pages
  each unit changes, and past 64 KiB SQLite spilled that journal to a file in /var/tmp, written page by
  page (POST /orders spent a fifth of its CPU in those writes); it lives only until the commit;
- a file written in bulk (the tables) may give its writer a larger page cache and a longer WAL between
  checkpoints (`writer_cache_kib`, `checkpoint_pages`): fewer page reads and writes per row;
- group commit, two ways: `run_group` runs a list of units in one transaction (the caller batches, as
  services.writes.GroupCommit does on the event loop); `commit_shared` lets concurrent threads join one
  transaction (the first to get the writer commits for every thread waiting, leader/follower). Either
  way each unit is all-or-nothing and its caller hears of it only after the shared commit. A unit's
  transactions have no savepoint of their own (one that fails after it wrote fails its whole unit), and
  units that may run twice have none either until one fails after it wrote (`run_group`'s `rerun`): a
  savepoint copies every page it sees changed into its journal.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from bookstore.domain.errors import StorageError
from bookstore.ports import Outcome
from bookstore.storage.durability import DEFAULT as DEFAULT_DURABILITY
from bookstore.storage.durability import Durability, synchronous

# How long a writer waits for another process's write lock on the same file before it fails.
BUSY_TIMEOUT_MS = 10_000
# Units per shared transaction at most, so one leader never holds the writer for long.
MAX_SHARED = 64
# (begin, end, undo) of a transaction on its own.
_TRANSACTION = ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK")

# CPython's sqlite3 (3.11) binds int, float and str as they are, but looks None up as an object to adapt:
# the adapters' table, then __adapt__ and __conform__ by name, each a failed attribute look-up that
# formats its error message. A catch-up binds about six NULLs a row (old image, trace, previous version):
# 12,000 of its instructions per entry (callgrind), 0.2 us a NULL by hand. An adapter registered for
# None (a dict's get: C, returns None, which binds as NULL as before) is found in the table at once.
# The registration is the module's for the whole process, and changes no value bound.
sqlite3.register_adapter(type(None), cast(Callable[[None], None], {}.get))

T = TypeVar("T")
# Turns an engine error met while doing `what` into the error the caller raises (a StorageError by default).
Translate = Callable[[str, sqlite3.Error], Exception]


@dataclass
class _Shared(Generic[T]):
    """A unit handed to commit_shared, and what it came to once a leader committed it."""

    unit: Callable[[sqlite3.Connection], T]
    done: bool = False
    value: Any = None
    error: BaseException | None = field(default=None)


class _Undone(Exception):
    """A unit of a group without savepoints failed after it wrote: the group runs again with them."""


class SqliteEngine:
    """One SQLite file (WAL) with the module's connection, durability and transaction rules."""

    def __init__(
        self,
        path: Path | str,
        *,
        durability: Durability = DEFAULT_DURABILITY,
        kind: str = "SQLite database",
        translate: Translate | None = None,
        writer_cache_kib: int | None = None,
        checkpoint_pages: int | None = None,
    ) -> None:
        """`writer_cache_kib` and `checkpoint_pages` set the writer's PRAGMA cache_size (KiB) and
        wal_autocheckpoint (pages); None keeps SQLite's defaults (2,000 KiB and 1,000 pages)."""
        self.path = Path(path)
        self.durability = durability
        self.kind = kind
        self._translate = translate
        self._write_lock = threading.RLock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        # The thread running a group (its transactions are part of its running unit), and the error of a
        # transaction of the running unit that failed after it wrote (the unit is undone whatever it does).
        self._group_thread: int | None = None
        self._unit_broken: Exception | None = None
        self._shared: list[_Shared[Any]] = []
        self._shared_lock = threading.Lock()
        self.shared_commits = 0
        self.shared_units = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = self._connect()
            self._writer.execute("PRAGMA journal_mode=WAL").fetchall()
            self._writer.execute("PRAGMA temp_store=MEMORY")
            if writer_cache_kib is not None:
                self._writer.execute(f"PRAGMA cache_size=-{int(writer_cache_kib)}")
            if checkpoint_pages is not None:
                self._writer.execute(f"PRAGMA wal_autocheckpoint={int(checkpoint_pages)}")
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open {kind} {self.path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
        )
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute(f"PRAGMA synchronous={synchronous(self.durability)}")
        return conn

    def error(self, what: str, exc: sqlite3.Error) -> Exception:
        """The error a caller raises for `exc`, met while doing `what`."""
        if self._translate is not None:
            return self._translate(what, exc)
        return StorageError(f"{self.kind} {self.path}: {what} failed: {exc}")

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"{self.kind} {self.path} is closed")

    # -- writing -------------------------------------------------------------------------------------

    def script(self, sql: str, what: str) -> None:
        """Run a script of statements (a schema) on the writer; one that opens a transaction must end it."""
        with self._write_lock:
            self._check_open()
            try:
                self._writer.executescript(sql)
            except sqlite3.Error as exc:
                if self._writer.in_transaction:
                    self._writer.execute("ROLLBACK")
                raise self.error(what, exc) from exc

    def transaction(self, what: str) -> AbstractContextManager[sqlite3.Connection]:
        """The writer inside one IMMEDIATE transaction, committed when the block ends, else rolled back.

        Inside a group (on its thread) the block is part of its unit instead, with no savepoint of its
        own: a block that raises after it changed rows fails its unit (run_group undoes the unit, even
        if the unit catches the error), and one that raises before changing any is as if it never ran.
        An engine error in the block, the BEGIN or the COMMIT becomes `error(what, ...)`.
        """
        # Only the group's own thread can find itself named here (it set the name, holding the write
        # lock it keeps until the group ends), so the check needs no lock.
        if self._group_thread == threading.get_ident():
            return _UnitWrite(self, what)
        return self._transaction(what)

    def unit_wrote(self, what: str, changes: int, exc: BaseException) -> BaseException:
        """The error a block of a group's unit raises for `exc`; the unit is marked failed when the block
        changed rows (the writer's total changes moved from `changes`). See _UnitWrite."""
        failed = self.error(what, exc) if isinstance(exc, sqlite3.Error) else exc
        wrote = self._writer.total_changes != changes
        if wrote and self._unit_broken is None and isinstance(failed, Exception):
            self._unit_broken = failed
        return failed

    @contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._write_lock:
            self._check_open()
            conn = self._writer
            begin, end, undo = _TRANSACTION
            try:
                conn.execute(begin)
                try:
                    yield conn
                    conn.execute(end)
                except BaseException:
                    if conn.in_transaction:
                        conn.execute(undo)
                    raise
            except sqlite3.Error as exc:
                raise self.error(what, exc) from exc

    @contextmanager
    def exclusive(self) -> Iterator[sqlite3.Connection]:
        """The writer with the write lock held, outside any transaction (each statement commits alone).

        For a store whose reads must not interleave with its writes (the object store opens a blob file
        while no delete can unlink it); its write transactions take the same lock.
        """
        with self._write_lock:
            self._check_open()
            yield self._writer

    def in_group(self) -> bool:
        """True on the thread running a group, while it runs."""
        return self._group_thread == threading.get_ident()

    def run_group(
        self,
        units: Sequence[Callable[[], Any]],
        *,
        before_commit: Callable[[sqlite3.Connection], None] | None = None,
        what: str = "a group of writes",
        rerun: Callable[[], None] | None = None,
    ) -> list[Outcome]:
        """Run `units` (callables writing through this engine's transactions) in one transaction.

        Each unit is all-or-nothing: one that raises is rolled back alone and its exception is its
        outcome; the others commit together, once, before this returns. `before_commit(conn)` runs last
        inside the transaction. A failed commit raises (see `error`) and keeps nothing.

        Units run in a savepoint each, unless `rerun` is given: it says the units may run twice (they
        change nothing outside this file that counts, but what they return), and they first run
        without savepoints, which cost a cart put a tenth of its instructions. A unit that fails
        before it wrote needs none; should one fail after it wrote, the transaction is rolled back,
        `rerun()` is called (to forget what the caller kept of it) and the group runs again, from
        its first unit, with a savepoint per unit.
        """
        if rerun is not None:
            try:
                return self._attempt(units, before_commit, what, savepoints=False)
            except _Undone:
                rerun()
        return self._attempt(units, before_commit, what, savepoints=True)

    def _attempt(
        self,
        units: Sequence[Callable[[], Any]],
        before_commit: Callable[[sqlite3.Connection], None] | None,
        what: str,
        *,
        savepoints: bool,
    ) -> list[Outcome]:
        outcomes: list[Outcome] = []
        with self.transaction(what) as conn:
            self._group_thread = threading.get_ident()
            try:
                for unit in units:
                    if savepoints:
                        conn.execute("SAVEPOINT unit")
                    changes = conn.total_changes
                    self._unit_broken = None
                    try:
                        outcome = Outcome(value=unit())
                    except Exception as exc:
                        outcome = Outcome(error=exc)
                    if self._unit_broken is not None and outcome.error is None:
                        # A write of the unit failed half-way and the unit went on: it is undone all the same.
                        outcome = Outcome(error=self._unit_broken)
                    if savepoints:
                        if outcome.error is not None:
                            conn.execute("ROLLBACK TO unit")
                        conn.execute("RELEASE unit")
                    elif outcome.error is not None and conn.total_changes != changes:
                        # Only a savepoint takes back the writes of one unit: the transaction is undone.
                        raise _Undone
                    outcomes.append(outcome)
                if before_commit is not None:
                    before_commit(conn)
            finally:
                self._group_thread = None
                self._unit_broken = None
        return outcomes

    def commit_shared(self, unit: Callable[[sqlite3.Connection], T], what: str) -> T:
        """`unit(conn)`'s result once a transaction holding its writes has committed; shared by threads.

        The unit runs in a transaction that may hold the units of other threads calling at the same
        time: the thread that gets the writer first runs every unit waiting (at most MAX_SHARED) and
        commits once for all of them, so under `durability = "power"` concurrent writers share one
        fsync. Units sharing a transaction run in a savepoint each (a unit alone in one needs none). A
        unit that raises is rolled back alone and its caller gets the exception; a
        failed commit fails every unit of the transaction. A unit runs with the write lock held and
        must only write through `conn` (and read what the lock guards).
        """
        mine: _Shared[T] = _Shared(unit)
        with self._shared_lock:
            self._shared.append(mine)
        while True:
            with self._write_lock:
                if mine.done:
                    break
                with self._shared_lock:
                    batch, self._shared = self._shared[:MAX_SHARED], self._shared[MAX_SHARED:]
                self._commit_batch(batch, what)
        if mine.error is not None:
            raise mine.error
        return mine.value  # type: ignore[no-any-return]

    def waiting(self) -> int:
        """How many units wait for a shared commit (those a running leader has taken not counted)."""
        with self._shared_lock:
            return len(self._shared)

    def _commit_batch(self, batch: list[_Shared[Any]], what: str) -> None:
        try:
            with self.transaction(what) as conn:
                if len(batch) == 1:
                    # Alone in its transaction, a unit needs no savepoint: should it fail, the transaction
                    # (its writes only) is rolled back and its error is the unit's, below. A savepoint
                    # cost a small S3 PUT two more statements and a journal of the pages it changed.
                    batch[0].value = batch[0].unit(conn)
                else:
                    for shared in batch:
                        self._run_in_savepoint(conn, shared, what)
        except BaseException as exc:
            for shared in batch:
                shared.value, shared.error = None, exc
            if not isinstance(exc, Exception):
                raise
        finally:
            for shared in batch:
                shared.done = True
        self.shared_commits += 1
        self.shared_units += len(batch)

    def _run_in_savepoint(self, conn: sqlite3.Connection, shared: _Shared[Any], what: str) -> None:
        """Run a unit of a shared transaction; one that raises is rolled back alone, its error kept."""
        conn.execute("SAVEPOINT unit")
        try:
            shared.value = shared.unit(conn)
        except sqlite3.Error as exc:
            # The unit's caller sees the storage error, as a transaction of its own raises.
            conn.execute("ROLLBACK TO unit")
            shared.error = self.error(what, exc)
        except Exception as exc:
            conn.execute("ROLLBACK TO unit")
            shared.error = exc
        conn.execute("RELEASE unit")

    # -- reading -------------------------------------------------------------------------------------

    def reader(self) -> sqlite3.Connection:
        """This thread's read-only connection; inside a group (on its thread), the group's writer."""
        if self.in_group():
            # Reads of a group's units see the group's writes, committed or not yet.
            return self._writer
        self._check_open()
        conn: sqlite3.Connection | None = getattr(self._local, "reader", None)
        if conn is not None:
            return conn
        try:
            conn = self._connect()
            # A reader never writes: a statement that tries fails instead of taking the write lock.
            conn.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open {self.kind} {self.path}: {exc}") from exc
        with self._readers_lock:
            self._readers.append(conn)
        self._local.reader = conn
        return conn

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """This thread's reader inside one read transaction, so several statements see one state."""
        conn = self.reader()
        if conn is self._writer:
            # Inside a group: its transaction is the one to read in.
            yield conn
            return
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = (), what: str = "read") -> list[tuple[Any, ...]]:
        """The rows of one statement on this thread's reader."""
        try:
            return self.reader().execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise self.error(what, exc) from exc

    def pragma(self, name: str) -> Any:
        """The value of PRAGMA `name` on the writer (pragmas such as synchronous are per connection)."""
        with self.exclusive() as conn:
            return conn.execute(f"PRAGMA {name}").fetchone()[0]

    def trace_writes(self, callback: Callable[[str], object] | None) -> None:
        """Call `callback(statement)` for each statement the writer runs (tests stop a write mid-way)."""
        self._writer.set_trace_callback(callback)

    def close(self) -> None:
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            with self._readers_lock:
                readers, self._readers = self._readers, []
            for conn in [*readers, self._writer]:
                with suppress(sqlite3.Error):
                    conn.close()


class _UnitWrite:
    """A block of a group's unit (SqliteEngine.transaction on the group's thread): the writer, no
    savepoint, and the unit marked failed should the block raise after it changed rows.

    A plain class: the generator-based context manager it replaces cost each write of a group its
    generator, a context-manager object and their frames (about 8% of a POST /cart, py-spy).
    """

    __slots__ = ("_changes", "_engine", "_what")

    def __init__(self, engine: SqliteEngine, what: str) -> None:
        self._engine = engine
        self._what = what
        self._changes = 0

    def __enter__(self) -> sqlite3.Connection:
        engine = self._engine
        engine._check_open()
        conn = engine._writer
        self._changes = conn.total_changes
        return conn

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            return
        failed = self._engine.unit_wrote(self._what, self._changes, exc)
        if failed is not exc:
            raise failed from exc
