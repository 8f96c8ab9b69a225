"""MariaDB's own replication for the blog: GTID replicas (read_only), lag, promotion, switchover, rejoin.

The same life cycle as the embedded default (this package's node), on the engine's replication:
- every server runs with a binary log, GTID strict mode, log_slave_updates, row-based events and
  `read_only=1` by default (SERVER_ARGS): a server takes writes only once made primary. Applications use
  an account without SUPER or READ_ONLY ADMIN (`create_accounts`), so read_only holds against them; the
  mysql adapter turns the refusal (error 1290) into Unavailable (503).
- each server's `blog_meta` (epoch, primary, read_only) is its own: written with `sql_log_bin=0` and
  ignored by replicas (`--replicate-wild-ignore-table=%.blog_meta`). The epoch history (`blog_epochs`) is
  data: it replicates.
- promotion stops the replica, lets it apply what it received, makes it writable at a new epoch and
  records the fork (its GTID position and log lsn). A switchover fences the primary (read_only), waits
  with MASTER_GTID_WAIT for the target to reach the primary's gtid_binlog_pos, then promotes it.
- a former primary rejoins as a replica: its errant transactions (GTIDs of its own server past what the
  new primary has, compared per domain and server id) are reported, the change records they wrote are
  kept in its `blog_diverged`, its blog tables are re-synced from a consistent snapshot of the new
  primary (its binary log reset to the snapshot's GTID position), and it follows the new primary.

Every function works on administrative connections (root or an account with SUPER) of the servers.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import orjson
import pymysql

from bookstore.blog.repository import COLUMNS
from bookstore.blog.schema import local_table_statements
from bookstore.domain.errors import Conflict, StorageError, Unavailable, ValidationError

log = logging.getLogger("bookstore.mysql.replication")

# Arguments every server of a replicated blog runs with (besides --log-bin and --gtid-strict-mode=1).
SERVER_ARGS: Final = (
    "--log-slave-updates=1",
    "--binlog-format=ROW",
    "--read-only=1",
    "--replicate-wild-ignore-table=%.blog_meta",
    "--replicate-wild-ignore-table=%.blog_diverged",
)
# Tables a rejoin copies from the new primary: the rows, the log and the epoch history.
SYNCED_TABLES: Final = ("blog_posts", "blog_post_tags", "blog_comments", "blog_changelog", "blog_epochs")
_CHANGE_COLUMNS: Final = ("lsn", "epoch", "region", "tbl", "pk", "op", "row_image", "written_ms")
_EPOCH_COLUMNS: Final = ("epoch", "primary_region", "fork_lsn", "started_ms")
_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_GTID = re.compile(r"^(\d+)-(\d+)-(\d+)$")
HEARTBEAT_S: Final = 1.0


@dataclass(frozen=True)
class MysqlServer:
    """A MariaDB server and an administrative account on it."""

    host: str
    port: int
    user: str = "root"
    password: str = ""

    def connect(self, database: str | None = None) -> pymysql.connections.Connection[Any]:
        try:
            return pymysql.connect(
                host=self.host,
                port=self.port,
                user=self.user,
                password=self.password,
                database=database,
                autocommit=True,
                charset="utf8mb4",
                connect_timeout=5,
                read_timeout=120,
            )
        except pymysql.err.MySQLError as exc:
            raise StorageError(f"cannot connect to MariaDB {self.host}:{self.port}: {exc}") from exc

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Accounts:
    """The application's account (no SUPER, no READ_ONLY ADMIN) and the replication account."""

    app_user: str
    app_password: str
    repl_user: str
    repl_password: str


@dataclass(frozen=True, order=True)
class Gtid:
    domain: int
    server_id: int
    seq: int

    def __str__(self) -> str:
        return f"{self.domain}-{self.server_id}-{self.seq}"


def parse_gtids(text: str | None) -> list[Gtid]:
    """A GTID list as MariaDB prints it ("0-1-5,1-2-7"; empty for none)."""
    out = []
    for part in (text or "").replace("\n", "").split(","):
        part = part.strip()
        if not part:
            continue
        match = _GTID.match(part)
        if match is None:
            raise ValidationError(f"{part!r} is not a GTID (domain-server-seq)")
        out.append(Gtid(*(int(g) for g in match.groups())))
    return out


