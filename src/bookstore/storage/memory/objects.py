"""The ObjectStore port in memory: the fake beside the port, for tests, kept to the same contract.

It keeps what LocalObjectStore keeps (buckets with their configurations, versions newest first per key,
multipart uploads, replication statuses) in dictionaries under one lock, and nothing survives the
process. tests/contract/test_objectstore.py runs against it with the real adapters.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

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
from bookstore.objectstore.listing import common_prefix, page_token, resolve_range, token_position
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
from bookstore.ports import Clock, Outcome

MIN_PART_SIZE = 5 * 1024 * 1024
_MAX_PART_NUMBER = 10_000
_STATUSES = ("PENDING", "COMPLETED", "FAILED", "REPLICA")


@dataclass
class _BucketState:
    bucket: Bucket
    replication: ReplicationConfiguration | None = None
    website: WebsiteConfiguration | None = None
    configs: dict[str, str] = field(default_factory=dict)


@dataclass
class _Stored:
    """One version and its bytes; `order` sorts versions of a key (newest last), `seq` is write order."""

    version: ObjectVersion
    data: bytes
    order: tuple[int, str]
    seq: int
    # The size of each part of a completed multipart upload (None: written whole).
    part_sizes: tuple[int, ...] | None = None
    # The proof of its SSE-C key (the fake keeps bytes in clear, but checks keys as the real stores do).
    proof: KeyProof | None = None
    # The parts it was completed from (multipart uploads).
    parts: tuple[Part, ...] = ()


@dataclass
class _Upload:
    bucket: str
    key: str
    content_type: str
    metadata: dict[str, str]
    headers: dict[str, str]
    tags: dict[str, str]
    parts: dict[int, tuple[Part, bytes]] = field(default_factory=dict)
    created_ms: int = 0
    checksum: tuple[Algorithm, ChecksumType] | None = None
    proof: KeyProof | None = None


def _bytes(body: Body) -> bytes:
    return body if isinstance(body, bytes) else b"".join(body)


class MemoryObjectStore:
    """The ObjectStore port in memory (see the module); `runs_inline`: every call is quick."""

    runs_inline = True

    def __init__(self, region: str, clock: Clock, *, min_part_size: int = MIN_PART_SIZE) -> None:
        self.region = region
        self._clock = clock
        self._min_part_size = min_part_size
        self._lock = threading.RLock()
        self._buckets: dict[str, _BucketState] = {}
        # (bucket, key) -> versions, oldest first.
        self._versions: dict[tuple[str, str], list[_Stored]] = {}
        self._uploads: dict[str, _Upload] = {}
        self._seq = itertools.count(1)
        self._listeners: list[Callable[[], None]] = []

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback` (in the writing thread) after every write that made a version PENDING."""
        self._listeners.append(callback)

    # Buckets.

    def create_bucket(self, name: str) -> Bucket:
        check_bucket_name(name)
        with self._lock:
            if name in self._buckets:
                raise BucketAlreadyOwnedByYou(f"You already own the bucket {name!r}")
            bucket = Bucket(name=name, region=self.region, created_ms=self._clock.now_ms())
            self._buckets[name] = _BucketState(bucket)
            return bucket

    def get_bucket(self, name: str) -> Bucket:
        return self._state(name).bucket

    def list_buckets(self) -> list[Bucket]:
        with self._lock:
            return sorted((s.bucket for s in self._buckets.values()), key=lambda b: b.name)

    def delete_bucket(self, name: str) -> None:
        with self._lock:
            self._state(name)
            if any(b == name and versions for (b, _), versions in self._versions.items()):
                raise BucketNotEmpty(f"The bucket {name!r} you tried to delete is not empty")
            for upload_id in [u for u, up in self._uploads.items() if up.bucket == name]:
                del self._uploads[upload_id]
            del self._buckets[name]

    def set_versioning(self, name: str, status: Literal["Enabled", "Suspended"]) -> None:
        if status not in ("Enabled", "Suspended"):
            raise MalformedXML(f"versioning Status must be Enabled or Suspended, not {status!r}")
        with self._lock:
            state = self._state(name)
            if status == "Suspended" and state.replication is not None:
                raise InvalidBucketState(
                    "Versioning cannot be suspended on a bucket with a replication configuration"
                )
            state.bucket = replace(state.bucket, versioning=status)

    def put_replication(self, name: str, config: ReplicationConfiguration) -> ReplicationConfiguration:
        config = config.validate(source_bucket=name)
        with self._lock:
            state = self._state(name)
            if state.bucket.versioning != "Enabled":
                raise InvalidRequest(
                    "Versioning must be 'Enabled' on the bucket to apply a replication configuration"
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
        with self._lock:
            self._state(name).replication = None

    def put_website(self, name: str, config: WebsiteConfiguration) -> None:
        config = config.validate()
        with self._lock:
            self._state(name).website = config

    def get_website(self, name: str) -> WebsiteConfiguration:
        config = self._state(name).website
        if config is None:
            raise NoSuchWebsiteConfiguration(f"The bucket {name!r} has no website configuration")
        return config

    def delete_website(self, name: str) -> None:
        with self._lock:
            self._state(name).website = None

    def put_config(self, name: str, kind: str, document: str) -> None:
        with self._lock:
            self._state(name).configs[kind] = document

    def get_config(self, name: str, kind: str) -> str | None:
        with self._lock:
            return self._state(name).configs.get(kind)

    def delete_config(self, name: str, kind: str) -> None:
        with self._lock:
            self._state(name).configs.pop(kind, None)

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
        data = _bytes(body)
        proof = None if customer_key is None else KeyProof.of(customer_key)
        template = ObjectVersion(
            bucket=bucket,
            key=key,
            version_id="",
            last_modified_ms=0,
            etag=hashlib.md5(data, usedforsecurity=False).hexdigest(),
            size=len(data),
            content_type=content_type or DEFAULT_CONTENT_TYPE,
            metadata=dict(metadata or {}),
            headers=dict(headers or {}),
            tags=dict(tags or {}),
            checksum=checksum,
            encryption=SSE_S3 if proof is None else SSE_C,
            sse_key_md5="" if proof is None else proof.md5,
        )
        return self._write(template, data, proof=proof)

    def get_object(
        self,
        bucket: str,
        key: str,
        *,
        version_id: str | None = None,
        byte_range: ByteRange | None = None,
        customer_key: CustomerKey | None = None,
    ) -> ObjectContent:
        with self._lock:
            stored = self._find(bucket, key, version_id)
            _unlock(stored.proof, customer_key)
            version = self._shown(stored)
            first, last, partial = resolve_range(version.size, byte_range)
            return ObjectContent(version, (stored.data[first : last + 1],), first, last, partial)

    def head_object(
        self, bucket: str, key: str, *, version_id: str | None = None, customer_key: CustomerKey | None = None
    ) -> ObjectVersion:
        with self._lock:
            stored = self._find(bucket, key, version_id)
            _unlock(stored.proof, customer_key)
            return self._shown(stored)

    def part_range(
        self, bucket: str, key: str, number: int, *, version_id: str | None = None
    ) -> tuple[int, int] | None:
        with self._lock:
            sizes = self._find(bucket, key, version_id).part_sizes
        if sizes is None or number > len(sizes):
            return None
        first = sum(sizes[: number - 1])
        return first, first + sizes[number - 1] - 1

    def delete_object(
        self, bucket: str, key: str, *, version_id: str | None = None, replicate: bool = True
    ) -> Deleted:
        check_key(key)
        with self._lock:
            state = self._state(bucket)
            if version_id is None and state.bucket.versioning:
                marker = ObjectVersion(
                    bucket=bucket, key=key, version_id="", last_modified_ms=0, is_delete_marker=True
                )
                written = self._write(replace(marker, content_type=""), b"", replicate=replicate)
                return Deleted(written.version_id, True)
            target = NULL_VERSION if version_id is None else version_id
            versions = self._versions.get((bucket, key), [])
            found = next((s for s in versions if s.version.version_id == target), None)
            if found is None:
                return Deleted(version_id, False)
            versions.remove(found)
            if not versions:
                del self._versions[(bucket, key)]
            return Deleted(version_id, found.version.is_delete_marker)

    def put_tags(
        self, bucket: str, key: str, tags: Mapping[str, str], *, version_id: str | None = None
    ) -> str:
        with self._lock:
            stored = self._find(bucket, key, version_id)
            stored.version = replace(stored.version, tags=dict(tags))
            return stored.version.version_id

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
        floor = start_after if token is None else token_position(token)
        objects: list[ObjectVersion] = []
        prefixes: list[str] = []
        last_entry: str | None = None
        with self._lock:
            self._state(bucket)
            for key in self._keys(bucket, prefix, floor):
                latest = self._versions[(bucket, key)][-1]
                if latest.version.is_delete_marker:
                    continue
                common = common_prefix(key, prefix, delimiter)
                if common is not None and (common <= floor or (prefixes and prefixes[-1] == common)):
                    continue
                if len(objects) + len(prefixes) >= max_keys:
                    return ObjectPage(
                        objects, prefixes, None if last_entry is None else page_token(last_entry)
                    )
                if common is not None:
                    prefixes.append(common)
                    last_entry = common
                    continue
                objects.append(self._shown(latest))
                last_entry = key
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
            rows: list[_Stored] = []
            if key_marker and version_id_marker and common_prefix(key_marker, prefix, delimiter) is None:
                held = self._versions.get((bucket, key_marker), [])
                at = next((i for i, s in enumerate(held) if s.version.version_id == version_id_marker), None)
                if at is None:
                    # A marker is a position, not a row: its version may be gone since the last page.
                    at = _position(held, version_id_marker)
                rows += reversed(held[:at])
            for key in self._keys(bucket, prefix, key_marker):
                rows += reversed(self._versions[(bucket, key)])
            for stored in rows:
                key = stored.version.key
                common = common_prefix(key, prefix, delimiter)
                if common is not None and (common <= key_marker or (prefixes and prefixes[-1] == common)):
                    continue
                if len(versions) + len(prefixes) >= max_keys:
                    if prefixes and (not versions or prefixes[-1] > versions[-1].key):
                        return VersionPage(versions, prefixes, prefixes[-1], None)
                    return VersionPage(versions, prefixes, versions[-1].key, versions[-1].version_id)
                if common is not None:
                    prefixes.append(common)
                    continue
                versions.append(self._shown(stored))
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
        checksum: tuple[Algorithm, ChecksumType] | None = None,
        customer_key: CustomerKey | None = None,
    ) -> str:
        check_key(key)
        upload_id = secrets.token_urlsafe(32)
        with self._lock:
            self._state(bucket)
            self._uploads[upload_id] = _Upload(
                bucket,
                key,
                content_type or DEFAULT_CONTENT_TYPE,
                dict(metadata or {}),
                dict(headers or {}),
                dict(tags or {}),
                created_ms=self._clock.now_ms(),
                checksum=checksum,
                proof=None if customer_key is None else KeyProof.of(customer_key),
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
        upload = self._upload(bucket, key, upload_id)
        _unlock(upload.proof, customer_key)
        data = _bytes(body)
        if copied and upload.checksum is not None:
            kept = checksums.of(data, upload.checksum[0])
        else:
            kept = checksums.part_value(upload.checksum, checksum)
        part = Part(
            number,
            hashlib.md5(data, usedforsecurity=False).hexdigest(),
            len(data),
            self._clock.now_ms(),
            kept,
            checksums.part_algorithm(upload.checksum, kept),
        )
        with self._lock:
            self._upload(bucket, key, upload_id).parts[number] = (part, data)
        return part

    def list_parts(self, bucket: str, key: str, upload_id: str) -> list[Part]:
        with self._lock:
            upload = self._upload(bucket, key, upload_id)
            return [upload.parts[n][0] for n in sorted(upload.parts)]

    def completed_parts(self, bucket: str, key: str, *, version_id: str | None = None) -> list[Part]:
        with self._lock:
            return list(self._find(bucket, key, version_id).parts)

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
        with self._lock:
            self._state(bucket)
            upload = self._upload(bucket, key, upload_id)
            pieces: list[bytes] = []
            kept: list[tuple[str, int]] = []
            digest = hashlib.md5(usedforsecurity=False)
            for i, (number, etag) in enumerate(parts):
                held = upload.parts.get(number)
                if held is None or held[0].etag != etag.strip('"').lower():
                    raise InvalidPart(
                        f"Part {number} could not be found or its ETag does not match: upload it again"
                    )
                if i < len(parts) - 1 and held[0].size < self._min_part_size:
                    raise EntityTooSmall(
                        f"Part {number} is {held[0].size} bytes; every part but the last needs at least "
                        f"{self._min_part_size} bytes"
                    )
                pieces.append(held[1])
                kept.append((held[0].checksum, held[0].size))
                digest.update(bytes.fromhex(held[0].etag))
            data = b"".join(pieces)
            template = ObjectVersion(
                bucket=bucket,
                key=key,
                version_id="",
                last_modified_ms=0,
                etag=f"{digest.hexdigest()}-{len(parts)}",
                size=len(data),
                content_type=upload.content_type,
                metadata=upload.metadata,
                headers=upload.headers,
                tags=upload.tags,
                parts_count=len(parts),
                checksum=checksums.completed(upload.checksum, kept),
                encryption=SSE_S3 if upload.proof is None else SSE_C,
                sse_key_md5="" if upload.proof is None else upload.proof.md5,
            )
            checksum = template.checksum
            checksums.check_expected(expected, checksum)
            done = tuple(
                Part(
                    n,
                    "",
                    size,
                    0,
                    value if checksum else "",
                    checksum.algorithm if checksum and value else "",
                )
                for n, (value, size) in enumerate(kept, start=1)
            )
            version = self._write(
                template, data, proof=upload.proof, parts=done, part_sizes=tuple(len(p) for p in pieces)
            )
            del self._uploads[upload_id]
            return version

    def abort_upload(self, bucket: str, key: str, upload_id: str) -> None:
        with self._lock:
            self._state(bucket)
            self._upload(bucket, key, upload_id)
            del self._uploads[upload_id]

    def uploads_started_before(self, bucket: str, before_ms: int) -> list[tuple[str, str]]:
        with self._lock:
            self._state(bucket)
            found = [
                (u.key, i)
                for i, u in self._uploads.items()
                if u.bucket == bucket and u.created_ms < before_ms
            ]
        return sorted(found)

    def list_uploads(self, bucket: str, prefix: str = "") -> list[StartedUpload]:
        with self._lock:
            self._state(bucket)
            found = [
                StartedUpload(u.key, i, u.created_ms)
                for i, u in self._uploads.items()
                if u.bucket == bucket and u.key.startswith(prefix)
            ]
        return sorted(found, key=lambda u: (u.key, u.initiated_ms, u.upload_id))

    # Replication state.

    def put_replica(
        self, version: ObjectVersion, body: Body, parts: Sequence[Part] = (), seal: Seal | None = None
    ) -> ObjectVersion:
        check_key(version.key)
        self._state(version.bucket)
        check_replica_parts(version, parts)
        sealed = version.encryption == SSE_C and not version.is_delete_marker
        if sealed and seal is None:
            raise InvalidRequest("An SSE-C replica needs the seal of its content (a region from before?)")
        data = b"" if version.is_delete_marker else _bytes(body)
        # The fake's sealed content is its clear bytes, in pieces of its parts' sizes.
        if sealed and seal is not None and (sum(seal.pieces) != len(data) or len(data) != version.size):
            raise InvalidRequest(f"the replica's sealed pieces do not hold its {version.size} bytes")
        if (
            not sealed
            and not version.is_delete_marker
            and version.parts_count is None
            and len(version.etag) == 32
            and hashlib.md5(data, usedforsecurity=False).hexdigest() != version.etag.lower()
        ):
            raise BadDigest(f"the replica's content does not match its ETag {version.etag}")
        with self._lock:
            state = self._state(version.bucket)
            if state.bucket.versioning != "Enabled":
                raise InvalidRequest(
                    f"Versioning must be 'Enabled' on the destination bucket {version.bucket!r}"
                )
            held = self._versions.setdefault((version.bucket, version.key), [])
            for stored in held:
                if stored.version.version_id == version.version_id:
                    return self._shown(stored)
            written = replace(
                version,
                etag="" if version.is_delete_marker else version.etag,
                size=len(data),
                metadata=dict(version.metadata),
                headers=dict(version.headers),
                tags=dict(version.tags),
                replication_status="REPLICA",
                replication_reason="",
                encryption="" if version.is_delete_marker else SSE_C if sealed else SSE_S3,
                sse_key_md5=seal.proof.md5 if sealed and seal is not None else "",
            )
            kept = tuple(
                Part(n, "", part.size, 0, part.checksum, part.checksum_algorithm)
                for n, part in enumerate(parts, start=1)
            )
            stored = _Stored(
                written,
                data,
                (version.last_modified_ms, version.version_id),
                next(self._seq),
                part_sizes=tuple(part.size for part in kept) if kept else None,
                proof=seal.proof if sealed and seal is not None else None,
                parts=kept,
            )
            held.append(stored)
            held.sort(key=lambda s: s.order)
            return self._shown(stored)

    def read_sealed(self, bucket: str, key: str, version_id: str) -> tuple[Seal, Iterable[bytes]]:
        with self._lock:
            stored = self._find(bucket, key, version_id)
        if stored.proof is None:
            raise InvalidRequest(
                f"The version {version_id!r} of {key!r} is not encrypted with a customer key"
            )
        pieces = stored.part_sizes or (len(stored.data),)
        return Seal(stored.proof, tuple(pieces)), (stored.data,)

    def put_replicas(self, replicas: Sequence[Replica]) -> list[Outcome]:
        return [_outcome(self.put_replica, r.version, r.body, r.parts, r.seal) for r in replicas]

    def set_replication_statuses(self, changes: Sequence[StatusChange]) -> list[Outcome]:
        return [
            _outcome(self.set_replication_status, c.bucket, c.key, c.version_id, c.status, c.reason)
            for c in changes
        ]

    def set_replication_status(
        self, bucket: str, key: str, version_id: str, status: ReplicationStatus, reason: str = ""
    ) -> None:
        if status not in _STATUSES:
            raise InvalidArgument(f"unknown replication status {status!r}")
        with self._lock:
            self._state(bucket)
            found = next(
                (s for s in self._versions.get((bucket, key), []) if s.version.version_id == version_id), None
            )
            if found is None:
                raise NoSuchVersion(f"The version {version_id!r} of {key!r} does not exist")
            found.version = replace(found.version, replication_status=status, replication_reason=reason)
        if status == "PENDING":
            self._notify()

    def pending_replications(self, *, limit: int = 100) -> list[ObjectVersion]:
        with self._lock:
            pending = [
                s
                for held in self._versions.values()
                for s in held
                if s.version.replication_status == "PENDING"
            ]
            return [self._shown(s) for s in sorted(pending, key=lambda s: s.seq)[:limit]]

    # Internals.

    def _state(self, name: str) -> _BucketState:
        state = self._buckets.get(name)
        if state is None:
            raise NoSuchBucket(f"The specified bucket does not exist: {name!r}")
        return state

    def _upload(self, bucket: str, key: str, upload_id: str) -> _Upload:
        self._state(bucket)
        upload = self._uploads.get(upload_id)
        if upload is None or (upload.bucket, upload.key) != (bucket, key):
            raise NoSuchUpload(
                "The specified upload does not exist: the upload ID may be invalid, "
                "or the upload may have been aborted or completed"
            )
        return upload

    def _keys(self, bucket: str, prefix: str, after: str) -> Iterator[str]:
        """The keys of `bucket` that start with `prefix` and sort after `after`, in UTF-8 byte order."""
        keys = [
            k
            for (b, k), held in self._versions.items()
            if b == bucket and held and k.startswith(prefix) and k > after
        ]
        return iter(sorted(keys, key=lambda k: k.encode("utf-8", "surrogatepass")))

    def _find(self, bucket: str, key: str, version_id: str | None) -> _Stored:
        self._state(bucket)
        held = self._versions.get((bucket, key), [])
        if version_id is None:
            if not held:
                raise NoSuchKey(f"The specified key does not exist: {key!r}")
            latest = held[-1]
            if latest.version.is_delete_marker:
                raise NoSuchKey(
                    f"The specified key does not exist: {key!r}",
                    delete_marker=True,
                    version_id=latest.version.version_id,
                )
            return latest
        found = next((s for s in held if s.version.version_id == version_id), None)
        if found is None:
            raise NoSuchVersion(f"The specified version does not exist: {version_id!r} of {key!r}")
        if found.version.is_delete_marker:
            raise MethodNotAllowed(
                "The specified method is not allowed against this resource: a delete marker",
                delete_marker=True,
                version_id=version_id,
                last_modified_ms=found.version.last_modified_ms,
            )
        return found

    def _shown(self, stored: _Stored) -> ObjectVersion:
        held = self._versions.get((stored.version.bucket, stored.version.key), [])
        return replace(stored.version, is_latest=bool(held) and held[-1] is stored)

    def _write(
        self,
        template: ObjectVersion,
        data: bytes,
        *,
        replicate: bool = True,
        proof: KeyProof | None = None,
        parts: tuple[Part, ...] = (),
        part_sizes: tuple[int, ...] | None = None,
    ) -> ObjectVersion:
        """Add a version (or delete marker) as a new write: its id, time and replication status."""
        queued = False
        with self._lock:
            state = self._state(template.bucket)
            versioning = state.bucket.versioning
            held = self._versions.setdefault((template.bucket, template.key), [])
            now = self._clock.now_ms()
            seq = next(self._seq)
            # Newer than the latest whatever the clock says: ids sort by (time, sequence).
            ms = max([now] + [s.order[0] for s in held[-1:]])
            sort_id = f"{ms:013d}{seq:012d}{secrets.token_hex(4)}"
            version_id = sort_id if versioning == "Enabled" else NULL_VERSION
            status: ReplicationStatus | None = None
            replication = state.replication if versioning == "Enabled" and replicate else None
            if (
                replication is not None
                and replication.rule_for(template.key, template.tags, delete_marker=template.is_delete_marker)
                is not None
            ):
                status, queued = "PENDING", True
            if version_id == NULL_VERSION:
                held[:] = [s for s in held if s.version.version_id != NULL_VERSION]
            version = replace(
                template, version_id=version_id, last_modified_ms=now, replication_status=status
            )
            stored = _Stored(version, data, (ms, sort_id), seq, part_sizes, proof, parts)
            held.append(stored)
            shown = self._shown(stored)
        if queued:
            self._notify()
        return shown

    def _notify(self) -> None:
        for callback in self._listeners:
            callback()


def _position(held: list[_Stored], version_id: str) -> int:
    """How many of `held` (oldest first) sort before a version id that is no longer there.

    Ids of this store sort by time; another id (a gone null version, a replica's) has no known place,
    so the listing resumes with all of the key's remaining versions.
    """
    if version_id == NULL_VERSION or len(version_id) != len(held[0].order[1] if held else ""):
        return len(held)
    return sum(1 for s in held if s.order[1] < version_id)


def _unlock(proof: KeyProof | None, customer_key: CustomerKey | None) -> None:
    """Check the SSE-C key of a request against what a version or upload was stored with."""
    if proof is None:
        refuse_key(customer_key)
    else:
        proof.check(customer_key)


def _outcome(call: Callable[..., object], *args: object) -> Outcome:
    try:
        return Outcome(value=call(*args))
    except Exception as exc:
        return Outcome(error=exc)
