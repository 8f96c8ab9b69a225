"""The SQLite metadata of the local object store: its schema, rows as ObjectVersion, buckets' state.

objects.sqlite3 (WAL) holds buckets (with their versioning, replication and website configurations),
versions (a delete marker is a version; a body up to blobs.INLINE_MAX lives in the row, a larger one is
a list of blob segments), multipart uploads and their parts. Its engine is storage.sqlite.engine.
A version's `meta` holds, beside metadata, headers and tags, its checksum ("c"), how it is encrypted
("e") and the proof of its SSE-C key ("k"); an upload's also the checksum its parts carry ("u").

Which SSE-S3 key encrypts a body (storage.local.keyring): a version's `sse_key` is the key of its inline
body, or the oldest key among its segments, each of which is [blob id, size, key id] (a segment of two
members is under the row's `sse_key`); a part's `key_id` is its key. Key 0 is a body stored in clear
(written before encryption at rest); NULL is a body under a customer's key (SSE-C), or no body.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from bookstore.objectstore.checksums import Checksum
from bookstore.objectstore.configs import ReplicationConfiguration, WebsiteConfiguration
from bookstore.objectstore.port import Bucket, ObjectVersion

SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (
    name TEXT PRIMARY KEY,
    region TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    versioning TEXT NOT NULL DEFAULT '',
    replication BLOB,
    website BLOB
);
CREATE TABLE IF NOT EXISTS versions (
    id INTEGER PRIMARY KEY,
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    sort_id TEXT NOT NULL,
    version_id TEXT NOT NULL,
    latest INTEGER NOT NULL,
    marker INTEGER NOT NULL,
    last_modified_ms INTEGER NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    content_type TEXT NOT NULL,
    meta BLOB NOT NULL,
    replication_status TEXT,
    replication_reason TEXT NOT NULL DEFAULT '',
    parts_count INTEGER,
    blobs BLOB,
    inline BLOB,
    sse_key INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS versions_order ON versions (bucket, key, sort_id);
CREATE UNIQUE INDEX IF NOT EXISTS versions_id ON versions (bucket, key, version_id);
CREATE INDEX IF NOT EXISTS versions_latest ON versions (bucket, key) WHERE latest = 1;
CREATE INDEX IF NOT EXISTS versions_pending ON versions (replication_status)
    WHERE replication_status = 'PENDING';
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY,
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    meta BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS parts (
    upload_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    etag TEXT NOT NULL,
    size INTEGER NOT NULL,
    blob_id TEXT NOT NULL,
    last_modified_ms INTEGER NOT NULL,
    checksum TEXT NOT NULL DEFAULT '',
    key_id INTEGER,
    PRIMARY KEY (upload_id, number)
) WITHOUT ROWID;
"""


# The key id a body from before the keyring has, from how its version or upload's `meta` says it is
# encrypted: the single key of those days (1, the old key.sse), none (0, in clear), or a customer's.
_KEY_OF_META = (
    "CASE json_extract(CAST({meta} AS TEXT), '$.e') WHEN 'AES256' THEN 1 WHEN 'SSE-C' THEN NULL ELSE 0 END"
)


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a store written by an older version up to SCHEMA (columns added since), in one transaction."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(parts)")}
    if "checksum" not in columns:
        conn.execute("ALTER TABLE parts ADD COLUMN checksum TEXT NOT NULL DEFAULT ''")
    if "key_id" not in columns:
        conn.execute("ALTER TABLE parts ADD COLUMN key_id INTEGER")
        key = _KEY_OF_META.format(meta="u.meta")
        conn.execute(
            f"UPDATE parts SET key_id = (SELECT {key} FROM uploads u WHERE u.upload_id = parts.upload_id)"
        )
    if "sse_key" not in {row[1] for row in conn.execute("PRAGMA table_info(versions)")}:
        conn.execute("ALTER TABLE versions ADD COLUMN sse_key INTEGER")
        conn.execute(f"UPDATE versions SET sse_key = {_KEY_OF_META.format(meta='meta')} WHERE marker = 0")


BY_VERSION_ID = (
    "SELECT id, latest, marker, blobs FROM versions WHERE bucket = ? AND key = ? AND version_id = ?"
)
VERSION_COLUMNS = (
    "id, bucket, key, sort_id, version_id, latest, marker, last_modified_ms, size, etag, content_type, meta, "
    "replication_status, replication_reason, parts_count, sse_key"
)


@dataclass
class BucketState:
    """A bucket and its configurations, as kept in memory (every request reads them)."""

    bucket: Bucket
    replication: ReplicationConfiguration | None
    website: WebsiteConfiguration | None


def meta_of(
    metadata: Mapping[str, str] | None,
    headers: Mapping[str, str] | None,
    tags: Mapping[str, str] | None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The `meta` of a version or upload, before encode: user metadata, stored headers, tags (and `extra`)."""
    return {"m": dict(metadata or {}), "h": dict(headers or {}), "t": dict(tags or {}), **(extra or {})}


def encode_meta(
    metadata: Mapping[str, str] | None,
    headers: Mapping[str, str] | None,
    tags: Mapping[str, str] | None,
    extra: Mapping[str, Any] | None = None,
) -> bytes:
    """The `meta` column of a version or upload (see meta_of)."""
    return orjson.dumps(meta_of(metadata, headers, tags, extra))


def extras(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The ObjectVersion fields of a parsed `meta` beyond metadata, headers and tags."""
    proof = meta.get("k") or {}
    return {
        "checksum": Checksum.from_json(meta.get("c")),
        "encryption": meta.get("e", ""),
        "sse_key_md5": proof.get("m", ""),
    }


def version_of(row: tuple[Any, ...], meta: Mapping[str, Any] | None = None) -> ObjectVersion:
    """The ObjectVersion of a `versions` row selected as VERSION_COLUMNS; `meta` is its `meta` column
    parsed, when the caller has parsed it already."""
    if meta is None:
        meta = orjson.loads(row[11])
    return ObjectVersion(
        bucket=row[1],
        key=row[2],
        version_id=row[4],
        last_modified_ms=row[7],
        etag=row[9],
        size=row[8],
        is_delete_marker=bool(row[6]),
        is_latest=bool(row[5]),
        content_type=row[10],
        metadata=meta["m"],
        headers=meta["h"],
        tags=meta["t"],
        replication_status=row[12],
        replication_reason=row[13],
        parts_count=row[14],
        **extras(meta),
    )


def blob_ids(blobs: bytes | None) -> list[str]:
    """The blob files of a version's `blobs` column (its segments)."""
    return [] if blobs is None else [str(segment[0]) for segment in orjson.loads(blobs)]


def load_buckets(conn: sqlite3.Connection) -> dict[str, BucketState]:
    states = {}
    for name, region, created_ms, versioning, replication, website in conn.execute(
        "SELECT name, region, created_ms, versioning, replication, website FROM buckets"
    ):
        states[name] = BucketState(
            Bucket(name, region, created_ms, versioning),
            None if replication is None else ReplicationConfiguration.from_json(orjson.loads(replication)),
            None if website is None else WebsiteConfiguration.from_json(orjson.loads(website)),
        )
    return states


def referenced_blobs(conn: sqlite3.Connection) -> set[str]:
    """Every blob file a committed row refers to (a part, or a segment of a version)."""
    referenced = {str(row[0]) for row in conn.execute("SELECT blob_id FROM parts")}
    for (blobs,) in conn.execute("SELECT blobs FROM versions WHERE blobs IS NOT NULL"):
        referenced.update(blob_ids(blobs))
    return referenced