@dataclass(frozen=True)
class ErrantRange:
    """Transactions a server wrote that the other side never had: domain-server-first..last."""

    domain: int
    server_id: int
    first_seq: int
    last_seq: int

    @property
    def count(self) -> int:
        return self.last_seq - self.first_seq + 1

    def __str__(self) -> str:
        first = f"{self.domain}-{self.server_id}-{self.first_seq}"
        return first if self.count == 1 else f"{first}..{self.domain}-{self.server_id}-{self.last_seq}"


@dataclass(frozen=True)
class ReplicaStatus:
    """SHOW SLAVE STATUS, the parts that matter."""

    master: str
    io_running: bool
    sql_running: bool
    seconds_behind: int | None
    gtid_io_pos: str
    last_error: str


@dataclass(frozen=True)
class Lag:
    """How far a replica is behind its primary: SHOW SLAVE STATUS's seconds and transactions by GTID."""

    seconds: int | None
    transactions: int
    primary_pos: str
    replica_pos: str


@dataclass(frozen=True)
class Promotion:
    epoch: int
    region: str
    gtid_pos: str
    fork_lsn: int


@dataclass(frozen=True)
class Rejoin:
    """A former primary's rejoin: its errant transactions and the change records kept aside."""

    errant: tuple[ErrantRange, ...]
    diverged: int
    gtid_pos: str


def _check_name(name: str, what: str) -> str:
    if not _NAME.match(name):
        raise ValidationError(f"{what} {name!r} may hold only letters, digits and '_'")
    return name


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


@contextmanager
def _admin(server: MysqlServer, database: str | None = None) -> Iterator[pymysql.cursors.Cursor]:
    conn = server.connect(database)
    try:
        with conn.cursor() as cursor:
            yield cursor
    except pymysql.err.MySQLError as exc:
        raise StorageError(f"MariaDB {server}: {exc}") from exc
    finally:
        conn.close()


def _one(cursor: pymysql.cursors.Cursor, sql: str, params: Sequence[Any] = ()) -> Any:
    cursor.execute(sql, tuple(params))
    row = cursor.fetchone()
    return None if row is None else row[0]


def _variable(cursor: pymysql.cursors.Cursor, name: str) -> str:
    return str(_one(cursor, f"SELECT @@GLOBAL.{name}") or "")


# -- accounts and the first primary --------------------------------------------------------------------------


def create_accounts(server: MysqlServer, database: str, accounts: Accounts) -> None:
    """The application's and the replication's accounts on one server (not replicated; idempotent)."""
    db = _check_name(database, "database")
    app, repl = _check_name(accounts.app_user, "user"), _check_name(accounts.repl_user, "user")
    with _admin(server) as c:
        c.execute("SET SESSION sql_log_bin = 0")
        c.execute(f"CREATE USER IF NOT EXISTS '{app}'@'%' IDENTIFIED BY {_quote(accounts.app_password)}")
        c.execute(
            "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX, REFERENCES "
            f"ON `{db}`.* TO '{app}'@'%'"
        )
        c.execute(f"CREATE USER IF NOT EXISTS '{repl}'@'%' IDENTIFIED BY {_quote(accounts.repl_password)}")
        c.execute(f"GRANT REPLICATION SLAVE ON *.* TO '{repl}'@'%'")


