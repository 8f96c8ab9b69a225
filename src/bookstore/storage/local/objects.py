"""LocalObjectStore: the ObjectStore port on local disk, content in files or SQLite, metadata in SQLite.

Layout under `root` (nothing below it is named after a bucket or key, so no key can reach outside it):
- objects.sqlite3 (WAL): buckets, versions, multipart uploads and parts. Bodies up to INLINE_MAX bytes
  live in the version's row, so a small PUT is one SQLite transaction.
- blobs/xx/<random id>: larger bodies and every multipart part, one file each, never shared. A write goes
  to tmp/, is fsynced and renamed into blobs/ before the transaction that refers to it commits; a crash
  in between leaves an unreferenced file that the next start removes, never a visible half-written
  object. A completed multipart upload keeps its part files as the object's segments (no copy).
- Committed transactions survive kill -9 (WAL, synchronous=NORMAL); the last ones may be lost on power
  failure, unless durability is "power" (synchronous=FULL, and the blob directory fsynced after each
  rename). One process opens a root at a time (storage.local.ownership).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import secrets
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from bookstore.domain.errors import StorageError
from bookstore.objectstore.configs import ReplicationConfiguration, WebsiteConfiguration
from bookstore.objectstore.errors import (
    BadDigest,
    BucketAlreadyOwnedByYou,
    BucketNotEmpty,
    EntityTooSmall,
    InvalidArgument,
    InvalidBucketState,
    InvalidPart,
    InvalidPartOrder,
    InvalidRange,
    InvalidRequest,
    MalformedXML,
    MethodNotAllowed,
    NoSuchBucket,
    NoSuchKey,
    NoSuchUpload,
    NoSuchVersion,
    NoSuchWebsiteConfiguration,
    ReplicationConfigurationNotFoundError,
)
from bookstore.objectstore.port import (
    DEFAULT_CONTENT_TYPE,
    NULL_VERSION,
    Body,
    Bucket,
    ByteRange,
    Deleted,
    ObjectContent,
    ObjectPage,
    ObjectVersion,
    Part,
    ReplicationStatus,
    VersionPage,
    check_bucket_name,
    check_key,
)
from bookstore.ports import Clock
from bookstore.storage.durability import DEFAULT as DEFAULT_DURABILITY
from bookstore.storage.durability import Durability, fsync_directory, synchronous

INLINE_MAX = 64 * 1024
MIN_PART_SIZE = 5 * 1024 * 1024
# GET reads ranges up to this size into memory at once; larger ones stream.
_EAGER_READ = 1024 * 1024
_CHUNK = 1024 * 1024
_MAX_PART_NUMBER = 10_000
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CROCKFORD_VALUE = {c: i for i, c in enumerate(_CROCKFORD)}
_HIGHEST = "\U0010ffff"

_SCHEMA = """
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
    inline BLOB
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
    PRIMARY KEY (upload_id, number)
) WITHOUT ROWID;
"""

_BY_VERSION_ID = (
    "SELECT id, latest, marker, blobs FROM versions WHERE bucket = ? AND key = ? AND version_id = ?"
)
_VERSION_COLUMNS = (
    "id, bucket, key, sort_id, version_id, latest, marker, last_modified_ms, size, etag, content_type, meta, "
    "replication_status, replication_reason, parts_count"
)


@dataclass
class _BucketState:
    bucket: Bucket
    replication: ReplicationConfiguration | None
    website: WebsiteConfiguration | None


@dataclass
class _Content:
    """A body taken in: in memory (`inline`) or in one blob file, with its size and MD5."""

    size: int
    md5: str
    inline: bytes | None = None
    blob_id: str | None = None


class _VersionIds:
    """Version ids: 26 Crockford base-32 characters of (ms, counter, random), sortable by time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ms = 0
        self._counter = 0

    def new(self, now_ms: int) -> str:
        with self._lock:
            if now_ms > self._ms:
                self._ms, self._counter = now_ms, 0
            else:
                self._counter += 1
                if self._counter > 0xFFFF:
                    self._ms, self._counter = self._ms + 1, 0
            value = (self._ms << 80) | (self._counter << 64) | secrets.randbits(64)
        return _encode(value)

    @staticmethod
    def after(sort_id: str) -> str:
        """A fresh id that sorts right after `sort_id` (same time, next counter)."""
        value = _decode(sort_id)
        return _encode(((value >> 64) + 1) << 64 | secrets.randbits(64))

    @staticmethod
    def at(ms: int) -> str:
        return _encode((ms << 80) | secrets.randbits(64))

    @staticmethod
    def parse(version_id: str) -> str | None:
        """`version_id` when it is one of ours (usable as a sort id), else None."""
        if len(version_id) == 26 and all(c in _CROCKFORD_VALUE for c in version_id):
            return version_id
        return None


