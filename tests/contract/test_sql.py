"""The SqlDatabase contract, proven against every adapter: SQLite (embedded) and a real MariaDB server.

The second half runs the blog's schema migrations and its logged write path over both adapters.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pymysql
import pytest

from bookstore.blog.port import SqlDatabase
from bookstore.blog.posts import Comment, Post, slugify
from bookstore.blog.repository import BlogRepository, RowChange
from bookstore.blog.schema import LATEST, current_version, migrate
from bookstore.domain.errors import Conflict, NotFound, StorageError, Unavailable
from bookstore.storage.mysql.sql import MysqlSql, translate
from bookstore.storage.sqlite.sql import SqliteSql
from tests.support.mariadb_server import MariaDBServer, mariadb_server_fixture

mariadb = mariadb_server_fixture()
# Under pytest-xdist (--dist loadgroup) the MariaDB tests share one worker: one server starts, not two.
ON_MARIADB = pytest.mark.xdist_group("mariadb")

# A factory of handles on one fresh, empty database: calling it again opens another handle on the same one.
OpenDb = Callable[[], SqlDatabase]

DDL = {
    "sqlite": (
        "CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, "
        "n INTEGER, x REAL, data BLOB)"
    ),
    "mysql": (
        "CREATE TABLE items (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, name VARCHAR(200) NOT NULL, "
        "n BIGINT, x DOUBLE, data BLOB, UNIQUE KEY items_name (name)) "
        "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
    ),
}


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=ON_MARIADB)])
def open_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenDb]:
    handles: list[SqlDatabase] = []
    if request.param == "sqlite":

        def make() -> SqlDatabase:
            handles.append(SqliteSql(tmp_path / "test.db"))
            return handles[-1]

        yield make
    else:
        server: MariaDBServer = request.getfixturevalue("mariadb")
        name = f"t_{uuid.uuid4().hex[:16]}"

        def make() -> SqlDatabase:
            handles.append(
                MysqlSql(server.host, server.port, server.user, server.password, name, create_database=True)
            )
            return handles[-1]

        yield make
        admin = server.connect()
        try:
            with admin.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            admin.close()
    for handle in handles:
        handle.close()


@pytest.fixture
def db(open_db: OpenDb) -> SqlDatabase:
    handle = open_db()
    handle.execute(DDL[handle.dialect])
    return handle


def names(db: SqlDatabase) -> list[str]:
    return [r[0] for r in db.query("SELECT name FROM items ORDER BY name")]


# -- the port ---------------------------------------------------------------------------------------------


def test_dialect_names_the_engine(db: SqlDatabase) -> None:
    assert db.dialect in ("sqlite", "mysql")
    assert isinstance(db, SqliteSql if db.dialect == "sqlite" else MysqlSql)


def test_values_round_trip_with_their_types(db: SqlDatabase) -> None:
    text = "Grüße, 東京 and an emoji 📚 'quoted' \"double\" back\\slash"
    done = db.execute(
        "INSERT INTO items (name, n, x, data) VALUES (?, ?, ?, ?)", (text, 2**62 + 7, 1.5, b"\x00\xff")
    )
    assert done.rowcount == 1
    db.execute("INSERT INTO items (name, n, x, data) VALUES (?, ?, ?, ?)", ("nulls", None, None, None))
    rows = db.query("SELECT name, n, x, data FROM items ORDER BY id")
    assert rows == [(text, 2**62 + 7, 1.5, b"\x00\xff"), ("nulls", None, None, None)]
    assert db.query("SELECT name FROM items WHERE name = ?", (text,)) == [(text,)]


def test_question_marks_and_percent_signs_in_literals_are_text(db: SqlDatabase) -> None:
    db.execute("INSERT INTO items (name, n) VALUES ('why? 100%', ?)", (1,))
    db.execute("INSERT INTO items (name, n) VALUES (?, ?)", ("50% off?", 2))
    assert db.query("SELECT n FROM items WHERE name = 'why? 100%'") == [(1,)]
    assert db.query("SELECT n FROM items WHERE name LIKE '50%' AND n = ?", (2,)) == [(2,)]
    assert db.query("SELECT name FROM items WHERE name LIKE ? ORDER BY n", ("%?%",)) == [
        ("why? 100%",),
        ("50% off?",),
    ]


def test_the_mysql_translation_leaves_quoted_text_alone() -> None:
    assert translate("SELECT a FROM t WHERE b = ? AND c = '?%' AND `d?` = ?") == (
        "SELECT a FROM t WHERE b = %s AND c = '?%%' AND `d?` = %s"
    )
    assert translate("SELECT 'it''s ?', ?") == "SELECT 'it''s ?', %s"


def test_update_counts_matched_rows_even_when_nothing_changes(db: SqlDatabase) -> None:
    db.execute("INSERT INTO items (name, n) VALUES (?, ?)", ("a", 1))
    assert db.execute("UPDATE items SET n = ? WHERE name = ?", (1, "a")).rowcount == 1
    assert db.execute("UPDATE items SET n = ? WHERE name = ?", (2, "a")).rowcount == 1
    assert db.execute("UPDATE items SET n = ? WHERE name = ?", (2, "missing")).rowcount == 0
    assert db.execute("DELETE FROM items WHERE name = ?", ("missing",)).rowcount == 0


def test_insert_reports_the_generated_id_and_explicit_ids_move_the_counter(db: SqlDatabase) -> None:
    first = db.execute("INSERT INTO items (name) VALUES (?)", ("a",))
    second = db.execute("INSERT INTO items (name) VALUES (?)", ("b",))
    assert first.last_id is not None and second.last_id == first.last_id + 1
    # A replica stores rows with the primary's ids; ids it generates later must not collide with them.
    db.execute("INSERT INTO items (id, name) VALUES (?, ?)", (1000, "explicit"))
    after = db.execute("INSERT INTO items (name) VALUES (?)", ("c",))
    assert after.last_id is not None and after.last_id > 1000
    assert db.execute("UPDATE items SET n = 1 WHERE name = ?", ("a",)).last_id is None


def test_a_transaction_commits_when_its_block_ends(open_db: OpenDb, db: SqlDatabase) -> None:
    with db.transaction() as tx:
        tx.execute("INSERT INTO items (name) VALUES (?)", ("a",))
        tx.execute("INSERT INTO items (name) VALUES (?)", ("b",))
        assert tx.query("SELECT COUNT(*) FROM items") == [(2,)]
    assert names(db) == ["a", "b"]
    assert names(open_db()) == ["a", "b"]


def test_a_transaction_rolls_back_when_its_block_raises(db: SqlDatabase) -> None:
    class Boom(Exception):
        pass

    db.execute("INSERT INTO items (name) VALUES (?)", ("kept",))
    with pytest.raises(Boom), db.transaction() as tx:
        tx.execute("INSERT INTO items (name) VALUES (?)", ("lost",))
        tx.execute("UPDATE items SET n = 5 WHERE name = ?", ("kept",))
        raise Boom
    assert db.query("SELECT name, n FROM items") == [("kept", None)]
    # The handle is still usable after a rollback.
    db.execute("INSERT INTO items (name) VALUES (?)", ("next",))
    assert names(db) == ["kept", "next"]


def test_other_connections_do_not_see_a_transaction_before_it_commits(
    open_db: OpenDb, db: SqlDatabase
) -> None:
    other = open_db()
    seen: list[list[str]] = []
    inside = threading.Event()
    release = threading.Event()

    def write() -> None:
        with db.transaction() as tx:
            tx.execute("INSERT INTO items (name) VALUES (?)", ("pending",))
            inside.set()
            release.wait(10)

    writer = threading.Thread(target=write)
    writer.start()
    assert inside.wait(10)
    seen.append(names(other))
    seen.append([r[0] for r in db.query("SELECT name FROM items")])
    release.set()
    writer.join(10)
    seen.append(names(other))
    assert seen == [[], [], ["pending"]]


def test_a_unique_violation_is_a_conflict_and_the_transaction_goes_on(db: SqlDatabase) -> None:
    db.execute("INSERT INTO items (name, n) VALUES (?, ?)", ("a", 1))
    with pytest.raises(Conflict):
        db.execute("INSERT INTO items (name, n) VALUES (?, ?)", ("a", 2))
    with db.transaction() as tx:
        tx.execute("INSERT INTO items (name) VALUES (?)", ("b",))
        with pytest.raises(Conflict):
            tx.execute("INSERT INTO items (name) VALUES (?)", ("a",))
        first = tx.query("SELECT id FROM items WHERE name = 'a'")[0][0]
        with pytest.raises(Conflict):
            tx.execute("INSERT INTO items (id, name) VALUES (?, ?)", (first, "other"))
        tx.execute("INSERT INTO items (name) VALUES (?)", ("c",))
    assert names(db) == ["a", "b", "c"]
    assert db.query("SELECT n FROM items WHERE name = 'a'") == [(1,)]


def test_engine_errors_are_storage_errors_chained_to_the_driver(db: SqlDatabase) -> None:
    driver_errors = (pymysql.err.MySQLError, TypeError, ValueError) if db.dialect == "mysql" else (Exception,)
    for call in (
        lambda: db.query("SELECT nope FROM items"),
        lambda: db.execute("INSERT INTO no_such_table (a) VALUES (?)", (1,)),
        lambda: db.query("SELEKT 1"),
        lambda: db.query("SELECT name FROM items WHERE n = ? AND name = ?", (1,)),
    ):
        with pytest.raises(StorageError) as caught:
            call()
        assert caught.value.__cause__ is not None
        assert isinstance(caught.value.__cause__, driver_errors)
        assert not isinstance(caught.value, Conflict)
    with pytest.raises(StorageError):
        db.execute("INSERT INTO items (name) VALUES (?)", (None,))
    assert names(db) == []


def test_executemany_runs_once_per_row_and_is_atomic_in_a_transaction(db: SqlDatabase) -> None:
    rows = [(f"n{i:03d}", i) for i in range(50)]
    assert db.executemany("INSERT INTO items (name, n) VALUES (?, ?)", rows) == 50
    assert db.query("SELECT COUNT(*), SUM(n) FROM items")[0][:2] == (50, sum(range(50)))
    assert db.executemany("INSERT INTO items (name, n) VALUES (?, ?)", []) == 0
    with pytest.raises(Conflict):
        db.executemany("INSERT INTO items (name, n) VALUES (?, ?)", [("new1", 1), ("n000", 0)])
    with pytest.raises(Conflict), db.transaction() as tx:
        tx.executemany("INSERT INTO items (name, n) VALUES (?, ?)", [("new2", 1), ("n001", 0)])
    assert db.query("SELECT COUNT(*) FROM items WHERE name LIKE 'new%'")[0][0] in (0, 1)
    assert db.query("SELECT COUNT(*) FROM items WHERE name = 'new2'") == [(0,)]


def test_no_nested_transactions_and_no_database_calls_inside_one(db: SqlDatabase) -> None:
    with db.transaction() as tx:
        tx.execute("INSERT INTO items (name) VALUES (?)", ("outer",))
        with pytest.raises(StorageError), db.transaction():
            pass
        with pytest.raises(StorageError):
            db.execute("INSERT INTO items (name) VALUES (?)", ("inner",))
    assert names(db) == ["outer"]


def test_writers_on_many_threads_lose_nothing(db: SqlDatabase) -> None:
    db.execute("INSERT INTO items (name, n) VALUES (?, ?)", ("counter", 0))
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(15):
                with db.transaction() as tx:
                    tx.execute("UPDATE items SET n = n + 1 WHERE name = ?", ("counter",))
                    tx.execute("INSERT INTO items (name, n) VALUES (?, ?)", (f"w{worker}-{i}", i))
                db.query("SELECT n FROM items WHERE name = ?", ("counter",))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert db.query("SELECT n FROM items WHERE name = 'counter'") == [(60,)]
    assert db.query("SELECT COUNT(*) FROM items") == [(61,)]


def test_closing_ends_the_handle(db: SqlDatabase) -> None:
    db.execute("INSERT INTO items (name) VALUES (?)", ("a",))
    db.close()
    db.close()
    with pytest.raises(StorageError):
        db.query("SELECT name FROM items")
    with pytest.raises(StorageError):
        db.execute("INSERT INTO items (name) VALUES (?)", ("b",))
    with pytest.raises(StorageError), db.transaction():
        pass


def test_committed_rows_outlive_the_handle(open_db: OpenDb, db: SqlDatabase) -> None:
    with db.transaction() as tx:
        tx.execute("INSERT INTO items (name, n) VALUES (?, ?)", ("durable", 7))
    db.close()
    assert open_db().query("SELECT name, n FROM items") == [("durable", 7)]


@ON_MARIADB
def test_a_lost_mysql_connection_is_a_storage_error_and_then_replaced(mariadb: MariaDBServer) -> None:
    db = MysqlSql(mariadb.host, mariadb.port, database=f"t_{uuid.uuid4().hex[:16]}", create_database=True)
    try:
        (conn_id,) = db.query("SELECT CONNECTION_ID()")[0]
        admin = mariadb.connect()
        with admin.cursor() as cursor:
            cursor.execute(f"KILL {int(conn_id)}")
        admin.close()
        with pytest.raises(StorageError):
            db.query("SELECT 1")
        assert db.query("SELECT 1") == [(1,)]
    finally:
        db.execute(f"DROP DATABASE `{db.database}`")
        db.close()


# -- the blog's schema and write path over both adapters -------------------------------------------------


def test_the_schema_migrates_once_and_records_its_version(db: SqlDatabase) -> None:
    assert migrate(db) == LATEST
    assert migrate(db) == LATEST
    assert current_version(db) == LATEST
    assert db.query("SELECT COUNT(*) FROM schema_version") == [(LATEST,)]
    for table in ("blog_meta", "blog_posts", "blog_post_tags", "blog_comments", "blog_changelog"):
        assert db.query(f"SELECT COUNT(*) FROM {table}") == [(0,)]


def new_post(title: str, tags: tuple[str, ...] = ("a", "b")) -> Post:
    return Post(
        id=0,
        slug=slugify(title),
        title=title,
        body="Body of " + title,
        body_html=f"<p>Body of {title}</p>",
        excerpt="Body of " + title,
        author_id="u1",
        author_name="one",
        tags=tags,
        book_ids=("bk-db-001",),
        published_ms=1_700_000_000_000,
        modified_ms=1_700_000_000_000,
    )


def test_every_blog_write_logs_its_row_changes_in_order(db: SqlDatabase) -> None:
    repo = BlogRepository.open(db, region="eu-west-1", primary_region="eu-west-1")
    post = repo.insert_post(new_post("Hello, World"), explicit_slug=False)
    again = repo.insert_post(new_post("Hello, world!"), explicit_slug=False)
    assert (post.slug, again.slug) == ("hello-world", "hello-world-2")
    comment = repo.insert_comment(Comment(0, post.id, "u2", "two", "hi", "<p>hi</p>", 1_700_000_000_001))
    repo.update_post(Post(**{**post.__dict__, "tags": ("b", "c"), "title": "Changed"}), explicit_slug=False)
    repo.delete_post(post.id)

    log = repo.changes()
    assert [c.lsn for c in log] == sorted(c.lsn for c in log)
    assert {c.epoch for c in log} == {1} and {c.region for c in log} == {"eu-west-1"}
    summary = [(c.table, c.op, c.pk) for c in log]
    assert summary == [
        ("blog_posts", "INSERT", {"id": post.id}),
        ("blog_post_tags", "INSERT", {"post_id": post.id, "tag": "a"}),
        ("blog_post_tags", "INSERT", {"post_id": post.id, "tag": "b"}),
        ("blog_posts", "INSERT", {"id": again.id}),
        ("blog_post_tags", "INSERT", {"post_id": again.id, "tag": "a"}),
        ("blog_post_tags", "INSERT", {"post_id": again.id, "tag": "b"}),
        ("blog_comments", "INSERT", {"id": comment.id}),
        ("blog_posts", "UPDATE", {"id": post.id}),
        ("blog_post_tags", "DELETE", {"post_id": post.id, "tag": "a"}),
        ("blog_post_tags", "INSERT", {"post_id": post.id, "tag": "c"}),
        ("blog_comments", "DELETE", {"id": comment.id}),
        ("blog_post_tags", "DELETE", {"post_id": post.id, "tag": "b"}),
        ("blog_post_tags", "DELETE", {"post_id": post.id, "tag": "c"}),
        ("blog_posts", "DELETE", {"id": post.id}),
    ]
    assert log[7].row is not None and log[7].row["title"] == "Changed"
    assert log[-1].row is None
    assert repo.head_lsn() == log[-1].lsn
    assert repo.changes(log[5].lsn, limit=2) == log[6:8]


def test_concurrent_blog_writes_log_each_write_as_one_unbroken_run(open_db: OpenDb) -> None:
    # lsn order must be commit order: a replica applying in lsn order must never see half of a write
    # before another write that committed later. So the records of one write are never interleaved.
    repo = BlogRepository.open(open_db(), region="eu-west-1", primary_region="eu-west-1")
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        # Each thread its own handle (connection), as separate request threads or processes would.
        mine = BlogRepository(open_db(), region="eu-west-1")
        try:
            for i in range(6):
                mine.insert_post(
                    new_post(f"Worker {worker} post {i}", ("t1", "t2", "t3")), explicit_slug=False
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    log = repo.changes(limit=1000)
    assert len(log) == 4 * 6 * 4
    for start in range(0, len(log), 4):
        run = log[start : start + 4]
        assert run[0].table == "blog_posts" and run[0].op == "INSERT"
        assert [c.pk.get("post_id") for c in run[1:]] == [run[0].pk["id"]] * 3


def test_a_read_only_region_refuses_every_write_and_logs_nothing(db: SqlDatabase) -> None:
    repo = BlogRepository.open(db, region="ap-southeast-1", primary_region="eu-west-1")
    assert repo.meta().read_only
    with pytest.raises(Unavailable, match="eu-west-1"):
        repo.insert_post(new_post("Refused"), explicit_slug=False)
    with pytest.raises(Unavailable, match="primary region eu-west-1"):
        repo.insert_comment(Comment(0, 1, "u", "u", "x", "<p>x</p>", 1))
    assert repo.changes() == [] and repo.count_posts() == 0

    # Reopening keeps the stored state; a promotion (new epoch) makes it writable.
    repo = BlogRepository.open(db, region="ap-southeast-1", primary_region="ap-southeast-1")
    assert repo.meta().read_only and repo.meta().primary_region == "eu-west-1"
    repo.set_meta(epoch=2, read_only=False, primary_region="ap-southeast-1")
    repo.insert_post(new_post("Accepted"), explicit_slug=False)
    assert repo.changes()[0].epoch == 2
    with pytest.raises(Conflict):
        repo.set_meta(epoch=1, read_only=False, primary_region="eu-west-1")


def test_a_failed_write_leaves_neither_rows_nor_log(db: SqlDatabase) -> None:
    repo = BlogRepository.open(db, region="eu-west-1", primary_region="eu-west-1")
    first = repo.insert_post(new_post("Same"), explicit_slug=False)
    with pytest.raises(Conflict, match="belongs to another post"):
        repo.insert_post(Post(**{**new_post("Other").__dict__, "slug": first.slug}), explicit_slug=True)
    with pytest.raises(NotFound):
        repo.insert_comment(Comment(0, first.id + 100, "u", "u", "x", "<p>x</p>", 1))
    assert repo.count_posts() == 1
    assert len(repo.changes()) == 3


def test_a_replica_applying_the_log_ends_with_the_same_rows(open_db: OpenDb, tmp_path: Path) -> None:
    primary_db = open_db()
    primary = BlogRepository.open(primary_db, region="eu-west-1", primary_region="eu-west-1")
    replica_db = SqliteSql(tmp_path / "replica.db")
    replica = BlogRepository.open(replica_db, region="ap-southeast-1", primary_region="eu-west-1")
    try:
        kept = primary.insert_post(new_post("Kept", ("x",)), explicit_slug=False)
        gone = primary.insert_post(new_post("Gone"), explicit_slug=False)
        primary.insert_comment(Comment(0, kept.id, "u2", "two", "c", "<p>c</p>", 5))
        primary.update_post(Post(**{**kept.__dict__, "tags": ("y",)}), explicit_slug=False)
        primary.delete_post(gone.id)

        log: list[RowChange] = primary.changes(limit=1000)
        assert replica.apply(log[:4]) == 4
        assert replica.apply(log) == len(log) - 4
        assert replica.apply(log) == 0
        assert replica.meta().applied_lsn == primary.head_lsn()
        assert replica.changes(limit=1000) == log
        assert replica.posts(limit=10) == primary.posts(limit=10)
        assert replica.posts(limit=10, tags=["y"]) == [primary.post(kept.id)]
        assert replica.comments(None, limit=10) == primary.comments(None, limit=10)
        with pytest.raises(Conflict):
            primary.apply(log)

        # Promoted, the replica goes on from the primary's ids and lsns.
        replica.set_meta(epoch=2, read_only=False, primary_region="ap-southeast-1")
        newer = replica.insert_post(new_post("After promotion"), explicit_slug=False)
        assert newer.id > gone.id
        assert replica.changes(primary.head_lsn())[0].lsn > primary.head_lsn()
    finally:
        replica_db.close()
