"""MysqlSql: the SqlDatabase port on MySQL or MariaDB through PyMySQL, one connection per thread."""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Literal

import pymysql
from pymysql.constants import CLIENT, ER

from bookstore.blog.port import Executed, Param, Row
from bookstore.domain.errors import Conflict, StorageError, Unavailable, ValidationError

# 1586 is ER_DUP_ENTRY_WITH_KEY_NAME, which PyMySQL has no constant for.
_UNIQUE_VIOLATIONS = frozenset({ER.DUP_ENTRY, ER.DUP_KEY, 1586})
# Client-side codes of a connection that is gone; the next call on this thread opens a new one.
_CONNECTION_LOST = frozenset({2003, 2006, 2013, 2055, 0})
# ER_OPTION_PREVENTS_STATEMENT: the server runs with read_only (a replica) and refuses the write.
_READ_ONLY = 1290
_DATABASE_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
LOCK_WAIT_TIMEOUT_S = 10
SQL_MODE = "STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,ERROR_FOR_DIVISION_BY_ZERO"


@functools.lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """`sql` with `?` placeholders as PyMySQL's `%s`, and literal `%` doubled; quoted text left as it is.

    Quotes are '...', "..." and `...` (doubled quotes inside stay inside); `?` and `%` in them are text.
    """
    out: list[str] = []
    quote: str | None = None
    for ch in sql:
        if quote is not None:
            if ch == quote:
                quote = None
            out.append("%%" if ch == "%" else ch)
        elif ch in "'\"`":
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


def _code(exc: pymysql.err.MySQLError) -> int:
    code = exc.args[0] if exc.args else 0
    return code if isinstance(code, int) else 0


class _Session:
    """Statements on this thread's connection inside the transaction that opened it."""

    def __init__(self, owner: MysqlSql, conn: pymysql.connections.Connection[pymysql.cursors.Cursor]) -> None:
        self._owner = owner
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Param] = ()) -> Executed:
        with self._owner._errors("execute"), self._conn.cursor() as cursor:
            rowcount = cursor.execute(translate(sql), tuple(params))
            last_id = cursor.lastrowid if rowcount == 1 and cursor.lastrowid else None
            return Executed(rowcount=max(rowcount, 0), last_id=last_id)

    def executemany(self, sql: str, rows: Sequence[Sequence[Param]]) -> int:
        if not rows:
            return 0
        with self._owner._errors("executemany"), self._conn.cursor() as cursor:
            return max(cursor.executemany(translate(sql), [tuple(r) for r in rows]) or 0, 0)

    def query(self, sql: str, params: Sequence[Param] = ()) -> list[Row]:
        with self._owner._errors("query"), self._conn.cursor() as cursor:
            cursor.execute(translate(sql), tuple(params))
            return list(cursor.fetchall())