def _encode(value: int) -> str:
    out = []
    for _ in range(26):
        out.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(out))


def _decode(text: str) -> int:
    value = 0
    for c in text:
        value = value * 32 + _CROCKFORD_VALUE[c]
    return value


def _meta(
    metadata: Mapping[str, str] | None, headers: Mapping[str, str] | None, tags: Mapping[str, str] | None
) -> bytes:
    return orjson.dumps({"m": dict(metadata or {}), "h": dict(headers or {}), "t": dict(tags or {})})


def _token(position: str) -> str:
    return base64.urlsafe_b64encode(position.encode()).decode()


def _untoken(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeError) as exc:
        raise InvalidArgument("The continuation token provided is incorrect") from exc


def _common_prefix(key: str, prefix: str, delimiter: str) -> str | None:
    if not delimiter:
        return None
    at = key.find(delimiter, len(prefix))
    return None if at < 0 else key[: at + len(delimiter)]


class LocalObjectStore:
    """The ObjectStore port on local disk; see the module docstring for the layout and guarantees."""

    runs_inline = True

    def __init__(
        self,
        root: Path,
        region: str,
        clock: Clock,
        *,
        min_part_size: int = MIN_PART_SIZE,
        durability: Durability = DEFAULT_DURABILITY,
    ) -> None:
        self.root = Path(root)
        self.durability = durability
        self.region = region
        self._clock = clock
        self._min_part_size = min_part_size
        self._ids = _VersionIds()
        self._lock = threading.RLock()
        self._listeners: list[Callable[[], None]] = []
        # Set by a write that queued a version for replication; listeners hear of it after the commit.
        self._queued = False
        self._blobs = self.root / "blobs"
        self._tmp = self.root / "tmp"
        try:
            self._tmp.mkdir(parents=True, exist_ok=True)
            for n in range(256):
                (self._blobs / f"{n:02x}").mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.root / "objects.sqlite3", isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous(durability)}")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
            self._buckets = self._load_buckets()
            self._sweep()
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open the object store in {self.root}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback` (in the writing thread) after every commit that made a version PENDING."""
        self._listeners.append(callback)

    # Buckets.

    def create_bucket(self, name: str) -> Bucket:
        check_bucket_name(name)
        with self._tx() as db:
            if name in self._buckets:
                raise BucketAlreadyOwnedByYou(f"You already own the bucket {name!r}")
            bucket = Bucket(name=name, region=self.region, created_ms=self._clock.now_ms())
            db.execute(
                "INSERT INTO buckets (name, region, created_ms) VALUES (?, ?, ?)",
                (name, bucket.region, bucket.created_ms),
            )
            self._buckets[name] = _BucketState(bucket, None, None)
        return bucket

    def get_bucket(self, name: str) -> Bucket:
        return self._state(name).bucket

    def list_buckets(self) -> list[Bucket]:
        with self._lock:
            return sorted((s.bucket for s in self._buckets.values()), key=lambda b: b.name)

    def delete_bucket(self, name: str) -> None:
        doomed: list[str] = []
        with self._tx() as db:
            self._state(name)
            if db.execute("SELECT 1 FROM versions WHERE bucket = ? LIMIT 1", (name,)).fetchone():
                raise BucketNotEmpty(f"The bucket {name!r} you tried to delete is not empty")
            doomed = self._drop_uploads(db, "bucket = ?", (name,))
            db.execute("DELETE FROM buckets WHERE name = ?", (name,))
            del self._buckets[name]
        self._unlink(doomed)

    def set_versioning(self, name: str, status: Literal["Enabled", "Suspended"]) -> None:
        if status not in ("Enabled", "Suspended"):
            raise MalformedXML(f"versioning Status must be Enabled or Suspended, not {status!r}")
        with self._tx() as db:
            state = self._state(name)
            if status == "Suspended" and state.replication is not None:
                raise InvalidBucketState(
                    "Versioning cannot be suspended on a bucket with a replication configuration"
                )
            db.execute("UPDATE buckets SET versioning = ? WHERE name = ?", (status, name))
            state.bucket = Bucket(state.bucket.name, state.bucket.region, state.bucket.created_ms, status)

    def put_replication(self, name: str, config: ReplicationConfiguration) -> ReplicationConfiguration:
        config = config.validate(source_bucket=name)
        with self._tx() as db:
            state = self._state(name)
            if state.bucket.versioning != "Enabled":
                raise InvalidRequest(
                    "Versioning must be 'Enabled' on the bucket to apply a replication configuration"
                )
            db.execute(
                "UPDATE buckets SET replication = ? WHERE name = ?", (orjson.dumps(config.to_json()), name)
            )
            state.replication = config
        return config

    def get_replication(self, name: str) -> ReplicationConfiguration:
        config = self._state(name).replication
        if config is None:
            raise ReplicationConfigurationNotFoundError(
                f"The bucket {name!r} has no replication configuration"
            )
        return config

    def delete_replication(self, name: str) -> None:
        with self._tx() as db:
            state = self._state(name)
            db.execute("UPDATE buckets SET replication = NULL WHERE name = ?", (name,))
            state.replication = None

    def put_website(self, name: str, config: WebsiteConfiguration) -> None:
        config = config.validate()
        with self._tx() as db:
            state = self._state(name)
            db.execute(
                "UPDATE buckets SET website = ? WHERE name = ?", (orjson.dumps(config.to_json()), name)
            )
            state.website = config

    def get_website(self, name: str) -> WebsiteConfiguration:
        config = self._state(name).website
        if config is None:
            raise NoSuchWebsiteConfiguration(f"The bucket {name!r} has no website configuration")
        return config

    def delete_website(self, name: str) -> None:
        with self._tx() as db:
            state = self._state(name)
            db.execute("UPDATE buckets SET website = NULL WHERE name = ?", (name,))
            state.website = None

    # Objects.

    def put_object(
        self,
        bucket: str,
        key: str,
        body: Body,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> ObjectVersion:
        check_key(key)
        self._state(bucket)
        content = self._take(body)
        doomed: list[str] = []
        try:
            with self._tx() as db:
                state = self._state(bucket)
                version, doomed = self._insert(
                    db,
                    state,
                    key,
                    content=content,
                    content_type=content_type or DEFAULT_CONTENT_TYPE,
                    meta=_meta(metadata, headers, tags),
                    tags=tags or {},
                )
        except BaseException:
            self._discard(content)
            raise
        self._unlink(doomed)
        return version

    def get_object(
        self, bucket: str, key: str, *, version_id: str | None = None, byte_range: ByteRange | None = None
    ) -> ObjectContent:
        with self._lock:
            row, inline, blobs = self._row(bucket, key, version_id, body=True)
            version = self._version(row)
            first, last, partial = self._resolve(version.size, byte_range)
            if inline is not None:
                return ObjectContent(version, (inline[first : last + 1],), first, last, partial)
            segments = [(str(b), int(n)) for b, n in orjson.loads(blobs)] if blobs else []
            reader = self._reader(segments, first, last)
        if last - first < _EAGER_READ:
            return ObjectContent(version, (b"".join(reader),), first, last, partial)
        return ObjectContent(version, reader, first, last, partial)

    def head_object(self, bucket: str, key: str, *, version_id: str | None = None) -> ObjectVersion:
        with self._lock:
            row, _, _ = self._row(bucket, key, version_id, body=False)
            return self._version(row)

    def delete_object(self, bucket: str, key: str, *, version_id: str | None = None) -> Deleted:
        check_key(key)
        doomed: list[str] = []
        with self._tx() as db:
            state = self._state(bucket)
            versioning = state.bucket.versioning
            if version_id is None and versioning:
                version, doomed = self._insert(
                    db, state, key, content=None, content_type="", meta=_meta(None, None, None), tags={}
                )
                result = Deleted(version.version_id, True)
            else:
                target = NULL_VERSION if version_id is None else version_id
                row = db.execute(
                    _BY_VERSION_ID,
                    (bucket, key, target),
                ).fetchone()
                if row is None:
                    return Deleted(version_id, False)
                doomed = self._remove(db, bucket, key, row)
                result = Deleted(version_id, bool(row[2]))
        self._unlink(doomed)
        return result

    def put_tags(
        self, bucket: str, key: str, tags: Mapping[str, str], *, version_id: str | None = None
    ) -> str:
        with self._tx() as db:
            row, _, _ = self._row(bucket, key, version_id, body=False)
            meta = orjson.loads(row[11])
            meta["t"] = dict(tags)
            db.execute("UPDATE versions SET meta = ? WHERE id = ?", (orjson.dumps(meta), row[0]))
            return str(row[4])

    def list_objects(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str = "",
        start_after: str = "",
        token: str | None = None,
        max_keys: int = 1000,
    ) -> ObjectPage:
        # Nothing at or before `floor` is listed: no key, and no common prefix (S3's marker rule).
        floor = start_after if token is None else _untoken(token)
        after = floor
        objects: list[ObjectVersion] = []
        prefixes: list[str] = []
        last_entry: str | None = None
        with self._lock:
            self._state(bucket)
            while True:
                if after < prefix:
                    condition, bound = "key >= ?", prefix
                else:
                    condition, bound = "key > ?", after
                with self._cursor(
                    f"SELECT {_VERSION_COLUMNS} FROM versions WHERE bucket = ? AND latest = 1 AND marker = 0 "
                    f"AND {condition} ORDER BY key",
                    (bucket, bound),
                ) as rows:
                    for row in rows:
                        key = row[2]
                        if not key.startswith(prefix):
                            return ObjectPage(objects, prefixes)
                        common = _common_prefix(key, prefix, delimiter)
                        if common is not None and (common <= floor or (prefixes and prefixes[-1] == common)):
                            # Skip the rest of this prefix with a new seek, not by reading every key in it.
                            if common + _HIGHEST > key:
                                after = common + _HIGHEST
                                break
                            after = key
                            continue
                        if len(objects) + len(prefixes) >= max_keys:
                            return ObjectPage(
                                objects, prefixes, None if last_entry is None else _token(last_entry)
                            )
                        if common is not None:
                            prefixes.append(common)
                            last_entry = common
                            continue
                        objects.append(self._version(row))
                        last_entry, after = key, key
                    else:
                        return ObjectPage(objects, prefixes)

    def list_versions(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str = "",
        key_marker: str = "",
        version_id_marker: str = "",
        max_keys: int = 1000,
    ) -> VersionPage:
        versions: list[ObjectVersion] = []
        prefixes: list[str] = []
        with self._lock:
            self._state(bucket)
            floor, after_key, older_than = key_marker, key_marker, ""
            if key_marker and version_id_marker and _common_prefix(key_marker, prefix, delimiter) is None:
                row = self._db.execute(
                    "SELECT sort_id FROM versions WHERE bucket = ? AND key = ? AND version_id = ?",
                    (bucket, key_marker, version_id_marker),
                ).fetchone()
                if row is None:
                    raise InvalidArgument("Invalid version id specified")
                older_than = row[0]
            while True:
                with self._version_rows(bucket, prefix, after_key, older_than) as rows:
                    for row in rows:
                        key = row[2]
                        if not key.startswith(prefix):
                            return VersionPage(versions, prefixes)
                        common = _common_prefix(key, prefix, delimiter)
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
                        versions.append(self._version(row))
                    else:
                        return VersionPage(versions, prefixes)

    # Multipart uploads.

    def create_upload(
        self,
        bucket: str,
        key: str,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        check_key(key)
        upload_id = secrets.token_urlsafe(32)
        with self._tx() as db:
            self._state(bucket)
            db.execute(
                "INSERT INTO uploads (upload_id, bucket, key, created_ms, content_type, meta) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    upload_id,
                    bucket,
                    key,
                    self._clock.now_ms(),
                    content_type or DEFAULT_CONTENT_TYPE,
                    _meta(metadata, headers, tags),
                ),
            )
        return upload_id

    def upload_part(self, bucket: str, key: str, upload_id: str, number: int, body: Body) -> Part:
        if not 1 <= number <= _MAX_PART_NUMBER:
            raise InvalidArgument("Part number must be an integer between 1 and 10000, inclusive")
        with self._lock:
            self._upload(bucket, key, upload_id)
        content = self._take(body, inline=False)
        assert content.blob_id is not None
        try:
            with self._tx() as db:
                self._upload(bucket, key, upload_id)
                old = db.execute(
                    "SELECT blob_id FROM parts WHERE upload_id = ? AND number = ?", (upload_id, number)
                ).fetchone()
                part = Part(number, content.md5, content.size, self._clock.now_ms())
                db.execute(
                    "INSERT OR REPLACE INTO parts (upload_id, number, etag, size, blob_id, last_modified_ms) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (upload_id, number, part.etag, part.size, content.blob_id, part.last_modified_ms),
                )
        except BaseException:
            self._discard(content)
            raise
        if old is not None:
            self._unlink([old[0]])
        return part

    def list_parts(self, bucket: str, key: str, upload_id: str) -> list[Part]:
        with self._lock:
            self._upload(bucket, key, upload_id)
            rows = self._db.execute(
                "SELECT number, etag, size, last_modified_ms FROM parts WHERE upload_id = ? ORDER BY number",
                (upload_id,),
            ).fetchall()
        return [Part(*row) for row in rows]

    def complete_upload(
        self, bucket: str, key: str, upload_id: str, parts: Sequence[tuple[int, str]]
    ) -> ObjectVersion:
        if not parts:
            raise MalformedXML("You must specify at least one part")
        numbers = [n for n, _ in parts]
        if any(b <= a for a, b in itertools.pairwise(numbers)):
            raise InvalidPartOrder("The list of parts was not in ascending order")
        with self._tx() as db:
            state = self._state(bucket)
            upload = self._upload(bucket, key, upload_id)
            stored = {
                row[0]: row
                for row in db.execute(
                    "SELECT number, etag, size, blob_id FROM parts WHERE upload_id = ?", (upload_id,)
                ).fetchall()
            }
            segments: list[tuple[str, int]] = []
            digest = hashlib.md5(usedforsecurity=False)
            for i, (number, etag) in enumerate(parts):
                row = stored.get(number)
                if row is None or row[1] != etag.strip('"').lower():
                    raise InvalidPart(
                        f"Part {number} could not be found or its ETag does not match: upload it again"
                    )
                if i < len(parts) - 1 and row[2] < self._min_part_size:
                    raise EntityTooSmall(
                        f"Part {number} is {row[2]} bytes; every part but the last needs at least "
                        f"{self._min_part_size} bytes"
                    )
                segments.append((row[3], row[2]))
                digest.update(bytes.fromhex(row[1]))
            used = {blob for blob, _ in segments}
            doomed = [row[3] for row in stored.values() if row[3] not in used]
            content = _Content(size=sum(n for _, n in segments), md5=f"{digest.hexdigest()}-{len(parts)}")
            meta = orjson.loads(upload[1])
            version, replaced = self._insert(
                db,
                state,
                key,
                content=content,
                content_type=upload[0],
                meta=upload[1],
                tags=meta.get("t", {}),
                segments=segments,
                parts_count=len(parts),
            )
            db.execute("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
            db.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
        self._unlink(doomed + replaced)
        return version

    def abort_upload(self, bucket: str, key: str, upload_id: str) -> None:
        with self._tx() as db:
            self._state(bucket)
            self._upload(bucket, key, upload_id)
            doomed = self._drop_uploads(db, "upload_id = ?", (upload_id,))
        self._unlink(doomed)

    # Replication state.

    def put_replica(self, version: ObjectVersion, body: Body) -> ObjectVersion:
        check_key(version.key)
        state = self._state(version.bucket)
        content = None if version.is_delete_marker else self._take(body)
        if (
            content is not None
            and version.parts_count is None
            and len(version.etag) == 32
            and content.md5 != version.etag.lower()
        ):
            self._discard(content)
            raise BadDigest(f"the replica's content does not match its ETag {version.etag}")
        doomed: list[str] = []
        try:
            with self._tx() as db:
                state = self._state(version.bucket)
                if state.bucket.versioning != "Enabled":
                    raise InvalidRequest(
                        f"Versioning must be 'Enabled' on the destination bucket {version.bucket!r}"
                    )
                existing = db.execute(
                    f"SELECT {_VERSION_COLUMNS} FROM versions "
                    "WHERE bucket = ? AND key = ? AND version_id = ?",
                    (version.bucket, version.key, version.version_id),
                ).fetchone()
                if existing is not None:
                    self._discard(content)
                    return self._version(existing)
                if content is not None and version.parts_count is not None:
                    content.md5 = version.etag
                written, doomed = self._insert(
                    db,
                    state,
                    version.key,
                    content=content,
                    content_type=version.content_type,
                    meta=_meta(version.metadata, version.headers, version.tags),
                    tags=version.tags,
                    replica=version,
                )
        except BaseException:
            self._discard(content)
            raise
        self._unlink(doomed)
        return written

    def set_replication_status(
        self, bucket: str, key: str, version_id: str, status: ReplicationStatus, reason: str = ""
    ) -> None:
        if status not in ("PENDING", "COMPLETED", "FAILED", "REPLICA"):
            raise InvalidArgument(f"unknown replication status {status!r}")
        with self._tx() as db:
            self._state(bucket)
            cursor = db.execute(
                "UPDATE versions SET replication_status = ?, replication_reason = ? "
                "WHERE bucket = ? AND key = ? AND version_id = ?",
                (status, reason, bucket, key, version_id),
            )
            if cursor.rowcount == 0:
                raise NoSuchVersion(f"The version {version_id!r} of {key!r} does not exist")
            self._queued = status == "PENDING"

    def pending_replications(self, *, limit: int = 100) -> list[ObjectVersion]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_VERSION_COLUMNS} FROM versions "
                "WHERE replication_status = 'PENDING' ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
            return [self._version(r) for r in rows]

    # Internals.

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StorageError(f"object store: cannot begin a transaction: {exc}") from exc
            self._queued = False
            try:
                yield self._db
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StorageError(f"object store: {exc}") from exc
            except BaseException:
                self._rollback()
                raise
            queued, self._queued = self._queued, False
        if queued:
            for listener in self._listeners:
                listener()

    @contextmanager
    def _version_rows(
        self, bucket: str, prefix: str, after_key: str, older_than: str
    ) -> Iterator[Iterator[tuple[Any, ...]]]:
        """Versions after (after_key, older_than) in listing order: key ascending, newest first."""
        older: list[tuple[Any, ...]] = []
        if older_than:
            older = self._db.execute(
                f"SELECT {_VERSION_COLUMNS} FROM versions WHERE bucket = ? AND key = ? AND sort_id < ? "
                "ORDER BY sort_id DESC",
                (bucket, after_key, older_than),
            ).fetchall()
        condition, bound = ("key >= ?", prefix) if after_key < prefix else ("key > ?", after_key)
        with self._cursor(
            f"SELECT {_VERSION_COLUMNS} FROM versions "
            f"WHERE bucket = ? AND {condition} ORDER BY key, sort_id DESC",
            (bucket, bound),
        ) as rows:
            yield itertools.chain(older, rows)

    @contextmanager
    def _cursor(self, sql: str, args: tuple[Any, ...]) -> Iterator[sqlite3.Cursor]:
        """Rows read lazily, so a listing stops reading where its page ends; the statement is reset after."""
        try:
            cursor = self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise StorageError(f"object store: {exc}") from exc
        try:
            yield cursor
        finally:
            cursor.close()

    def _rollback(self) -> None:
        # Nothing to roll back when the failure was a COMMIT that SQLite already undid.
        with suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")

    def _load_buckets(self) -> dict[str, _BucketState]:
        states = {}
        for name, region, created_ms, versioning, replication, website in self._db.execute(
            "SELECT name, region, created_ms, versioning, replication, website FROM buckets"
        ):
            states[name] = _BucketState(
                Bucket(name, region, created_ms, versioning),
                None
                if replication is None
                else ReplicationConfiguration.from_json(orjson.loads(replication)),
                None if website is None else WebsiteConfiguration.from_json(orjson.loads(website)),
            )
        return states

    def _sweep(self) -> None:
        """Remove temp files and blob files no committed row refers to (left by a crash)."""
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp.mkdir(exist_ok=True)
        referenced = {row[0] for row in self._db.execute("SELECT blob_id FROM parts")}
        for (blobs,) in self._db.execute("SELECT blobs FROM versions WHERE blobs IS NOT NULL"):
            referenced.update(str(b) for b, _ in orjson.loads(blobs))
        for folder in self._blobs.iterdir():
            for path in folder.iterdir():
                if path.name not in referenced:
                    path.unlink(missing_ok=True)

    def _state(self, name: str) -> _BucketState:
        state = self._buckets.get(name)
        if state is None:
            raise NoSuchBucket(f"The specified bucket does not exist: {name!r}")
        return state

    def _upload(self, bucket: str, key: str, upload_id: str) -> tuple[str, bytes]:
        self._state(bucket)
        row = self._db.execute(
            "SELECT content_type, meta FROM uploads WHERE upload_id = ? AND bucket = ? AND key = ?",
            (upload_id, bucket, key),
        ).fetchone()
        if row is None:
            raise NoSuchUpload(
                "The specified upload does not exist: the upload ID may be invalid, "
                "or the upload may have been aborted or completed"
            )
        return row[0], row[1]

    def _drop_uploads(self, db: sqlite3.Connection, where: str, args: tuple[Any, ...]) -> list[str]:
        ids = [row[0] for row in db.execute(f"SELECT upload_id FROM uploads WHERE {where}", args)]
        doomed: list[str] = []
        for upload_id in ids:
            doomed.extend(
                r[0] for r in db.execute("SELECT blob_id FROM parts WHERE upload_id = ?", (upload_id,))
            )
            db.execute("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
            db.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
        return doomed

    def _blob_path(self, blob_id: str) -> Path:
        return self._blobs / blob_id[:2] / blob_id

    def _take(self, body: Body, *, inline: bool = True) -> _Content:
        """Take a body in: small ones stay in memory, the rest goes to a durable blob file."""
        digest = hashlib.md5(usedforsecurity=False)
        if isinstance(body, bytes | bytearray | memoryview):
            data = bytes(body)
            if inline and len(data) <= INLINE_MAX:
                digest.update(data)
                return _Content(len(data), digest.hexdigest(), inline=data)
            return self._write_blob((data,))
        head: list[bytes] = []
        size = 0
        chunks = iter(body)
        if inline:
            for chunk in chunks:
                head.append(chunk)
                size += len(chunk)
                if size > INLINE_MAX:
                    break
            else:
                data = b"".join(head)
                digest.update(data)
                return _Content(len(data), digest.hexdigest(), inline=data)
        return self._write_blob(_chain(head, chunks))

    def _write_blob(self, chunks: Iterable[bytes]) -> _Content:
        blob_id = secrets.token_hex(16)
        temp = self._tmp / blob_id
        digest = hashlib.md5(usedforsecurity=False)
        size = 0
        try:
            with open(temp, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                f.flush()
                os.fsync(f.fileno())
            target = self._blob_path(blob_id)
            os.replace(temp, target)
            if self.durability == "power":
                # The rename is durable only once its directory is: else a power loss could lose the
                # file of a committed row.
                fsync_directory(target.parent)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise StorageError(f"object store: cannot write content: {exc}") from exc
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return _Content(size, digest.hexdigest(), blob_id=blob_id)

    def _discard(self, content: _Content | None) -> None:
        if content is not None and content.blob_id is not None:
            self._unlink([content.blob_id])
            content.blob_id = None

    def _unlink(self, blob_ids: Iterable[str]) -> None:
        for blob_id in blob_ids:
            # A file that cannot go now is left for the sweep at the next start: orphans are harmless.
            with suppress(OSError):
                self._blob_path(blob_id).unlink(missing_ok=True)

    def _insert(
        self,
        db: sqlite3.Connection,
        state: _BucketState,
        key: str,
        *,
        content: _Content | None,
        content_type: str,
        meta: bytes,
        tags: Mapping[str, str],
        segments: list[tuple[str, int]] | None = None,
        parts_count: int | None = None,
        replica: ObjectVersion | None = None,
    ) -> tuple[ObjectVersion, list[str]]:
        """Add a version (or a delete marker when `content` is None); returns it and the blobs to unlink."""
        bucket = state.bucket
        marker = content is None
        latest = db.execute(
            "SELECT id, sort_id FROM versions WHERE bucket = ? AND key = ? AND latest = 1", (bucket.name, key)
        ).fetchone()
        doomed: list[str] = []
        status: ReplicationStatus | None
        if replica is not None:
            now = replica.last_modified_ms
            version_id = replica.version_id
            sort_id = _VersionIds.parse(version_id) or _VersionIds.at(now)
            is_latest = latest is None or sort_id > latest[1]
            status = "REPLICA"
        else:
            now = self._clock.now_ms()
            sort_id = self._ids.new(now)
            if latest is not None and sort_id <= latest[1]:
                sort_id = _VersionIds.after(latest[1])
            is_latest = True
            version_id = sort_id if bucket.versioning == "Enabled" else NULL_VERSION
            status = None
            replication = state.replication if bucket.versioning == "Enabled" else None
            if replication is not None and replication.rule_for(key, tags, delete_marker=marker) is not None:
                status = "PENDING"
                self._queued = True
            if version_id == NULL_VERSION:
                old = db.execute(
                    _BY_VERSION_ID,
                    (bucket.name, key, NULL_VERSION),
                ).fetchone()
                if old is not None:
                    doomed = self._blob_ids(old[3])
                    db.execute("DELETE FROM versions WHERE id = ?", (old[0],))
        if is_latest and latest is not None:
            db.execute("UPDATE versions SET latest = 0 WHERE id = ?", (latest[0],))
        if segments is None and content is not None and content.blob_id is not None:
            segments = [(content.blob_id, content.size)]
        db.execute(
            "INSERT INTO versions (bucket, key, sort_id, version_id, latest, marker, last_modified_ms, size, "
            "etag, content_type, meta, replication_status, parts_count, blobs, inline) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                bucket.name,
                key,
                sort_id,
                version_id,
                int(is_latest),
                int(marker),
                now,
                0 if content is None else content.size,
                "" if content is None else content.md5,
                content_type,
                meta,
                status,
                parts_count,
                None if segments is None else orjson.dumps(segments),
                None if content is None or segments is not None else (content.inline or b""),
            ),
        )
        parsed = orjson.loads(meta)
        version = ObjectVersion(
            bucket=bucket.name,
            key=key,
            version_id=version_id,
            last_modified_ms=now,
            etag="" if content is None else content.md5,
            size=0 if content is None else content.size,
            is_delete_marker=marker,
            is_latest=is_latest,
            content_type=content_type,
            metadata=parsed["m"],
            headers=parsed["h"],
            tags=parsed["t"],
            replication_status=status,
            parts_count=parts_count,
        )
        return version, doomed

    def _remove(self, db: sqlite3.Connection, bucket: str, key: str, row: tuple[Any, ...]) -> list[str]:
        """Delete one version row (id, latest, marker, blobs); the next newest becomes latest."""
        db.execute("DELETE FROM versions WHERE id = ?", (row[0],))
        if row[1]:
            db.execute(
                "UPDATE versions SET latest = 1 WHERE id = "
                "(SELECT id FROM versions WHERE bucket = ? AND key = ? ORDER BY sort_id DESC LIMIT 1)",
                (bucket, key),
            )
        return self._blob_ids(row[3])

    @staticmethod
    def _blob_ids(blobs: bytes | None) -> list[str]:
        return [] if blobs is None else [str(b) for b, _ in orjson.loads(blobs)]

    def _row(
        self, bucket: str, key: str, version_id: str | None, *, body: bool
    ) -> tuple[tuple[Any, ...], bytes | None, bytes | None]:
        self._state(bucket)
        extra = ", inline, blobs" if body else ""
        if version_id is None:
            row = self._db.execute(
                f"SELECT {_VERSION_COLUMNS}{extra} FROM versions WHERE bucket = ? AND key = ? AND latest = 1",
                (bucket, key),
            ).fetchone()
            if row is None:
                raise NoSuchKey(f"The specified key does not exist: {key!r}")
            if row[6]:
                raise NoSuchKey(
                    f"The specified key does not exist: {key!r}", delete_marker=True, version_id=row[4]
                )
        else:
            row = self._db.execute(
                f"SELECT {_VERSION_COLUMNS}{extra} FROM versions "
                "WHERE bucket = ? AND key = ? AND version_id = ?",
                (bucket, key, version_id),
            ).fetchone()
            if row is None:
                raise NoSuchVersion(f"The specified version does not exist: {version_id!r} of {key!r}")
            if row[6]:
                raise MethodNotAllowed(
                    "The specified method is not allowed against this resource: a delete marker",
                    delete_marker=True,
                    version_id=row[4],
                )
        if body:
            return row[:-2], row[-2], row[-1]
        return row, None, None

    @staticmethod
    def _version(row: tuple[Any, ...]) -> ObjectVersion:
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
        )

    @staticmethod
    def _resolve(size: int, byte_range: ByteRange | None) -> tuple[int, int, bool]:
        if byte_range is None:
            return 0, size - 1, False
        first, last = byte_range
        if first is None:
            if last is None or last <= 0 or size == 0:
                raise InvalidRange("The requested range is not satisfiable", size=size)
            return max(0, size - last), size - 1, True
        if first >= size or (last is not None and last < first):
            raise InvalidRange("The requested range is not satisfiable", size=size)
        return first, size - 1 if last is None else min(last, size - 1), True

    def _reader(self, segments: list[tuple[str, int]], first: int, last: int) -> Iterator[bytes]:
        """Bytes first..last of the segments; the first file opens now, so a later delete cannot race it."""
        plan: list[tuple[str, int, int]] = []
        offset = 0
        for blob_id, size in segments:
            start, end = max(first, offset), min(last, offset + size - 1)
            if start <= end:
                plan.append((blob_id, start - offset, end - start + 1))
            offset += size
        if not plan:
            return iter(())
        try:
            opened = open(self._blob_path(plan[0][0]), "rb")  # noqa: SIM115 - closed by the generator
        except OSError as exc:
            raise StorageError(f"object store: content missing: {exc}") from exc
        return self._stream(opened, plan)

    def _stream(self, opened: Any, plan: list[tuple[str, int, int]]) -> Iterator[bytes]:
        f = opened
        try:
            for i, (blob_id, start, length) in enumerate(plan):
                if i > 0:
                    f.close()
                    f = open(self._blob_path(blob_id), "rb")  # noqa: SIM115 - closed below
                f.seek(start)
                while length > 0:
                    chunk = f.read(min(_CHUNK, length))
                    if not chunk:
                        raise StorageError(f"object store: content {blob_id} is shorter than recorded")
                    length -= len(chunk)
                    yield chunk
        except OSError as exc:
            raise StorageError(f"object store: cannot read content: {exc}") from exc
        finally:
            f.close()


def _chain(head: list[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    yield from head
    yield from rest
