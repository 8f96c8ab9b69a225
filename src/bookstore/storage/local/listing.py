"""Listing the local object store: pages of keys and of versions, rolled up into common prefixes.

Rows are read lazily in key order and a listing stops where its page ends; a run of keys under one
common prefix is skipped with a new seek past the prefix, not by reading every key in it.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bookstore.domain.errors import StorageError
from bookstore.objectstore.errors import InvalidArgument
from bookstore.objectstore.listing import common_prefix, page_token
from bookstore.objectstore.port import NULL_VERSION, ObjectPage, ObjectVersion, VersionPage
from bookstore.storage.local.metadata import VERSION_COLUMNS, version_of
from bookstore.storage.local.version_ids import VersionIds

# Above every character of a key: prefix + _HIGHEST sorts after every key under the prefix.
_HIGHEST = "\U0010ffff"


def list_objects(
    db: sqlite3.Connection, bucket: str, *, prefix: str, delimiter: str, floor: str, max_keys: int
) -> ObjectPage:
    """A page of the latest versions (delete markers left out) after `floor`, keys rolled into prefixes.

    Nothing at or before `floor` is listed: no key, and no common prefix (S3's marker rule).
    """
    after = floor
    objects: list[ObjectVersion] = []
    prefixes: list[str] = []
    last_entry: str | None = None
    while True:
        if after < prefix:
            condition, bound = "key >= ?", prefix
        else:
            condition, bound = "key > ?", after
        with _cursor(
            db,
            f"SELECT {VERSION_COLUMNS} FROM versions WHERE bucket = ? AND latest = 1 AND marker = 0 "
            f"AND {condition} ORDER BY key",
            (bucket, bound),
        ) as rows:
            for row in rows:
                key = row[2]
                if not key.startswith(prefix):
                    return ObjectPage(objects, prefixes)
                common = common_prefix(key, prefix, delimiter)
                if common is not None and (common <= floor or (prefixes and prefixes[-1] == common)):
                    # Skip the rest of this prefix with a new seek, not by reading every key in it.
                    if common + _HIGHEST > key:
                        after = common + _HIGHEST
                        break
                    after = key
                    continue
                if len(objects) + len(prefixes) >= max_keys:
                    return ObjectPage(
                        objects, prefixes, None if last_entry is None else page_token(last_entry)
                    )
                if common is not None:
                    prefixes.append(common)
                    last_entry = common
                    continue
                objects.append(version_of(row))
                last_entry, after = key, key
            else:
                return ObjectPage(objects, prefixes)


def list_versions(
    db: sqlite3.Connection,
    bucket: str,
    *,
    prefix: str,
    delimiter: str,
    key_marker: str,
    version_id_marker: str,
    max_keys: int,
) -> VersionPage:
    """A page of every version and delete marker after the markers: key ascending, newest first."""
    versions: list[ObjectVersion] = []
    prefixes: list[str] = []
    floor, after_key, older_than = key_marker, key_marker, ""
    if key_marker and version_id_marker and common_prefix(key_marker, prefix, delimiter) is None:
        older_than = _marker_position(db, bucket, key_marker, version_id_marker)
    while True:
        with _version_rows(db, bucket, prefix, after_key, older_than) as rows:
            for row in rows:
                key = row[2]
                if not key.startswith(prefix):
                    return VersionPage(versions, prefixes)
                common = common_prefix(key, prefix, delimiter)
                if common is not None and (common <= floor or (prefixes and prefixes[-1] == common)):
                    if common + _HIGHEST > key:
                        after_key, older_than = common + _HIGHEST, ""
                        break
                    continue
                if len(versions) + len(prefixes) >= max_keys:
                    if prefixes and (not versions or prefixes[-1] > versions[-1].key):
                        return VersionPage(versions, prefixes, prefixes[-1], None)
                    return VersionPage(versions, prefixes, versions[-1].key, versions[-1].version_id)
                if common is not None:
                    prefixes.append(common)
                    continue
                versions.append(version_of(row))
            else:
                return VersionPage(versions, prefixes)


def _marker_position(db: sqlite3.Connection, bucket: str, key: str, version_id: str) -> str:
    """Where a version id marker resumes within `key`: after its sort id ("" = from the key's newest).

    A marker is a position, not a row: the version it names may have been deleted since the previous
    page (emptying a bucket page by page does that), and the listing still goes on after it.
    """
    row = db.execute(
        "SELECT sort_id FROM versions WHERE bucket = ? AND key = ? AND version_id = ?",
        (bucket, key, version_id),
    ).fetchone()
    if row is not None:
        return str(row[0])
    if version_id == NULL_VERSION:
        return _HIGHEST  # a gone null version's place is unknown: the key's remaining versions, all
    sort_id = VersionIds.parse(version_id)
    if sort_id is None:
        # A version id from elsewhere (a replica's) sorts where it was written: unknown once gone.
        if len(version_id) > 1024 or not version_id.isprintable():
            raise InvalidArgument("Invalid version id specified")
        return _HIGHEST
    return sort_id


@contextmanager
def _version_rows(
    db: sqlite3.Connection, bucket: str, prefix: str, after_key: str, older_than: str
) -> Iterator[Iterator[tuple[Any, ...]]]:
    """Versions after (after_key, older_than) in listing order: key ascending, newest first."""
    older: list[tuple[Any, ...]] = []
    if older_than:
        older = db.execute(
            f"SELECT {VERSION_COLUMNS} FROM versions WHERE bucket = ? AND key = ? AND sort_id < ? "
            "ORDER BY sort_id DESC",
            (bucket, after_key, older_than),
        ).fetchall()
    condition, bound = ("key >= ?", prefix) if after_key < prefix else ("key > ?", after_key)
    with _cursor(
        db,
        f"SELECT {VERSION_COLUMNS} FROM versions WHERE bucket = ? AND {condition} ORDER BY key, sort_id DESC",
        (bucket, bound),
    ) as rows:
        yield itertools.chain(older, rows)


@contextmanager
def _cursor(db: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> Iterator[sqlite3.Cursor]:
    """Rows read lazily, so a listing stops reading where its page ends; the statement is reset after."""
    try:
        cursor = db.execute(sql, args)
    except sqlite3.Error as exc:
        raise StorageError(f"object store: {exc}") from exc
    try:
        yield cursor
    finally:
        cursor.close()
