"""LocalObjectStore: the ObjectStore port on local disk, content in files or SQLite, metadata in SQLite.

Layout under `root` (nothing below it is named after a bucket or key, so no key can reach outside it):
- objects.sqlite3 (WAL, see local.metadata): buckets, versions, multipart uploads and parts. Bodies up to
  INLINE_MAX bytes live in the version's row, so a small PUT is one SQLite transaction.
- blobs/xx/<random id> (see local.blobs): larger bodies and every multipart part, one file each, never
  shared, durable before the transaction that refers to it commits. A completed multipart upload keeps
  its part files as the object's segments (no copy).
- Every body written is encrypted at rest (local.encryption): with the region's key in key.sse (SSE-S3),
  or the customer's (SSE-C, given with each request and never stored: the version keeps a salted HMAC
  of it). Versions written before encryption existed are read as they are.
- Committed transactions survive kill -9 (WAL, synchronous=NORMAL); the last ones may be lost on power
  failure, unless durability is "power" (synchronous=FULL, and the blob directory fsynced after each
  rename). One process opens a root at a time (storage.local.ownership).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import secrets
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, Literal

import orjson

from bookstore.domain.errors import StorageError
from bookstore.objectstore import checksums
from bookstore.objectstore.checksums import Algorithm, Checksum, ChecksumType
from bookstore.objectstore.configs import ReplicationConfiguration, WebsiteConfiguration
from bookstore.objectstore.encryption import SSE_C, SSE_S3, CustomerKey, KeyProof, refuse_key
from bookstore.objectstore.errors import (
    BadDigest,
    BucketAlreadyOwnedByYou,
    BucketNotEmpty,
    EntityTooSmall,
    InvalidArgument,
    InvalidBucketState,
    InvalidPart,
    InvalidPartOrder,
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
from bookstore.objectstore.listing import resolve_range, token_position
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
    Replica,
    ReplicationStatus,
    Seal,
    StartedUpload,
    StatusChange,
    VersionPage,
    check_bucket_name,
    check_key,
    check_replica_parts,
)
from bookstore.objectstore.sse_keys import KeyStatus, Progress
from bookstore.ports import Clock, Outcome
from bookstore.storage.durability import DEFAULT as DEFAULT_DURABILITY
from bookstore.storage.durability import Durability
from bookstore.storage.local import listing, metadata
from bookstore.storage.local.blobs import BlobFiles, Content
from bookstore.storage.local.configs import BucketConfigs
from bookstore.storage.local.encryption import IV_BYTES, BlobCipher
from bookstore.storage.local.keyring import KeyRing
from bookstore.storage.local.metadata import (
    BY_VERSION_ID,
    VERSION_COLUMNS,
    BucketState,
    blob_ids,
    encode_meta,
    extras,
    meta_of,
    version_of,
)
from bookstore.storage.local.version_ids import VersionIds
from bookstore.storage.sqlite.engine import SqliteEngine

MIN_PART_SIZE = 5 * 1024 * 1024
# GET reads ranges up to this size into memory at once; larger ones stream.
_EAGER_READ = 1024 * 1024
_MAX_PART_NUMBER = 10_000
# The latest version of a key (bucket ?1, key ?2), and with _LATEST_AND_NULL its null version too (a row
# that is both comes twice): id, sort_id, latest, version_id, blobs. Two index searches in one statement.
_VERSION_ROW = "SELECT id, sort_id, latest, version_id, blobs FROM versions WHERE bucket = ?1 AND key = ?2"
_LATEST = f"{_VERSION_ROW} AND latest = 1"
_LATEST_AND_NULL = f"{_LATEST} UNION ALL {_VERSION_ROW} AND version_id = 'null'"


class LocalObjectStore:
    """The ObjectStore port on local disk; see the module docstring for the layout and guarantees."""

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
        # Calls on small objects return in well under a millisecond only without an fsync per commit;
        # under "power" they run in worker threads, where concurrent PUTs share their commits.
        self.runs_inline = durability != "power"
        self.region = region
        self._clock = clock
        self._min_part_size = min_part_size
        self._ids = VersionIds()
        self._listeners: list[Callable[[], None]] = []
        # Set by a write that queued a version for replication; listeners hear of it after the commit.
        self._queued = False
        try:
            self._files = BlobFiles(self.root, durability)
            self.engine = SqliteEngine(
                self.root / "objects.sqlite3", durability=durability, kind="object store"
            )
            self.engine.script(metadata.SCHEMA, "creating the schema")
            with self.engine.transaction("migrating the schema") as db:
                metadata.migrate(db)
            self._keys = KeyRing(self.root)
            # Where re-encryption's pass over the versions is (their ids ascending).
            self._cursor = 0
            # Reads hold the writer's lock too (engine.exclusive): a read that found a blob file opens it
            # before a delete can unlink it, and sees the in-memory bucket states its writes keep.
            with self.engine.exclusive() as db:
                self._buckets = metadata.load_buckets(db)
                self._configs = BucketConfigs(db)
                self._files.sweep(metadata.referenced_blobs(db))
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open the object store in {self.root}: {exc}") from exc

    def close(self) -> None:
        self.engine.close()

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
            self._buckets[name] = BucketState(bucket, None, None)
        return bucket

    def get_bucket(self, name: str) -> Bucket:
        return self._state(name).bucket

    def list_buckets(self) -> list[Bucket]:
        with self.engine.exclusive():
            return sorted((s.bucket for s in self._buckets.values()), key=lambda b: b.name)

    def delete_bucket(self, name: str) -> None:
        doomed: list[str] = []
        with self._tx() as db:
            self._state(name)
            if db.execute("SELECT 1 FROM versions WHERE bucket = ? LIMIT 1", (name,)).fetchone():
                raise BucketNotEmpty(f"The bucket {name!r} you tried to delete is not empty")
            doomed = self._drop_uploads(db, "bucket = ?", (name,))
            db.execute("DELETE FROM buckets WHERE name = ?", (name,))
            BucketConfigs.erase_bucket(db, name)
            del self._buckets[name]
        self._configs.forget_bucket(name)
        self._files.unlink(doomed)

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

    def put_config(self, name: str, kind: str, document: str) -> None:
        self._write_config(name, kind, document)

    def get_config(self, name: str, kind: str) -> str | None:
        self._state(name)
        return self._configs.get(name, kind)

    def delete_config(self, name: str, kind: str) -> None:
        self._write_config(name, kind, None)

    def _write_config(self, name: str, kind: str, document: str | None) -> None:
        # The cache changes once the row has committed, still under the writer's lock (re-entrant), so
        # no other write of this configuration comes between the two.
        with self.engine.exclusive():
            with self._tx() as db:
                self._state(name)
                BucketConfigs.write(db, name, kind, document)
            self._configs.remember(name, kind, document)

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
        checksum: Checksum | None = None,
        customer_key: CustomerKey | None = None,
    ) -> ObjectVersion:
        check_key(key)
        self._state(bucket)
        extra = _sealing(customer_key)
        if checksum is not None:
            extra["c"] = checksum.to_json()
        with self._encrypting(customer_key) as (key_id, cipher):
            content = self._files.take(body, cipher=cipher)
            content.key_id = key_id

            def write(db: sqlite3.Connection) -> tuple[ObjectVersion, list[str]]:
                return self._insert(
                    db,
                    self._state(bucket),
                    key,
                    content=content,
                    content_type=content_type or DEFAULT_CONTENT_TYPE,
                    meta=meta_of(metadata, headers, tags, extra),
                )

            try:
                # Concurrent PUTs share one commit, and under durability "power" its fsync (group
                # commit); each returns only once the transaction holding its own row has committed.
                version, doomed = self.engine.commit_shared(write, "a PUT")
            except BaseException:
                self._files.discard(content)
                raise
        self._files.unlink(doomed)
        if version.replication_status == "PENDING":
            self._notify()
        return version

    def get_object(
        self,
        bucket: str,
        key: str,
        *,
        version_id: str | None = None,
        byte_range: ByteRange | None = None,
        customer_key: CustomerKey | None = None,
    ) -> ObjectContent:
        with self.engine.exclusive() as db:
            row, inline, blobs = self._row(db, bucket, key, version_id, body=True)
            segments = _segments(blobs, row[15])
            meta = orjson.loads(row[11])
            ciphers = self._unlock(meta, customer_key, [kid for _, _, kid in segments] or [row[15]])
            version = version_of(row, meta)
            first, last, partial = resolve_range(version.size, byte_range)
            if inline is not None:
                if ciphers[0] is not None:
                    inline = ciphers[0].decrypt_bytes(inline)
                return ObjectContent(version, (inline[first : last + 1],), first, last, partial)
            reader = self._files.reader([(b, n) for b, n, _ in segments], first, last, ciphers)
        if last - first < _EAGER_READ:
            return ObjectContent(version, (b"".join(reader),), first, last, partial)
        return ObjectContent(version, reader, first, last, partial)

    def head_object(
        self, bucket: str, key: str, *, version_id: str | None = None, customer_key: CustomerKey | None = None
    ) -> ObjectVersion:
        with self.engine.exclusive() as db:
            row, _, _ = self._row(db, bucket, key, version_id, body=False)
            meta = orjson.loads(row[11])
            self._unlock(meta, customer_key, [])
            return version_of(row, meta)

    def part_range(
        self, bucket: str, key: str, number: int, *, version_id: str | None = None
    ) -> tuple[int, int] | None:
        with self.engine.exclusive() as db:
            row, _, blobs = self._row(db, bucket, key, version_id, body=True)
        sizes = _part_sizes(version_of(row), blobs, orjson.loads(row[11]))
        if sizes is None or number > len(sizes):
            return None
        first = sum(sizes[: number - 1])
        return first, first + sizes[number - 1] - 1

    def delete_object(
        self, bucket: str, key: str, *, version_id: str | None = None, replicate: bool = True
    ) -> Deleted:
        check_key(key)
        doomed: list[str] = []
        with self._tx() as db:
            state = self._state(bucket)
            versioning = state.bucket.versioning
            if version_id is None and versioning:
                version, doomed = self._insert(
                    db,
                    state,
                    key,
                    content=None,
                    content_type="",
                    meta=meta_of(None, None, None),
                    replicate=replicate,
                )
                result = Deleted(version.version_id, True)
            else:
                target = NULL_VERSION if version_id is None else version_id
                row = db.execute(
                    BY_VERSION_ID,
                    (bucket, key, target),
                ).fetchone()
                if row is None:
                    return Deleted(version_id, False)
                doomed = self._remove(db, bucket, key, row)
                result = Deleted(version_id, bool(row[2]))
        self._files.unlink(doomed)
        return result

    def put_tags(
        self, bucket: str, key: str, tags: Mapping[str, str], *, version_id: str | None = None
    ) -> str:
        with self._tx() as db:
            row, _, _ = self._row(db, bucket, key, version_id, body=False)
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
        floor = start_after if token is None else token_position(token)
        with self.engine.exclusive() as db:
            self._state(bucket)
            return listing.list_objects(
                db, bucket, prefix=prefix, delimiter=delimiter, floor=floor, max_keys=max_keys
            )

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
        with self.engine.exclusive() as db:
            self._state(bucket)
            return listing.list_versions(
                db,
                bucket,
                prefix=prefix,
                delimiter=delimiter,
                key_marker=key_marker,
                version_id_marker=version_id_marker,
                max_keys=max_keys,
            )

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
        checksum: tuple[Algorithm, ChecksumType] | None = None,
        customer_key: CustomerKey | None = None,
    ) -> str:
        check_key(key)
        upload_id = secrets.token_urlsafe(32)
        extra = _sealing(customer_key)
        if checksum is not None:
            extra["u"] = checksums.upload_to_json(checksum)
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
                    encode_meta(metadata, headers, tags, extra),
                ),
            )
        return upload_id

    def upload_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        number: int,
        body: Body,
        *,
        checksum: Checksum | None = None,
        customer_key: CustomerKey | None = None,
        copied: bool = False,
    ) -> Part:
        if not 1 <= number <= _MAX_PART_NUMBER:
            raise InvalidArgument("Part number must be an integer between 1 and 10000, inclusive")
        with self.engine.exclusive() as db:
            upload = orjson.loads(self._upload(db, bucket, key, upload_id)[1])
        sealed = upload.get("e") == SSE_C
        if sealed:
            self._unlock(upload, customer_key, [])
        else:
            refuse_key(customer_key)
        # The newest key is leased until the part's row has committed.
        with self._encrypting(customer_key if sealed else None) as (key_id, cipher):
            wanted = checksums.upload_from_json(upload.get("u"))
            if copied and wanted is not None:
                body, computed = checksums.tap(body, wanted[0])
                content = self._files.take(body, inline=False, cipher=cipher)
                kept = computed().value
            else:
                kept = checksums.part_value(wanted, checksum)
                content = self._files.take(body, inline=False, cipher=cipher)
            assert content.blob_id is not None
            try:
                with self._tx() as db:
                    self._upload(db, bucket, key, upload_id)
                    old = db.execute(
                        "SELECT blob_id FROM parts WHERE upload_id = ? AND number = ?", (upload_id, number)
                    ).fetchone()
                    part = Part(
                        number,
                        content.md5,
                        content.size,
                        self._clock.now_ms(),
                        kept,
                        checksums.part_algorithm(wanted, kept),
                    )
                    db.execute(
                        "INSERT OR REPLACE INTO parts "
                        "(upload_id, number, etag, size, blob_id, last_modified_ms, checksum, key_id) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            upload_id,
                            number,
                            part.etag,
                            part.size,
                            content.blob_id,
                            part.last_modified_ms,
                            kept,
                            key_id,
                        ),
                    )
            except BaseException:
                self._files.discard(content)
                raise
        if old is not None:
            self._files.unlink([old[0]])
        return part

    def list_parts(self, bucket: str, key: str, upload_id: str) -> list[Part]:
        with self.engine.exclusive() as db:
            meta = orjson.loads(self._upload(db, bucket, key, upload_id)[1])
            rows = db.execute(
                "SELECT number, etag, size, last_modified_ms, checksum FROM parts "
                "WHERE upload_id = ? ORDER BY number",
                (upload_id,),
            ).fetchall()
        wanted = checksums.upload_from_json(meta.get("u"))
        return [
            Part(n, etag, size, ms, kept, checksums.part_algorithm(wanted, kept))
            for n, etag, size, ms, kept in rows
        ]

    def completed_parts(self, bucket: str, key: str, *, version_id: str | None = None) -> list[Part]:
        with self.engine.exclusive() as db:
            row, _, blobs = self._row(db, bucket, key, version_id, body=True)
        meta = orjson.loads(row[11])
        version = version_of(row, meta)
        sizes = _part_sizes(version, blobs, meta)
        if sizes is None:
            return []
        kept = meta.get("p") or [""] * len(sizes)
        name = version.checksum.algorithm if version.checksum is not None else ""
        return [
            Part(n, "", size, version.last_modified_ms, value, name if value else "")
            for n, (size, value) in enumerate(zip(sizes, kept, strict=True), start=1)
        ]

    def complete_upload(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        parts: Sequence[tuple[int, str]],
        *,
        expected: Checksum | None = None,
    ) -> ObjectVersion:
        if not parts:
            raise MalformedXML("You must specify at least one part")
        numbers = [n for n, _ in parts]
        if any(b <= a for a, b in itertools.pairwise(numbers)):
            raise InvalidPartOrder("The list of parts was not in ascending order")
        with self._tx() as db:
            state = self._state(bucket)
            upload = self._upload(db, bucket, key, upload_id)
            stored = {
                row[0]: row
                for row in db.execute(
                    "SELECT number, etag, size, blob_id, checksum, key_id FROM parts WHERE upload_id = ?",
                    (upload_id,),
                ).fetchall()
            }
            segments: list[tuple[Any, ...]] = []
            kept: list[tuple[str, int]] = []
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
                # A part under a customer's key (key_id NULL) is a segment of two members, as before.
                segments.append((row[3], row[2]) if row[5] is None else (row[3], row[2], row[5]))
                kept.append((row[4], row[2]))
                digest.update(bytes.fromhex(row[1]))
            used = {segment[0] for segment in segments}
            doomed = [row[3] for row in stored.values() if row[3] not in used]
            keys = [segment[2] for segment in segments if len(segment) > 2]
            content = Content(
                size=sum(segment[1] for segment in segments),
                md5=f"{digest.hexdigest()}-{len(parts)}",
                key_id=min(keys) if keys else None,
            )
            meta = orjson.loads(upload[1])
            if "e" not in meta and keys and min(keys) > 0:
                # An upload begun before encryption at rest whose parts all came (or were re-encrypted) since.
                meta["e"] = SSE_S3
            checksum = checksums.completed(checksums.upload_from_json(meta.pop("u", None)), kept)
            checksums.check_expected(expected, checksum)
            if checksum is not None:
                meta["c"] = checksum.to_json()
                # The parts' checksums, for GetObjectAttributes (their sizes are the segments').
                meta["p"] = [value for value, _ in kept]
            version, replaced = self._insert(
                db,
                state,
                key,
                content=content,
                content_type=upload[0],
                meta=meta,
                segments=segments,
                parts_count=len(parts),
            )
            db.execute("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
            db.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
        self._files.unlink(doomed + replaced)
        return version

    def abort_upload(self, bucket: str, key: str, upload_id: str) -> None:
        with self._tx() as db:
            self._state(bucket)
            self._upload(db, bucket, key, upload_id)
            doomed = self._drop_uploads(db, "upload_id = ?", (upload_id,))
        self._files.unlink(doomed)

    def uploads_started_before(self, bucket: str, before_ms: int) -> list[tuple[str, str]]:
        with self.engine.exclusive() as db:
            self._state(bucket)
            rows = db.execute(
                "SELECT key, upload_id FROM uploads WHERE bucket = ? AND created_ms < ? "
                "ORDER BY key, upload_id",
                (bucket, before_ms),
            ).fetchall()
        return [(str(k), str(u)) for k, u in rows]

    def list_uploads(self, bucket: str, prefix: str = "") -> list[StartedUpload]:
        with self.engine.exclusive() as db:
            self._state(bucket)
            rows = db.execute(
                "SELECT key, upload_id, created_ms FROM uploads WHERE bucket = ? AND key >= ? "
                "ORDER BY key, created_ms, upload_id",
                (bucket, prefix),
            ).fetchall()
        return [StartedUpload(str(k), str(u), int(c)) for k, u, c in rows if str(k).startswith(prefix)]

    # Replication state.

    def put_replica(
        self, version: ObjectVersion, body: Body, parts: Sequence[Part] = (), seal: Seal | None = None
    ) -> ObjectVersion:
        # The newest key is leased until the row commits (a sealed replica, which does not use it, too).
        with self._keys.writing() as (key_id, cipher):
            return self._put_replica(version, body, parts, seal, cipher, key_id)

    def _put_replica(
        self,
        version: ObjectVersion,
        body: Body,
        parts: Sequence[Part],
        seal: Seal | None,
        cipher: BlobCipher,
        key_id: int,
    ) -> ObjectVersion:
        check_key(version.key)
        state = self._state(version.bucket)
        check_replica_parts(version, parts)
        sealed = version.encryption == SSE_C and not version.is_delete_marker
        segments: list[tuple[str, int]] | None = None
        content: Content | None
        if sealed:
            if seal is None:
                raise InvalidRequest("An SSE-C replica needs the seal of its content (a region from before?)")
            content, segments = self._take_sealed(version, body, seal)
            extra: dict[str, Any] = {"e": SSE_C, "k": seal.proof.to_json()}
        else:
            content = None if version.is_delete_marker else self._files.take(body, cipher=cipher)
            if content is not None:
                content.key_id = key_id
            extra = {} if version.is_delete_marker else {"e": SSE_S3}
        if version.checksum is not None:
            extra["c"] = version.checksum.to_json()
        if parts and not version.is_delete_marker:
            # A clear replica's content is one piece here: the source's part sizes say where its parts
            # lie (a sealed one keeps the source's pieces, which are its parts as well).
            extra["s"] = [part.size for part in parts]
            if any(part.checksum for part in parts):
                extra["p"] = [part.checksum for part in parts]
        if (
            content is not None
            and not sealed
            and version.parts_count is None
            and len(version.etag) == 32
            and content.md5 != version.etag.lower()
        ):
            self._files.discard(content)
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
                    f"SELECT {VERSION_COLUMNS} FROM versions WHERE bucket = ? AND key = ? AND version_id = ?",
                    (version.bucket, version.key, version.version_id),
                ).fetchone()
                if existing is not None:
                    self._files.discard(content)
                    self._files.unlink(blob for blob, _ in segments or ())
                    return version_of(existing)
                if content is not None and version.parts_count is not None:
                    content.md5 = version.etag
                written, doomed = self._insert(
                    db,
                    state,
                    version.key,
                    content=content,
                    content_type=version.content_type,
                    meta=meta_of(version.metadata, version.headers, version.tags, extra),
                    # Its parts count, as the source's (x-amz-mp-parts-count, partNumber past the last).
                    parts_count=None if content is None else version.parts_count,
                    segments=segments,
                    replica=version,
                )
        except BaseException:
            self._files.discard(content)
            self._files.unlink(blob for blob, _ in segments or ())
            raise
        self._files.unlink(doomed)
        return written

    def read_sealed(self, bucket: str, key: str, version_id: str) -> tuple[Seal, Iterable[bytes]]:
        with self.engine.exclusive() as db:
            row, inline, blobs = self._row(db, bucket, key, version_id, body=True)
            meta = orjson.loads(row[11])
            proof = KeyProof.from_json(meta.get("k"))
            if meta.get("e") != SSE_C or proof is None:
                raise InvalidRequest(
                    f"The version {version_id!r} of {key!r} is not encrypted with a customer key"
                )
            if inline is not None:
                return Seal(proof, (len(inline),)), (inline,)
            # Each piece as its file holds it: the IV, then the ciphertext.
            stored = [(b, n + IV_BYTES) for b, n, _ in _segments(blobs, None)]
            pieces = tuple(n for _, n in stored)
            reader = self._files.reader(stored, 0, sum(pieces) - 1)
        return Seal(proof, pieces), reader

    def put_replicas(self, replicas: Sequence[Replica]) -> list[Outcome]:
        # One commit for the lot: a replica's own commit costs more than writing its row.
        return self.engine.run_group(
            [functools.partial(self.put_replica, r.version, r.body, r.parts, r.seal) for r in replicas],
            what="replica writes",
        )

    def set_replication_statuses(self, changes: Sequence[StatusChange]) -> list[Outcome]:
        return self.engine.run_group(
            [
                functools.partial(
                    self.set_replication_status, c.bucket, c.key, c.version_id, c.status, c.reason
                )
                for c in changes
            ],
            what="replication statuses",
        )

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
        with self.engine.exclusive() as db:
            rows = db.execute(
                f"SELECT {VERSION_COLUMNS} FROM versions "
                "WHERE replication_status = 'PENDING' ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
            return [version_of(r) for r in rows]

    # SSE-S3 keys (the KeyRotation port; storage.local.keyring says why a key id per body).

    def rotate_key(self, *, reencrypt: bool) -> KeyStatus:
        self._keys.rotate(reencrypt=reencrypt)
        self._cursor = 0
        return self.key_status()

    def key_status(self) -> KeyStatus:
        bodies: Counter[int] = Counter()
        with self.engine.exclusive() as db:
            for table, column in (("versions", "sse_key"), ("parts", "key_id")):
                for key_id, count in db.execute(
                    f"SELECT {column}, count(*) FROM {table} WHERE {column} IS NOT NULL GROUP BY {column}"
                ):
                    bodies[int(key_id)] += int(count)
            ids = self._keys.ids()
        return KeyStatus(tuple(ids), max(ids), self._keys.retiring_below(), dict(bodies))

    def reencrypt_step(self, limit: int = 16) -> Progress:
        bound = self._keys.retiring_below()
        if bound is None:
            return Progress(0, True)
        # A pass walks the versions by id from `_cursor` (so a pass is linear in the rows), then the parts.
        with self.engine.exclusive() as db:
            rows = db.execute(
                "SELECT id, sse_key, inline, blobs, etag, parts_count FROM versions "
                "WHERE id > ? AND sse_key < ? ORDER BY id LIMIT ?",
                (self._cursor, bound, limit),
            ).fetchall()
            parts = []
            if len(rows) < limit:
                parts = db.execute(
                    "SELECT upload_id, number, blob_id, size, key_id, etag FROM parts "
                    "WHERE key_id < ? LIMIT ?",
                    (bound, limit - len(rows)),
                ).fetchall()
        rewritten = 0
        for row in rows:
            rewritten += self._reencrypt_version(row, bound)
            self._cursor = row[0]
        for part in parts:
            rewritten += self._reencrypt_part(part)
        if len(rows) + len(parts) < limit:
            self._cursor = 0
            return Progress(rewritten, self._retire(bound))
        return Progress(rewritten, False)

    def _reencrypt_version(self, row: tuple[Any, ...], bound: int) -> int:
        """Rewrite a version's pieces under keys older than `bound` with the newest key; 1 when done, 0
        when the row changed meanwhile (a later pass sees it again, or it is gone)."""
        row_id, sse_key, inline, blobs, etag, parts_count = row
        whole_md5 = etag if parts_count is None and len(etag) == 32 else None
        with self._keys.writing() as (key_id, cipher):
            if blobs is None:
                plain = inline if not sse_key else self._keys.cipher(sse_key).decrypt_bytes(inline)
                _check_md5(plain, whole_md5, f"version row {row_id}")
                sealed = cipher.encrypt_bytes(plain)
                return int(
                    self._swap_version(row_id, inline, blobs, {"inline": sealed, "sse_key": key_id}, [])
                )
            segments: list[tuple[str, int, int | None]] = []
            written: list[str] = []
            try:
                for blob_id, size, old_key in _segments(blobs, sse_key):
                    if old_key is not None and old_key >= bound:
                        segments.append((blob_id, size, old_key))
                        continue
                    old_cipher = None if not old_key else self._keys.cipher(old_key)
                    with self.engine.exclusive() as db:
                        current = db.execute("SELECT blobs FROM versions WHERE id = ?", (row_id,)).fetchone()
                        if current is None or current[0] != blobs:
                            self._files.unlink(written)
                            return 0
                        # Opened under the lock, as a GET opens it: no delete can unlink it first.
                        reader = self._files.reader([(blob_id, size)], 0, size - 1, [old_cipher])
                    content = self._files.write(reader, cipher)
                    assert content.blob_id is not None
                    written.append(content.blob_id)
                    if len(segments) == 0 and whole_md5 is not None and parts_count is None:
                        _check_md5_hex(content.md5, whole_md5, f"version row {row_id}")
                    segments.append((content.blob_id, size, key_id))
                keys = [k for _, _, k in segments if k is not None]
                changes = {"blobs": orjson.dumps(segments), "sse_key": min(keys) if keys else key_id}
                if self._swap_version(row_id, inline, blobs, changes, written):
                    replaced = {b for b, _, _ in _segments(blobs, sse_key)} - {b for b, _, _ in segments}
                    self._files.unlink(replaced)
                    return 1
                return 0
            except BaseException:
                self._files.unlink(written)
                raise

    def _swap_version(
        self,
        row_id: int,
        inline: bytes | None,
        blobs: bytes | None,
        changes: dict[str, Any],
        written: list[str],
    ) -> bool:
        """Point version `row_id` at its re-encrypted content, if its content is still what was read; else
        remove the files `written` for it. A body stored in clear becomes SSE-S3 in its meta."""
        with self._tx() as db:
            current = db.execute(
                "SELECT inline, blobs, meta FROM versions WHERE id = ?", (row_id,)
            ).fetchone()
            if current is None or current[0] != inline or current[1] != blobs:
                self._files.unlink(written)
                return False
            meta = orjson.loads(current[2])
            meta.setdefault("e", SSE_S3)
            columns = ", ".join(f"{name} = ?" for name in changes)
            db.execute(
                f"UPDATE versions SET {columns}, meta = ? WHERE id = ?",
                (*changes.values(), orjson.dumps(meta), row_id),
            )
        return True

    def _reencrypt_part(self, part: tuple[Any, ...]) -> int:
        """Rewrite a part of an upload under the newest key; 1 when done, 0 when it changed meanwhile."""
        upload_id, number, blob_id, size, old_key, etag = part
        old_cipher = None if not old_key else self._keys.cipher(old_key)
        with self._keys.writing() as (key_id, cipher):
            with self.engine.exclusive() as db:
                if not db.execute(
                    "SELECT 1 FROM parts WHERE upload_id = ? AND number = ? AND blob_id = ?",
                    (upload_id, number, blob_id),
                ).fetchone():
                    return 0
                reader = self._files.reader([(blob_id, size)], 0, size - 1, [old_cipher])
            content = self._files.write(reader, cipher)
            assert content.blob_id is not None
            try:
                _check_md5_hex(content.md5, etag, f"part {number} of upload {upload_id}")
                with self._tx() as db:
                    swapped = db.execute(
                        "UPDATE parts SET blob_id = ?, key_id = ? "
                        "WHERE upload_id = ? AND number = ? AND blob_id = ?",
                        (content.blob_id, key_id, upload_id, number, blob_id),
                    ).rowcount
            except BaseException:
                self._files.unlink([content.blob_id])
                raise
        self._files.unlink([blob_id] if swapped else [content.blob_id])
        return swapped

    def _retire(self, bound: int) -> bool:
        """Retire the keys below `bound` if nothing uses them any more; whether they are retired."""
        with self.engine.exclusive() as db:
            if db.execute("SELECT 1 FROM versions WHERE sse_key < ? LIMIT 1", (bound,)).fetchone():
                return False
            if db.execute("SELECT 1 FROM parts WHERE key_id < ? LIMIT 1", (bound,)).fetchone():
                return False
            if self._keys.leased_below(bound):
                return False
            # The commits that moved every body off the old keys reach the database file before the keys
            # go (under the default durability a commit is only in the WAL, not yet fsynced).
            db.execute("PRAGMA wal_checkpoint(FULL)").fetchall()
            self._keys.retire_below(bound)
        return True

    # Internals.

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self.engine.exclusive():
            self._queued = False
            with self.engine.transaction("a write") as db:
                yield db
            queued, self._queued = self._queued, False
        if queued:
            self._notify()

    def _take_sealed(
        self, version: ObjectVersion, body: Body, seal: Seal
    ) -> tuple[Content, list[tuple[str, int]]]:
        """An SSE-C replica's sealed content, one blob file per piece as the source stored it (its IV and
        ciphertext, written as they are: the key is not here to encrypt or decrypt them)."""
        sizes = [piece - IV_BYTES for piece in seal.pieces]
        if not sizes or min(sizes) < 0 or sum(sizes) != version.size:
            raise InvalidRequest(f"the replica's sealed pieces do not hold its {version.size} bytes")
        chunks = _Exact(body)
        written: list[str] = []
        try:
            for piece in seal.pieces:
                blob_id = self._files.write(chunks.take(piece)).blob_id
                assert blob_id is not None
                written.append(blob_id)
            chunks.end()
        except BaseException:
            self._files.unlink(written)
            raise
        return Content(size=version.size, md5=version.etag), list(zip(written, sizes, strict=True))

    def _encrypting(
        self, customer_key: CustomerKey | None
    ) -> AbstractContextManager[tuple[int | None, BlobCipher]]:
        """The SSE-S3 key id of a body to write (None: the customer's key) and its cipher; the key is
        leased until the block ends, so end it after the row that names the key has committed."""
        if customer_key is not None:
            return nullcontext((None, BlobCipher(customer_key.key)))
        return self._keys.writing()

    def _unlock(
        self, meta: Mapping[str, Any], customer_key: CustomerKey | None, key_ids: Sequence[int | None]
    ) -> list[BlobCipher | None]:
        """The ciphers of a version's pieces of content, whose SSE-S3 keys are `key_ids` (None: in
        clear), once its SSE-C key checks out; `meta` is the version row's `meta` column, parsed."""
        if meta.get("e", "") == SSE_C:
            proof = KeyProof.from_json(meta.get("k"))
            assert proof is not None
            proof.check(customer_key)
            assert customer_key is not None
            return [BlobCipher(customer_key.key)] * len(key_ids)
        refuse_key(customer_key)
        return [None if not kid else self._keys.cipher(kid) for kid in key_ids]

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()

    def _state(self, name: str) -> BucketState:
        state = self._buckets.get(name)
        if state is None:
            raise NoSuchBucket(f"The specified bucket does not exist: {name!r}")
        return state

    def _upload(self, db: sqlite3.Connection, bucket: str, key: str, upload_id: str) -> tuple[str, bytes]:
        self._state(bucket)
        row = db.execute(
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

    def _insert(
        self,
        db: sqlite3.Connection,
        state: BucketState,
        key: str,
        *,
        content: Content | None,
        content_type: str,
        meta: dict[str, Any],
        segments: Sequence[tuple[Any, ...]] | None = None,
        parts_count: int | None = None,
        replica: ObjectVersion | None = None,
        replicate: bool = True,
    ) -> tuple[ObjectVersion, list[str]]:
        """Add a version (or a delete marker when `content` is None), its `meta` column as a dict (see
        metadata.meta_of); returns it and the blobs to unlink."""
        bucket = state.bucket
        marker = content is None
        tags = meta["t"]
        # A version of an unversioned (or suspended) bucket replaces the key's null version, which is not
        # its latest when versions came after it: one statement finds both rows.
        replaces_null = replica is None and bucket.versioning != "Enabled"
        latest = old = None
        for row in db.execute(_LATEST_AND_NULL if replaces_null else _LATEST, (bucket.name, key)):
            if row[2]:
                latest = row
            if replaces_null and row[3] == NULL_VERSION:
                old = row
        doomed: list[str] = []
        deleted = None
        status: ReplicationStatus | None
        if replica is not None:
            now = replica.last_modified_ms
            version_id = replica.version_id
            sort_id = VersionIds.parse(version_id) or VersionIds.at(now)
            is_latest = latest is None or sort_id > latest[1]
            status = "REPLICA"
        else:
            now = self._clock.now_ms()
            sort_id = self._ids.new(now)
            if latest is not None and sort_id <= latest[1]:
                sort_id = VersionIds.after(latest[1])
            is_latest = True
            version_id = NULL_VERSION if replaces_null else sort_id
            status = None
            enabled = bucket.versioning == "Enabled" and replicate
            replication = state.replication if enabled else None
            if replication is not None and replication.rule_for(key, tags, delete_marker=marker) is not None:
                status = "PENDING"
                self._queued = True
            if old is not None:
                doomed = blob_ids(old[4])
                db.execute("DELETE FROM versions WHERE id = ?", (old[0],))
                deleted = old[0]
        # An unversioned overwrite deleted the latest row itself just above: no flag left to clear.
        if is_latest and latest is not None and latest[0] != deleted:
            db.execute("UPDATE versions SET latest = 0 WHERE id = ?", (latest[0],))
        key_id = None if content is None else content.key_id
        if segments is None and content is not None and content.blob_id is not None:
            segments = [(content.blob_id, content.size) + (() if key_id is None else (key_id,))]
        db.execute(
            "INSERT INTO versions (bucket, key, sort_id, version_id, latest, marker, last_modified_ms, size, "
            "etag, content_type, meta, replication_status, parts_count, blobs, inline, sse_key) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                orjson.dumps(meta),
                status,
                parts_count,
                None if segments is None else orjson.dumps(segments),
                None if content is None or segments is not None else (content.inline or b""),
                key_id,
            ),
        )
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
            metadata=meta["m"],
            headers=meta["h"],
            tags=tags,
            replication_status=status,
            parts_count=parts_count,
            **extras(meta),
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
        return blob_ids(row[3])

    def _row(
        self, db: sqlite3.Connection, bucket: str, key: str, version_id: str | None, *, body: bool
    ) -> tuple[tuple[Any, ...], bytes | None, bytes | None]:
        self._state(bucket)
        extra = ", inline, blobs" if body else ""
        if version_id is None:
            row = db.execute(
                f"SELECT {VERSION_COLUMNS}{extra} FROM versions WHERE bucket = ? AND key = ? AND latest = 1",
                (bucket, key),
            ).fetchone()
            if row is None:
                raise NoSuchKey(f"The specified key does not exist: {key!r}")
            if row[6]:
                raise NoSuchKey(
                    f"The specified key does not exist: {key!r}", delete_marker=True, version_id=row[4]
                )
        else:
            row = db.execute(
                f"SELECT {VERSION_COLUMNS}{extra} FROM versions "
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
                    last_modified_ms=int(row[7]),
                )
        if body:
            return row[:-2], row[-2], row[-1]
        return row, None, None