def make_primary(server: MysqlServer, database: str) -> None:
    """Makes a fresh server the first primary: creates the database (replicated) and takes writes."""
    db = _check_name(database, "database")
    with _admin(server) as c:
        c.execute(f"CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        c.execute("SET GLOBAL read_only = 0")


def _local_tables(c: pymysql.cursors.Cursor) -> None:
    """blog_meta and blog_diverged, which replicas ignore (their DDL too): each server creates its own."""
    for statement in local_table_statements("mysql"):
        c.execute(statement)


def set_blog_meta(
    server: MysqlServer,
    database: str,
    *,
    epoch: int,
    read_only: bool,
    primary_region: str,
    applied_lsn: int | None = None,
) -> None:
    """This server's own replication state in blog_meta, written outside the binary log."""
    values = {"epoch": str(epoch), "read_only": "1" if read_only else "0", "primary_region": primary_region}
    if applied_lsn is not None:
        values["applied_lsn"] = str(applied_lsn)
    with _admin(server, _check_name(database, "database")) as c:
        c.execute("SET SESSION sql_log_bin = 0")
        _local_tables(c)
        for name, value in values.items():
            c.execute(
                "INSERT INTO blog_meta (name, value) VALUES (%s, %s)"
                " ON DUPLICATE KEY UPDATE value = VALUES(value)",
                (name, value),
            )


def blog_meta(server: MysqlServer, database: str) -> dict[str, str]:
    with _admin(server, _check_name(database, "database")) as c:
        c.execute("SELECT name, value FROM blog_meta")
        return {str(n): str(v) for n, v in c.fetchall()}


# -- replicas and lag ----------------------------------------------------------------------------------------


def replica_status(server: MysqlServer) -> ReplicaStatus | None:
    """The server's replication threads (None when it replicates from nobody)."""
    with _admin(server) as c:
        c.execute("SHOW SLAVE STATUS")
        row = c.fetchone()
        if row is None:
            return None
        names = [d[0] for d in c.description or ()]
    status = dict(zip(names, row, strict=True))
    behind = status.get("Seconds_Behind_Master")
    return ReplicaStatus(
        master=f"{status.get('Master_Host')}:{status.get('Master_Port')}",
        io_running=status.get("Slave_IO_Running") == "Yes",
        sql_running=status.get("Slave_SQL_Running") == "Yes",
        seconds_behind=None if behind is None else int(behind),
        gtid_io_pos=str(status.get("Gtid_IO_Pos") or ""),
        last_error=str(status.get("Last_IO_Error") or status.get("Last_SQL_Error") or ""),
    )


def gtid_binlog_pos(server: MysqlServer) -> str:
    with _admin(server) as c:
        return _variable(c, "gtid_binlog_pos")


def _behind(primary_pos: str, replica_pos: str) -> int:
    """Transactions in `primary_pos` past `replica_pos`, domain by domain (sequences count in a domain)."""
    mine = {g.domain: g.seq for g in parse_gtids(replica_pos)}
    return sum(max(0, g.seq - mine.get(g.domain, 0)) for g in parse_gtids(primary_pos))


def lag(primary: MysqlServer, replica: MysqlServer) -> Lag:
    """Seconds_Behind_Master and the transactions the replica has not applied (by GTID)."""
    status = replica_status(replica)
    with _admin(primary) as c:
        primary_pos = _variable(c, "gtid_binlog_pos")
    with _admin(replica) as c:
        replica_pos = _variable(c, "gtid_slave_pos")
    return Lag(
        seconds=None if status is None else status.seconds_behind,
        transactions=_behind(primary_pos, replica_pos),
        primary_pos=primary_pos,
        replica_pos=replica_pos,
    )


def wait_for_position(replica: MysqlServer, gtid_pos: str, timeout_s: float) -> bool:
    """MASTER_GTID_WAIT: True once the replica applied `gtid_pos`, False after `timeout_s`."""
    if not gtid_pos:
        return True
    with _admin(replica) as c:
        return bool(_one(c, "SELECT MASTER_GTID_WAIT(%s, %s)", (gtid_pos, timeout_s)) == 0)


def configure_replica(
    replica: MysqlServer,
    primary: MysqlServer,
    *,
    database: str,
    accounts: Accounts,
    region: str,
    primary_region: str,
    epoch: int,
    via: tuple[str, int] | None = None,
    timeout_s: float = 60.0,
) -> None:
    """Makes `replica` a read-only GTID replica of `primary`, reached at `via` (e.g. through a link).

    CHANGE MASTER TO ... MASTER_USE_GTID=slave_pos; START SLAVE; read_only=1. Returns once the replica
    has applied the primary's current position (so the blog's tables exist there), with its blog_meta
    saying which region is primary at which epoch.
    """
    host, port = via if via is not None else (primary.host, primary.port)
    with _admin(replica) as c:
        c.execute("SET GLOBAL read_only = 1")
        c.execute("STOP SLAVE")
        c.execute(
            f"CHANGE MASTER TO MASTER_HOST={_quote(host)}, MASTER_PORT={int(port)}, "
            f"MASTER_USER={_quote(accounts.repl_user)}, MASTER_PASSWORD={_quote(accounts.repl_password)}, "
            f"MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1, MASTER_HEARTBEAT_PERIOD={HEARTBEAT_S}"
        )
        c.execute("START SLAVE")
    target = gtid_binlog_pos(primary)
    if not wait_for_position(replica, target, timeout_s):
        status = replica_status(replica)
        raise Unavailable(
            f"{replica} did not reach {primary}'s position {target} in {timeout_s:g} s "
            f"({status.last_error if status else 'not replicating'})"
        )
    set_blog_meta(replica, database, epoch=epoch, read_only=True, primary_region=primary_region)
    log.info("event=mariadb_replica_configured replica=%s region=%s primary=%s", replica, region, primary)


# -- promotion, fencing, switchover --------------------------------------------------------------------------


def _epoch(c: pymysql.cursors.Cursor) -> int:
    meta = _one(c, "SELECT value FROM blog_meta WHERE name = 'epoch'")
    history = _one(c, "SELECT MAX(epoch) FROM blog_epochs")
    return max(int(meta or 0), int(history or 0))


def promote(
    replica: MysqlServer,
    *,
    database: str,
    region: str,
    min_epoch: int = 0,
    drain_timeout_s: float = 5.0,
) -> Promotion:
    """Unplanned promotion: the replica applies what it received, stops replicating, takes writes.

    STOP SLAVE IO_THREAD, wait (at most `drain_timeout_s`) for the SQL thread to apply the relay log,
    STOP SLAVE, RESET SLAVE ALL; then a new epoch (max known + 1) recorded in blog_epochs with the fork
    (the GTID position and the log's lsn), blog_meta, and read_only=0.
    """
    db = _check_name(database, "database")
    status = replica_status(replica)
    with _admin(replica, db) as c:
        if status is not None:
            c.execute("STOP SLAVE IO_THREAD")
            received = replica_status(replica)
            if received is not None and received.gtid_io_pos:
                _one(c, "SELECT MASTER_GTID_WAIT(%s, %s)", (received.gtid_io_pos, drain_timeout_s))
            c.execute("STOP SLAVE")
            c.execute("RESET SLAVE ALL")
        epoch = max(_epoch(c), min_epoch) + 1
        fork_lsn = int(_one(c, "SELECT COALESCE(MAX(lsn), 0) FROM blog_changelog") or 0)
        gtid_pos = _variable(c, "gtid_current_pos")
        c.execute(
            "INSERT INTO blog_epochs (epoch, primary_region, fork_lsn, started_ms) VALUES (%s, %s, %s, %s)",
            (epoch, region, fork_lsn, int(time.time() * 1000)),
        )
    set_blog_meta(replica, db, epoch=epoch, read_only=False, primary_region=region, applied_lsn=fork_lsn)
    with _admin(replica) as c:
        c.execute("SET GLOBAL read_only = 0")
    log.warning(
        "event=mariadb_promoted server=%s region=%s epoch=%d gtid=%s", replica, region, epoch, gtid_pos
    )
    return Promotion(epoch=epoch, region=region, gtid_pos=gtid_pos, fork_lsn=fork_lsn)


def fence(
    server: MysqlServer, database: str, *, epoch: int | None = None, primary_region: str | None = None
) -> str:
    """Makes a server refuse writes (read_only=1, blog_meta too); returns its gtid_binlog_pos after that.

    SET GLOBAL read_only waits for running write transactions, so the position returned covers every
    write the server accepted. With `epoch` and `primary_region` its blog_meta learns the new primary.
    """
    with _admin(server) as c:
        c.execute("SET GLOBAL read_only = 1")
        pos = _variable(c, "gtid_binlog_pos")
    meta = blog_meta(server, database)
    set_blog_meta(
        server,
        database,
        epoch=epoch if epoch is not None else int(meta.get("epoch", "1")),
        read_only=True,
        primary_region=primary_region or meta.get("primary_region", ""),
    )
    return pos


def switchover(
    old: MysqlServer,
    new: MysqlServer,
    *,
    database: str,
    accounts: Accounts,
    new_region: str,
    old_region: str,
    old_reaches_new: tuple[str, int] | None = None,
    timeout_s: float = 30.0,
) -> Promotion:
    """Planned: fence `old`, wait until `new` applied all of it (MASTER_GTID_WAIT), promote `new`, and make
    `old` its replica. Loses nothing; if `new` does not catch up in time, `old` takes writes again."""
    epoch = int(blog_meta(old, database).get("epoch", "1"))
    pos = fence(old, database)
    if not wait_for_position(new, pos, timeout_s):
        with _admin(old) as c:
            c.execute("SET GLOBAL read_only = 0")
        set_blog_meta(old, database, epoch=epoch, read_only=False, primary_region=old_region)
        raise Unavailable(
            f"{new} did not reach {old}'s position {pos} in {timeout_s:g} s; {old} takes writes again"
        )
    promotion = promote(new, database=database, region=new_region, min_epoch=epoch)
    with _admin(old) as c:
        # Everything `old` wrote is in `new`'s binary log (log_slave_updates): follow from there.
        c.execute("SET GLOBAL gtid_slave_pos = @@GLOBAL.gtid_binlog_pos")
    configure_replica(
        old,
        new,
        database=database,
        accounts=accounts,
        region=old_region,
        primary_region=new_region,
        epoch=promotion.epoch,
        via=old_reaches_new,
        timeout_s=timeout_s,
    )
    return promotion


# -- a former primary rejoins --------------------------------------------------------------------------------


def errant_transactions(old: MysqlServer, new: MysqlServer) -> list[ErrantRange]:
    """GTIDs in `old`'s binary log that `new` never had: per domain and server id, the sequence numbers
    past what `new` holds of that server (its writes after the fork)."""
    with _admin(old) as c:
        old_state = parse_gtids(_variable(c, "gtid_binlog_state"))
    with _admin(new) as c:
        new_state = parse_gtids(_variable(c, "gtid_binlog_state"))
    known = {(g.domain, g.server_id): g.seq for g in new_state}
    # Only the primary writes: `old`'s transactions after the fork are its server id's, with sequence
    # numbers past the last of them `new` received.
    return [
        ErrantRange(g.domain, g.server_id, known.get((g.domain, g.server_id), 0) + 1, g.seq)
        for g in old_state
        if g.seq > known.get((g.domain, g.server_id), 0)
    ]


def _rows(c: pymysql.cursors.Cursor, table: str, columns: Sequence[str]) -> list[tuple[Any, ...]]:
    c.execute(f"SELECT {', '.join(columns)} FROM {table}")
    return list(c.fetchall())


def rejoin(
    old: MysqlServer,
    new: MysqlServer,
    *,
    database: str,
    accounts: Accounts,
    region: str,
    old_reaches_new: tuple[str, int] | None = None,
    timeout_s: float = 60.0,
) -> Rejoin:
    """Re-syncs a former primary as a replica of `new`; its writes after the fork are kept and reported.

    1. `old` is fenced at once (read_only=1) and learns `new`'s epoch.
    2. Its errant transactions are found by GTID; the change records it has that `new` lacks (same lsn,
       epoch and region) are copied into its blog_diverged (outside the binary log).
    3. Its blog tables are replaced by a consistent snapshot of `new` (START TRANSACTION WITH CONSISTENT
       SNAPSHOT, the snapshot's GTID position from BINLOG_GTID_POS); its binary log is reset to that
       position (the errant transactions are gone from it, kept in blog_diverged), and it replicates.
    """
    db = _check_name(database, "database")
    new_meta = blog_meta(new, db)
    if new_meta.get("read_only") != "0":
        raise Conflict(f"{new} is not a writable primary (its blog_meta: {new_meta})")
    epoch, primary_region = int(new_meta["epoch"]), new_meta["primary_region"]
    fence(old, db, epoch=epoch, primary_region=primary_region)
    errant = errant_transactions(old, new)

    snapshot_conn = new.connect(db)
    try:
        with snapshot_conn.cursor() as s:
            s.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            s.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            s.execute("SHOW STATUS LIKE 'binlog_snapshot_%'")
            snap = {str(k): str(v) for k, v in s.fetchall()}
            pos = str(
                _one(
                    s,
                    "SELECT BINLOG_GTID_POS(%s, %s)",
                    (snap["Binlog_snapshot_file"], int(snap["Binlog_snapshot_position"])),
                )
                or ""
            )
            tables = {
                "blog_changelog": (_CHANGE_COLUMNS, _rows(s, "blog_changelog", _CHANGE_COLUMNS)),
                "blog_epochs": (_EPOCH_COLUMNS, _rows(s, "blog_epochs", _EPOCH_COLUMNS)),
            }
            for table in ("blog_posts", "blog_post_tags", "blog_comments"):
                tables[table] = (COLUMNS[table], _rows(s, table, COLUMNS[table]))
            s.execute("COMMIT")
    except pymysql.err.MySQLError as exc:
        raise StorageError(f"MariaDB {new}: snapshot failed: {exc}") from exc
    finally:
        snapshot_conn.close()

    in_lineage = {(int(r[0]), int(r[1]), str(r[2])) for r in tables["blog_changelog"][1]}
    now = int(time.time() * 1000)
    conn = old.connect(db)
    try:
        conn.autocommit(False)
        with conn.cursor() as c:
            c.execute("SET SESSION sql_log_bin = 0")
            _local_tables(c)
            conn.commit()
            mine = _rows(c, "blog_changelog", _CHANGE_COLUMNS)
            diverged = 0
            for r in mine:
                if (int(r[0]), int(r[1]), str(r[2])) in in_lineage:
                    continue
                c.execute(
                    "INSERT IGNORE INTO blog_diverged (lsn, epoch, region, tbl, pk, op, row_image, "
                    "written_ms, detected_ms, new_epoch, new_primary) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (*r, now, epoch, primary_region),
                )
                diverged += c.rowcount
            for table in ("blog_post_tags", "blog_comments", "blog_posts", "blog_changelog", "blog_epochs"):
                c.execute(f"DELETE FROM {table}")
            for table in ("blog_posts", "blog_post_tags", "blog_comments", "blog_changelog", "blog_epochs"):
                columns, rows = tables[table]
                if rows:
                    marks = ", ".join("%s" for _ in columns)
                    c.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
        conn.commit()
    except pymysql.err.MySQLError as exc:
        conn.rollback()
        raise StorageError(f"MariaDB {old}: re-sync failed: {exc}") from exc
    finally:
        conn.close()

    head = max((int(r[0]) for r in tables["blog_changelog"][1]), default=0)
    with _admin(old) as c:
        c.execute("STOP SLAVE")
        c.execute("RESET SLAVE ALL")
        # Its binary log held the errant transactions (kept in blog_diverged): it restarts at the
        # snapshot's position, so no replica of it can ever receive them.
        c.execute("RESET MASTER")
        c.execute("SET GLOBAL gtid_binlog_state = %s", (pos,))
        c.execute("SET GLOBAL gtid_slave_pos = %s", (pos,))
    configure_replica(
        old,
        new,
        database=db,
        accounts=accounts,
        region=region,
        primary_region=primary_region,
        epoch=epoch,
        via=old_reaches_new,
        timeout_s=timeout_s,
    )
    set_blog_meta(old, db, epoch=epoch, read_only=True, primary_region=primary_region, applied_lsn=head)
    log.warning(
        "event=mariadb_rejoined server=%s region=%s primary=%s errant=%s diverged=%d",
        old,
        region,
        primary_region,
        ",".join(str(e) for e in errant),
        diverged,
    )
    return Rejoin(errant=tuple(errant), diverged=diverged, gtid_pos=pos)


def diverged(server: MysqlServer, database: str) -> list[dict[str, Any]]:
    """The change records kept aside on a server (a former primary's writes after the fork)."""
    with _admin(server, _check_name(database, "database")) as c:
        c.execute(
            "SELECT lsn, epoch, region, tbl, pk, op, row_image, written_ms, detected_ms, new_epoch, "
            "new_primary FROM blog_diverged ORDER BY id"
        )
        return [
            {
                "lsn": int(lsn),
                "epoch": int(epoch),
                "region": str(region),
                "table": str(table),
                "pk": orjson.loads(pk),
                "op": str(op),
                "row": None if image is None else orjson.loads(image),
                "writtenMs": int(written),
                "detectedMs": int(detected),
                "newEpoch": int(new_epoch),
                "newPrimary": str(new_primary),
            }
            for (lsn, epoch, region, table, pk, op, image, written, detected, new_epoch, new_primary) in (
                c.fetchall()
            )
        ]
