"""The bucket directory's cache: a change made here, or one arriving by replication, is seen at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bookstore import tables
from bookstore.objectstore.namespace import BucketDirectory
from bookstore.storage.sqlite.replica import SqliteReplica
from bookstore.storage.sqlite.tables import SqliteDatabase

HERE, THERE = "eu-west-1", "ap-southeast-1"


class Counting:
    """A table that counts its reads, around the real one."""

    def __init__(self, table: object) -> None:
        self.table = table
        self.gets = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.table, name)

    def get(self, key: dict[str, str]) -> object:
        self.gets += 1
        return self.table.get(key)  # type: ignore[attr-defined]


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[SqliteDatabase, SqliteDatabase]]:
    here = SqliteDatabase(tmp_path / "here.db", HERE)
    there = SqliteDatabase(tmp_path / "there.db", THERE)
    yield here, there
    here.close()
    there.close()


def _pull(dst: SqliteDatabase, src: SqliteDatabase) -> None:
    """`src`'s log applied at `dst`, as the table replicator does."""
    replica = SqliteReplica(dst)
    after = replica.checkpoint(src.region) or 0
    read = SqliteReplica(src).read_log(after, limit=100, exclude_origin=dst.region)
    assert read.entries
    replica.apply(src.region, read.entries, read.last_seq)


def _directory(db: SqliteDatabase, region: str) -> tuple[BucketDirectory, Counting]:
    table = Counting(db.table(tables.BUCKETS))
    return BucketDirectory(table, region, SqliteReplica(db).add_listener), table  # type: ignore[arg-type]


def test_the_directory_reads_the_table_once_until_it_changes(
    two: tuple[SqliteDatabase, SqliteDatabase],
) -> None:
    here, _ = two
    directory, table = _directory(here, HERE)
    assert directory.get("books") is None
    directory.claim("books", 1)
    reads = table.gets
    for _ in range(3):
        found = directory.get("books")
        assert found is not None and found.region == HERE
    assert table.gets == reads + 1


def test_a_bucket_released_here_is_gone_at_the_next_lookup(
    two: tuple[SqliteDatabase, SqliteDatabase],
) -> None:
    here, _ = two
    directory, _ = _directory(here, HERE)
    directory.claim("books", 1)
    assert directory.get("books") is not None
    directory.release("books")
    assert directory.get("books") is None


def test_an_entry_arriving_by_replication_is_seen_at_the_next_lookup(
    two: tuple[SqliteDatabase, SqliteDatabase],
) -> None:
    here, there = two
    directory, _ = _directory(here, HERE)
    remote, _ = _directory(there, THERE)
    assert directory.get("photos") is None  # the answer "not listed" is cached too
    remote.claim("photos", 2)
    _pull(here, there)
    found = directory.get("photos")
    assert found is not None and found.region == THERE
    remote.release("photos")
    _pull(here, there)
    assert directory.get("photos") is None


def test_without_a_watch_every_lookup_reads_the_table(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "t.db", HERE)
    try:
        table = Counting(db.table(tables.BUCKETS))
        directory = BucketDirectory(table, HERE)  # type: ignore[arg-type]
        directory.claim("books", 1)
        db.table(tables.BUCKETS).delete({"name": "books"})
        assert directory.get("books") is None
        assert directory.get("books") is None
        assert table.gets == 2
    finally:
        db.close()