def _sealing(customer_key: CustomerKey | None) -> dict[str, Any]:
    """What a version's or upload's `meta` records of how its content is encrypted."""
    if customer_key is None:
        return {"e": SSE_S3}
    return {"e": SSE_C, "k": KeyProof.of(customer_key).to_json()}


def _check_md5(plain: bytes, wanted: str | None, what: str) -> None:
    if wanted is not None:
        _check_md5_hex(hashlib.md5(plain, usedforsecurity=False).hexdigest(), wanted, what)


def _check_md5_hex(got: str, wanted: str | None, what: str) -> None:
    """Re-encryption stops rather than store what its old key did not give back (a wrong key, a bad disk)."""
    if wanted is not None and got != wanted.lower():
        raise StorageError(f"object store: {what} does not read back as its MD5 {wanted}; left as it was")


def _segments(blobs: bytes | None, sse_key: int | None) -> list[tuple[str, int, int | None]]:
    """A version's `blobs` as (blob id, size, SSE-S3 key id): a segment of two members is under the
    row's `sse_key` (one from before the keyring, or under a customer's key)."""
    if not blobs:
        return []
    return [(str(s[0]), int(s[1]), int(s[2]) if len(s) > 2 else sse_key) for s in orjson.loads(blobs)]


def _part_sizes(version: ObjectVersion, blobs: bytes | None, meta: Mapping[str, Any]) -> list[int] | None:
    """The sizes of a multipart version's parts, None when not known.

    A completed upload keeps one segment per part; a replica's content arrives as one piece, with the
    source's part sizes in its `meta` ("s") when the source sent them.
    """
    if version.parts_count is None:
        return None
    segments = [size for _, size, _ in _segments(blobs, None)]
    if len(segments) == version.parts_count:
        return segments
    sizes = meta.get("s")
    if isinstance(sizes, list) and len(sizes) == version.parts_count:
        return [int(n) for n in sizes]
    return None


class _Exact:
    """A body cut into pieces of given sizes; InvalidRequest when it is shorter or longer than them."""

    def __init__(self, body: Body) -> None:
        self._chunks = iter((bytes(body),) if isinstance(body, bytes | bytearray | memoryview) else body)
        self._held = b""

    def take(self, size: int) -> Iterator[bytes]:
        while size > 0:
            if not self._held:
                self._held = self._next()
                if not self._held:
                    raise InvalidRequest("the replica's sealed content is shorter than its pieces")
            piece, self._held = self._held[:size], self._held[size:]
            size -= len(piece)
            yield piece

    def end(self) -> None:
        if self._held or self._next():
            raise InvalidRequest("the replica's sealed content is longer than its pieces")

    def _next(self) -> bytes:
        for chunk in self._chunks:
            if chunk:
                return bytes(chunk)
        return b""