class MysqlSql:
    """The SqlDatabase port on a MySQL/MariaDB database (InnoDB, utf8mb4 with binary collation).

    Each thread uses its own connection, opened on first use, with autocommit off: statements called on
    the database commit before they return, so no read keeps an old snapshot. UPDATE row counts are
    matched rows (CLIENT.FOUND_ROWS), as in SQLite. Strict SQL mode: a value too long for its column is
    an error, never silently cut. A lost connection raises StorageError and is replaced on the next call.
    `create_database=True` creates `database` (utf8mb4, binary collation) when it does not exist.
    """

    dialect: Literal["mysql"] = "mysql"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 3306,
        user: str = "root",
        password: str = "",
        database: str = "bookstore",
        *,
        unix_socket: str | None = None,
        create_database: bool = False,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
    ) -> None:
        if not _DATABASE_NAME.match(database):
            raise ValidationError(f"database name {database!r} may hold only letters, digits and '_'")
        self.host = host
        self.port = port
        self.user = user
        self.database = database
        self._password = password
        self._unix_socket = unix_socket
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._local = threading.local()
        self._connections: list[pymysql.connections.Connection[pymysql.cursors.Cursor]] = []
        self._lock = threading.Lock()
        self._closed = False
        if create_database:
            self._create_database()

    def __repr__(self) -> str:
        return f"MysqlSql({self.user}@{self.host}:{self.port}/{self.database})"

    def _open(self, database: str | None) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
        try:
            return pymysql.connect(
                host=self.host,
                port=self.port,
                user=self.user,
                password=self._password,
                database=database,
                unix_socket=self._unix_socket,
                charset="utf8mb4",
                collation="utf8mb4_bin",
                autocommit=False,
                client_flag=CLIENT.FOUND_ROWS,
                sql_mode=SQL_MODE,
                init_command=f"SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT_TIMEOUT_S}",
                connect_timeout=self._connect_timeout,
                read_timeout=self._read_timeout,
                write_timeout=self._read_timeout,
            )
        except pymysql.err.MySQLError as exc:
            raise StorageError(f"cannot connect to MySQL {self!r}: {exc}") from exc

    def _create_database(self) -> None:
        conn = self._open(None)
        try:
            with self._errors("create database"), conn.cursor() as cursor:
                cursor.execute(
                    f"CREATE DATABASE IF NOT EXISTS `{self.database}` "
                    "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                )
        finally:
            conn.close()

    def _connection(self) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
        if self._closed:
            raise StorageError(f"MySQL {self!r} is closed")
        conn: pymysql.connections.Connection[pymysql.cursors.Cursor] | None = getattr(
            self._local, "conn", None
        )
        if conn is None:
            conn = self._open(self.database)
            with self._lock:
                self._connections.append(conn)
            self._local.conn = conn
        return conn

    def _forget(self) -> None:
        """Drops this thread's connection after it failed, so the next call opens a fresh one."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is None:
            return
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)
        with suppress(pymysql.err.Error):
            conn.close()

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except pymysql.err.IntegrityError as exc:
            if _code(exc) in _UNIQUE_VIOLATIONS:
                raise Conflict(f"{what}: a row with this key already exists ({exc.args[-1]})") from exc
            raise StorageError(f"MySQL {self!r}: {what} failed: {exc}") from exc
        except pymysql.err.MySQLError as exc:
            if _code(exc) == _READ_ONLY and "read-only" in str(exc):
                raise Unavailable(
                    f"MySQL {self!r} is read-only (a replica); write to the primary ({exc.args[-1]})"
                ) from exc
            if isinstance(exc, pymysql.err.InterfaceError) or _code(exc) in _CONNECTION_LOST:
                self._forget()
            raise StorageError(f"MySQL {self!r}: {what} failed: {exc}") from exc
        except (TypeError, ValueError) as exc:
            # PyMySQL formats parameters into the statement client-side: a wrong count fails here.
            raise StorageError(f"MySQL {self!r}: {what} failed: {exc}") from exc

    def transaction(self) -> AbstractContextManager[_Session]:
        return self._session(begin=True)

    @contextmanager
    def _session(self, *, begin: bool) -> Iterator[_Session]:
        """This thread's connection in a transaction that commits when the block ends normally.

        `begin=False` serves a single statement: with autocommit off the statement opens the transaction
        itself, which saves the round trip of BEGIN.
        """
        if getattr(self._local, "in_transaction", False):
            raise StorageError(f"MySQL {self!r}: a transaction is already open on this thread")
        conn = self._connection()
        self._local.in_transaction = True
        try:
            if begin:
                with self._errors("begin"):
                    conn.begin()
            try:
                yield _Session(self, conn)
            except BaseException:
                self._rollback(conn)
                raise
            try:
                with self._errors("commit"):
                    conn.commit()
            except BaseException:
                self._rollback(conn)
                raise
        finally:
            self._local.in_transaction = False

    def _rollback(self, conn: pymysql.connections.Connection[pymysql.cursors.Cursor]) -> None:
        try:
            conn.rollback()
        except pymysql.err.MySQLError:
            # The connection is unusable; the server rolls the transaction back when it goes.
            self._forget()

    def execute(self, sql: str, params: Sequence[Param] = ()) -> Executed:
        with self._session(begin=False) as tx:
            return tx.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Param]]) -> int:
        # Several statements may run: BEGIN makes them one transaction even if the driver splits them.
        with self._session(begin=True) as tx:
            return tx.executemany(sql, rows)

    def query(self, sql: str, params: Sequence[Param] = ()) -> list[Row]:
        # The commit ends the read's snapshot, so the next read sees what others committed since.
        with self._session(begin=False) as tx:
            return tx.query(sql, params)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            with suppress(pymysql.err.Error):
                conn.close()
