"""The blog's SQL schema: versioned migrations per dialect, recorded in a schema_version table."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Final

from bookstore.blog.port import Dialect, SqlDatabase, SqlSession
from bookstore.domain.errors import StorageError

log = logging.getLogger("bookstore.blog.schema")

# MySQL: InnoDB, utf8mb4 compared by code point (as SQLite compares), so unique keys mean the same.
_MYSQL_TABLE: Final = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
_MYSQL_LOCK: Final = "bookstore_blog_schema"
LOCK_TIMEOUT_S: Final = 30


@dataclass(frozen=True)
class Migration:
    """One schema version: statements per dialect, each safe to run again (IF NOT EXISTS)."""

    version: int
    description: str
    statements: dict[Dialect, tuple[str, ...]]


MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        1,
        "posts, tags, comments, the row-change log and the region's replication state",
        {
            "sqlite": (
                "CREATE TABLE IF NOT EXISTS blog_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
                """CREATE TABLE IF NOT EXISTS blog_posts (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    slug TEXT NOT NULL UNIQUE,
                    title TEXT NOT NULL,
                    body TEXT NOT NULL,
                    body_html TEXT NOT NULL,
                    excerpt TEXT NOT NULL,
                    author_id TEXT NOT NULL,
                    author_name TEXT NOT NULL,
                    tags TEXT NOT NULL,
                    book_ids TEXT NOT NULL,
                    published_ms INTEGER NOT NULL,
                    modified_ms INTEGER NOT NULL)""",
                "CREATE INDEX IF NOT EXISTS blog_posts_by_time ON blog_posts (published_ms, id)",
                """CREATE TABLE IF NOT EXISTS blog_post_tags (
                    post_id INTEGER NOT NULL,
                    tag TEXT NOT NULL,
                    PRIMARY KEY (post_id, tag))""",
                "CREATE INDEX IF NOT EXISTS blog_post_tags_by_tag ON blog_post_tags (tag, post_id)",
                """CREATE TABLE IF NOT EXISTS blog_comments (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    post_id INTEGER NOT NULL,
                    author_id TEXT NOT NULL,
                    author_name TEXT NOT NULL,
                    body TEXT NOT NULL,
                    body_html TEXT NOT NULL,
                    created_ms INTEGER NOT NULL)""",
                "CREATE INDEX IF NOT EXISTS blog_comments_by_post ON blog_comments (post_id, id)",
                """CREATE TABLE IF NOT EXISTS blog_changelog (
                    lsn INTEGER PRIMARY KEY AUTOINCREMENT,
                    epoch INTEGER NOT NULL,
                    region TEXT NOT NULL,
                    tbl TEXT NOT NULL,
                    pk TEXT NOT NULL,
                    op TEXT NOT NULL,
                    row_image TEXT,
                    written_ms INTEGER NOT NULL)""",
            ),
            "mysql": (
                f"""CREATE TABLE IF NOT EXISTS blog_meta (
                    name VARCHAR(64) NOT NULL PRIMARY KEY,
                    value TEXT NOT NULL) {_MYSQL_TABLE}""",
                f"""CREATE TABLE IF NOT EXISTS blog_posts (
                    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
                    slug VARCHAR(128) NOT NULL,
                    title VARCHAR(255) NOT NULL,
                    body MEDIUMTEXT NOT NULL,
                    body_html MEDIUMTEXT NOT NULL,
                    excerpt TEXT NOT NULL,
                    author_id VARCHAR(128) NOT NULL,
                    author_name VARCHAR(255) NOT NULL,
                    tags TEXT NOT NULL,
                    book_ids TEXT NOT NULL,
                    published_ms BIGINT NOT NULL,
                    modified_ms BIGINT NOT NULL,
                    UNIQUE KEY blog_posts_slug (slug),
                    KEY blog_posts_by_time (published_ms, id)) {_MYSQL_TABLE}""",
                f"""CREATE TABLE IF NOT EXISTS blog_post_tags (
                    post_id BIGINT NOT NULL,
                    tag VARCHAR(64) NOT NULL,
                    PRIMARY KEY (post_id, tag),
                    KEY blog_post_tags_by_tag (tag, post_id)) {_MYSQL_TABLE}""",
                f"""CREATE TABLE IF NOT EXISTS blog_comments (
                    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
                    post_id BIGINT NOT NULL,
                    author_id VARCHAR(128) NOT NULL,
                    author_name VARCHAR(255) NOT NULL,
                    body TEXT NOT NULL,
                    body_html MEDIUMTEXT NOT NULL,
                    created_ms BIGINT NOT NULL,
                    KEY blog_comments_by_post (post_id, id)) {_MYSQL_TABLE}""",
                f"""CREATE TABLE IF NOT EXISTS blog_changelog (
                    lsn BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
                    epoch BIGINT NOT NULL,
                    region VARCHAR(64) NOT NULL,
                    tbl VARCHAR(64) NOT NULL,
                    pk TEXT NOT NULL,
                    op VARCHAR(8) NOT NULL,
                    row_image LONGTEXT,
                    written_ms BIGINT NOT NULL) {_MYSQL_TABLE}""",
            ),
        },
    ),
    Migration(
        2,
        "the epoch history (who was primary from which lsn) and the diverged-writes store",
        {
            "sqlite": (
                """CREATE TABLE IF NOT EXISTS blog_epochs (
                    epoch INTEGER PRIMARY KEY,
                    primary_region TEXT NOT NULL,
                    fork_lsn INTEGER NOT NULL,
                    started_ms INTEGER NOT NULL)""",
                """CREATE TABLE IF NOT EXISTS blog_diverged (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    lsn INTEGER NOT NULL,
                    epoch INTEGER NOT NULL,
                    region TEXT NOT NULL,
                    tbl TEXT NOT NULL,
                    pk TEXT NOT NULL,
                    op TEXT NOT NULL,
                    row_image TEXT,
                    written_ms INTEGER NOT NULL,
                    detected_ms INTEGER NOT NULL,
                    new_epoch INTEGER NOT NULL,
                    new_primary TEXT NOT NULL,
                    UNIQUE (lsn, epoch, region))""",
            ),
            "mysql": (
                f"""CREATE TABLE IF NOT EXISTS blog_epochs (
                    epoch BIGINT NOT NULL PRIMARY KEY,
                    primary_region VARCHAR(64) NOT NULL,
                    fork_lsn BIGINT NOT NULL,
                    started_ms BIGINT NOT NULL) {_MYSQL_TABLE}""",
                f"""CREATE TABLE IF NOT EXISTS blog_diverged (
                    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
                    lsn BIGINT NOT NULL,
                    epoch BIGINT NOT NULL,
                    region VARCHAR(64) NOT NULL,
                    tbl VARCHAR(64) NOT NULL,
                    pk TEXT NOT NULL,
                    op VARCHAR(8) NOT NULL,
                    row_image LONGTEXT,
                    written_ms BIGINT NOT NULL,
                    detected_ms BIGINT NOT NULL,
                    new_epoch BIGINT NOT NULL,
                    new_primary VARCHAR(64) NOT NULL,
                    UNIQUE KEY blog_diverged_record (lsn, epoch, region)) {_MYSQL_TABLE}""",
            ),
        },
    ),
)
LATEST: Final = MIGRATIONS[-1].version

# The tables each region (or MariaDB server) keeps for itself, never replicated: its replication state
# and the writes it kept aside as diverged.
LOCAL_TABLES: Final = ("blog_meta", "blog_diverged")


def local_table_statements(dialect: Dialect) -> list[str]:
    """Every migration's CREATE statements of LOCAL_TABLES in `dialect`, in order (each safe to run again).

    MariaDB replication ignores those tables, their DDL too, so each server creates its own with these.
    """
    return [
        statement
        for migration in MIGRATIONS
        for statement in migration.statements[dialect]
        if any(f"EXISTS {name} (" in statement for name in LOCAL_TABLES)
    ]


_VERSION_TABLE: Final[dict[Dialect, str]] = {
    "sqlite": "CREATE TABLE IF NOT EXISTS schema_version "
    "(version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_ms INTEGER NOT NULL)",
    "mysql": "CREATE TABLE IF NOT EXISTS schema_version (version INT NOT NULL PRIMARY KEY, "
    f"description VARCHAR(255) NOT NULL, applied_ms BIGINT NOT NULL) {_MYSQL_TABLE}",
}


def current_version(db: SqlDatabase | SqlSession) -> int:
    """The newest schema version applied (0 when none)."""
    rows = db.query("SELECT MAX(version) FROM schema_version")
    return int(rows[0][0] or 0) if rows else 0


def _record(tx: SqlSession, migration: Migration) -> None:
    tx.execute(
        "INSERT INTO schema_version (version, description, applied_ms) VALUES (?, ?, ?)",
        (migration.version, migration.description, int(time.time() * 1000)),
    )


def migrate(db: SqlDatabase, migrations: tuple[Migration, ...] = MIGRATIONS) -> int:
    """Brings the schema to the newest version and returns it; running it again changes nothing.

    SQLite applies each migration in one transaction (its DDL is transactional). MySQL commits each DDL
    statement on its own, so its statements are idempotent and the version is recorded last: a migration
    cut short by a crash runs again whole. Concurrent migrators (several processes) wait for each other.
    """
    db.execute(_VERSION_TABLE[db.dialect])
    if db.dialect == "sqlite":
        for migration in migrations:
            with db.transaction() as tx:
                # Inside the write lock, so another process cannot apply the same version meanwhile.
                if current_version(tx) >= migration.version:
                    continue
                for statement in migration.statements["sqlite"]:
                    tx.execute(statement)
                _record(tx, migration)
            log.info("event=blog_schema_migrated dialect=sqlite version=%d", migration.version)
        return current_version(db)
    return _migrate_mysql(db, migrations)


def _migrate_mysql(db: SqlDatabase, migrations: tuple[Migration, ...]) -> int:
    # A named lock belongs to the connection, which is this thread's for as long as these calls run.
    (got,) = db.query("SELECT GET_LOCK(?, ?)", (_MYSQL_LOCK, LOCK_TIMEOUT_S))[0]
    if got != 1:
        raise StorageError(f"another process holds the schema lock for over {LOCK_TIMEOUT_S}s; try again")
    try:
        for migration in migrations:
            if current_version(db) >= migration.version:
                continue
            for statement in migration.statements["mysql"]:
                db.execute(statement)
            with db.transaction() as tx:
                _record(tx, migration)
            log.info("event=blog_schema_migrated dialect=mysql version=%d", migration.version)
        return current_version(db)
    finally:
        db.query("SELECT RELEASE_LOCK(?)", (_MYSQL_LOCK,))
