"""The object-store ports: Buckets (with their configurations), Objects (versioned), MultipartUploads and
ReplicationQueue, each used alone by whoever needs only it; ObjectStore is all four (what adapters implement).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from bookstore.objectstore.checksums import Algorithm, Checksum, ChecksumType
from bookstore.objectstore.configs import ReplicationConfiguration, WebsiteConfiguration
from bookstore.objectstore.encryption import CustomerKey, KeyProof
from bookstore.objectstore.errors import InvalidBucketName, InvalidRequest, KeyTooLongError
from bookstore.ports import Outcome

ReplicationStatus = Literal["PENDING", "COMPLETED", "FAILED", "REPLICA"]
VersioningStatus = Literal["", "Enabled", "Suspended"]
# (first, last) byte positions, both inclusive; (first, None) runs to the end; (None, n) is the last n bytes.
ByteRange = tuple[int | None, int | None]
Body = bytes | Iterable[bytes]

NULL_VERSION = "null"
DEFAULT_CONTENT_TYPE = "binary/octet-stream"
MAX_KEY_BYTES = 1024
# The standard headers S3 stores with an object and returns on GET and HEAD, by their canonical names.
STORED_HEADERS = ("Cache-Control", "Content-Disposition", "Content-Encoding", "Content-Language", "Expires")

# Matched whole (fullmatch): "$" alone would let a name end in a newline.
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_ADDRESS = re.compile(r"\d+\.\d+\.\d+\.\d+")


def check_bucket_name(name: str) -> str:
    """`name` when it is a valid S3 bucket name (3-63 of a-z 0-9 . -), else InvalidBucketName."""
    if (
        not _BUCKET_NAME.fullmatch(name)
        or ".." in name
        or _IP_ADDRESS.fullmatch(name)
        or name.startswith("xn--")
    ):
        raise InvalidBucketName(f"The specified bucket is not valid: {name!r}")
    return name


def check_key(key: str) -> str:
    """`key` when it is a valid object key (1 to 1,024 bytes of UTF-8), else KeyTooLongError."""
    if not key:
        raise KeyTooLongError("An object key must not be empty")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise KeyTooLongError("Your key is too long: at most 1024 bytes of UTF-8")
    return key


@dataclass(frozen=True)
class Bucket:
    """A bucket: its name (one namespace across regions), home region, creation time, versioning state."""

    name: str
    region: str
    created_ms: int
    versioning: VersioningStatus = ""


@dataclass(frozen=True)
class ObjectVersion:
    """One version of an object, or a delete marker.

    `version_id` is "null" for versions written while versioning was off or suspended. `etag` is the hex
    MD5 of the content, or for multipart uploads the MD5 of the parts' MD5s followed by "-N"; no quotes.
    Versions that come from a listing carry key, version id, etag, size, times and flags only: content
    type, metadata, headers, tags and replication status may be left empty there.
    """

    bucket: str
    key: str
    version_id: str
    last_modified_ms: int
    etag: str = ""
    size: int = 0
    is_delete_marker: bool = False
    is_latest: bool = True
    content_type: str = DEFAULT_CONTENT_TYPE
    # User metadata (x-amz-meta-NAME), names in lower case.
    metadata: Mapping[str, str] = field(default_factory=dict)
    # Stored standard headers (STORED_HEADERS), by canonical name.
    headers: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    replication_status: ReplicationStatus | None = None
    # Why replication FAILED (or is being retried); never shown by S3, shown by `bookstore status`.
    replication_reason: str = ""
    parts_count: int | None = None
    # The checksum verified (or computed) when the version was written; None for older versions.
    checksum: Checksum | None = None
    # How it is encrypted at rest: "AES256" (SSE-S3), "SSE-C", or "" (written before encryption).
    encryption: str = ""
    # The base64 MD5 of its SSE-C key (S3 returns it); never the key.
    sse_key_md5: str = ""


@dataclass
class ObjectContent:
    """A version and (part of) its content. `body` yields the bytes of `first`..`last` (inclusive).

    A list or tuple `body` is already in memory; any other iterable streams from storage and holds an
    open file until exhausted or garbage-collected.
    """

    version: ObjectVersion
    body: Iterable[bytes]
    first: int
    last: int
    partial: bool = False

    def read(self) -> bytes:
        return b"".join(self.body)


@dataclass(frozen=True)
class Deleted:
    """What a delete did: the delete marker it created, or the version it removed (None when unversioned)."""

    version_id: str | None
    delete_marker: bool


@dataclass(frozen=True)
class ObjectPage:
    """A page of ListObjects: latest versions that are not delete markers, in UTF-8 byte order of keys.

    `next_token` resumes after this page; it is None on the last page. The versions carry key, ETag, size
    and time; their version_id may be empty (S3 does not list it).
    """

    objects: list[ObjectVersion]
    common_prefixes: list[str]
    next_token: str | None = None

    @property
    def is_truncated(self) -> bool:
        return self.next_token is not None


@dataclass(frozen=True)
class VersionPage:
    """A page of ListObjectVersions: versions and delete markers by key, newest first within a key."""

    versions: list[ObjectVersion]
    common_prefixes: list[str]
    next_key_marker: str | None = None
    next_version_id_marker: str | None = None

    @property
    def is_truncated(self) -> bool:
        return self.next_key_marker is not None


@dataclass(frozen=True)
class StartedUpload:
    """A multipart upload in progress: its key, id and when it was initiated."""

    key: str
    upload_id: str
    initiated_ms: int


@dataclass(frozen=True)
class Part:
    """An uploaded part of a multipart upload; `etag` is its hex MD5, no quotes."""

    number: int
    etag: str
    size: int
    last_modified_ms: int
    # The part's base64 checksum of its upload's algorithm (or the default one), "" when it has none.
    checksum: str = ""
    checksum_algorithm: str = ""


@dataclass(frozen=True)
class Seal:
    """How an SSE-C version's content is stored, which travels with its replicas (S3 replicates SSE-C
    objects): the proof of its key (salt, HMAC, MD5; never the key), and the stored size of each piece of
    the sealed content, in the store's own layout (the local store: each part's IV and ciphertext)."""

    proof: KeyProof
    pieces: tuple[int, ...]


def check_replica_parts(version: ObjectVersion, parts: Sequence[Part]) -> None:
    """InvalidRequest unless `parts` (for put_replica) are none, or the parts of `version`: as many as its
    parts count, their sizes adding up to its size."""
    if not parts:
        return
    if version.is_delete_marker or version.parts_count != len(parts):
        raise InvalidRequest(
            f"the replica names {len(parts)} parts; its version has {version.parts_count or 'no'} parts"
        )
    if any(part.size < 0 for part in parts) or sum(part.size for part in parts) != version.size:
        raise InvalidRequest(f"the replica's part sizes do not add up to its size, {version.size} bytes")


class Buckets(Protocol):
    """Buckets and their configurations (versioning, replication, website, named ones): the bucket side."""

    region: str

    def create_bucket(self, name: str) -> Bucket: ...

    def get_bucket(self, name: str) -> Bucket: ...

    def list_buckets(self) -> list[Bucket]: ...

    def delete_bucket(self, name: str) -> None: ...

    def set_versioning(self, name: str, status: Literal["Enabled", "Suspended"]) -> None: ...

    def put_replication(self, name: str, config: ReplicationConfiguration) -> ReplicationConfiguration:
        """Validate and store; returns the stored configuration (rule IDs filled in).

        Raises InvalidRequest unless versioning is Enabled on the bucket.
        """
        ...

    def get_replication(self, name: str) -> ReplicationConfiguration: ...

    def delete_replication(self, name: str) -> None: ...

    def put_website(self, name: str, config: WebsiteConfiguration) -> None: ...

    def get_website(self, name: str) -> WebsiteConfiguration: ...

    def delete_website(self, name: str) -> None: ...

    def put_config(self, name: str, kind: str, document: str) -> None:
        """Store the bucket's configuration `kind` (e.g. "policy", "cors", "lifecycle"), replacing it.

        `document` is the configuration in its checked, canonical form (the S3 API validates it first);
        the store keeps it as given and forgets it with the bucket. Configurations are per bucket and
        never replicated (S3 does not replicate them either).
        """
        ...

    def get_config(self, name: str, kind: str) -> str | None:
        """The bucket's configuration `kind` as stored, or None when it has none (NoSuchBucket if absent)."""
        ...

    def delete_config(self, name: str, kind: str) -> None:
        """Forget the bucket's configuration `kind`; nothing happens when it has none."""
        ...


class Objects(Protocol):
    """Versioned objects in buckets: write, read, delete, tag and list them."""

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
        """Write a version, with the `checksum` the request verified; encrypted with `customer_key`
        (SSE-C) when given, else SSE-S3."""
        ...

    def get_object(
        self,
        bucket: str,
        key: str,
        *,
        version_id: str | None = None,
        byte_range: ByteRange | None = None,
        customer_key: CustomerKey | None = None,
    ) -> ObjectContent:
        """The version (latest by default) and its bytes; an unsatisfiable range raises InvalidRange.

        An SSE-C version needs its key (InvalidRequest without, AccessDenied when wrong); any other
        refuses one (InvalidRequest). So does head_object.
        """
        ...

    def head_object(
        self, bucket: str, key: str, *, version_id: str | None = None, customer_key: CustomerKey | None = None
    ) -> ObjectVersion: ...

    def part_range(
        self, bucket: str, key: str, number: int, *, version_id: str | None = None
    ) -> tuple[int, int] | None:
        """First and last byte of part `number` of a multipart version (GetObject's partNumber).

        None when the store does not know where its parts lie (a replica whose source sent no part
        sizes); the caller has checked that the version has that many parts.
        """
        ...

    def delete_object(
        self, bucket: str, key: str, *, version_id: str | None = None, replicate: bool = True
    ) -> Deleted:
        """Delete (see ObjectStore); `replicate=False` never queues the delete marker it may write.

        Lifecycle expiration writes its markers so: S3 does not replicate them.
        """
        ...

    def put_tags(
        self, bucket: str, key: str, tags: Mapping[str, str], *, version_id: str | None = None
    ) -> str:
        """Replace the tags of a version (latest by default) without making a new one; returns its id."""
        ...

    def list_objects(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str = "",
        start_after: str = "",
        token: str | None = None,
        max_keys: int = 1000,
    ) -> ObjectPage: ...

    def list_versions(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str = "",
        key_marker: str = "",
        version_id_marker: str = "",
        max_keys: int = 1000,
    ) -> VersionPage: ...


class MultipartUploads(Protocol):
    """Multipart uploads: an object written in parts, then assembled into one version."""

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
        """Start a multipart upload; returns its upload id. With `checksum`, every part must carry one of
        that algorithm, and the object's is composed from them; with `customer_key`, every part must
        be sent with that key (SSE-C)."""
        ...

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
        """Store part `number` (1..10000), replacing an earlier part of that number.

        A `copied` part (UploadPartCopy) gets its upload's checksum computed as it is stored.
        """
        ...

    def list_parts(self, bucket: str, key: str, upload_id: str) -> list[Part]: ...

    def completed_parts(self, bucket: str, key: str, *, version_id: str | None = None) -> list[Part]:
        """The parts a version was completed from, in order: number, size and checksum (ETag empty).

        [] for a version not written by a multipart upload, or whose parts are not known (a replica
        whose source sent none).
        """
        ...

    def complete_upload(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        parts: Sequence[tuple[int, str]],
        *,
        expected: Checksum | None = None,
    ) -> ObjectVersion:
        """Assemble the (number, etag) parts, in that order, into a new version of the object.

        With `expected` (the checksum the client gives of the whole object), BadDigest and nothing
        written unless the upload's checksum is that one (checksums.check_expected); a store whose
        engine keeps its own checksums (S3) leaves the check to it.
        """
        ...

    def abort_upload(self, bucket: str, key: str, upload_id: str) -> None: ...

    def uploads_started_before(self, bucket: str, before_ms: int) -> list[tuple[str, str]]:
        """(key, upload id) of the bucket's multipart uploads started before `before_ms`, by key."""
        ...

    def list_uploads(self, bucket: str, prefix: str = "") -> list[StartedUpload]:
        """The bucket's multipart uploads in progress under `prefix`: by key, then oldest first."""
        ...


@dataclass(frozen=True)
class StatusChange:
    """One version's new replication status (and its reason), for `set_replication_statuses`."""

    bucket: str
    key: str
    version_id: str
    status: ReplicationStatus
    reason: str = ""


@dataclass(frozen=True)
class Replica:
    """One replica for `put_replicas`: what `put_replica` takes, its content whole (a sealed one's as
    `read_sealed` gave it), with a multipart version's `parts` and an SSE-C version's `seal`."""

    version: ObjectVersion
    body: bytes
    parts: tuple[Part, ...] = ()
    seal: Seal | None = None


class ReplicationQueue(Protocol):
    """What replication needs of a store beyond reads: the PENDING queue, statuses, and replica writes."""

    def put_replica(
        self, version: ObjectVersion, body: Body, parts: Sequence[Part] = (), seal: Seal | None = None
    ) -> ObjectVersion:
        """Write `version` (a version or delete marker from another store) with its id, times and metadata.

        `parts`: the parts a multipart version was completed from (sizes and checksums, as the source's
        `completed_parts`), kept so that the replica answers partNumber reads and lists its parts as
        the source does; () when the source did not send them (then neither is known here).
        An SSE-C version comes with its `seal` and `body` is its sealed content (`read_sealed`), kept as
        it is: it is read with the customer's key, as at the source (InvalidRequest without a seal).
        """
        ...

    def read_sealed(self, bucket: str, key: str, version_id: str) -> tuple[Seal, Iterable[bytes]]:
        """An SSE-C version's seal and its content as stored (ciphertext: its key is never here), for its
        replicas; InvalidRequest for a version that is not SSE-C."""
        ...

    def put_replicas(self, replicas: Sequence[Replica]) -> list[Outcome]:
        """`put_replica` of each replica (its version, content, parts and seal) in order, each
        all-or-nothing, committed together: an Outcome per replica, its written version or the error
        that refused it alone."""
        ...

    def set_replication_status(
        self, bucket: str, key: str, version_id: str, status: ReplicationStatus, reason: str = ""
    ) -> None: ...

    def set_replication_statuses(self, changes: Sequence[StatusChange]) -> list[Outcome]:
        """`set_replication_status` of each change, committed together: an Outcome per change (its error,
        such as NoSuchVersion, affects it alone)."""
        ...

    def pending_replications(self, *, limit: int = 100) -> list[ObjectVersion]: ...


class ObjectStore(Buckets, Objects, MultipartUploads, ReplicationQueue, Protocol):
    """Buckets of versioned objects, as S3 keeps them, plus what replication needs: every narrow port.

    Contract, kept by every adapter (tests/contract/test_objectstore.py proves it):
    - Errors are the S3 errors of bookstore.objectstore.errors: NoSuchBucket, NoSuchKey, NoSuchVersion,
      NoSuchUpload, BucketAlreadyOwnedByYou, BucketNotEmpty, InvalidBucketName, KeyTooLongError,
      InvalidRange, InvalidPart, InvalidPartOrder, EntityTooSmall, MethodNotAllowed (GET/HEAD of a
      version that is a delete marker), ReplicationConfigurationNotFoundError,
      NoSuchWebsiteConfiguration, InvalidArgument/InvalidRequest/MalformedXML for refused configurations;
      engine failures are StorageError; what an engine does by itself is NotSupported (a StorageError).
    - Keys are any text of 1 to 1,024 UTF-8 bytes (`..`, `%2F`, unicode included) and come back exactly.
    - Buckets are created in the store's `region`. Deleting a bucket that holds any version or delete
      marker raises BucketNotEmpty.
    - Versioning "" (never enabled) and "Suspended" write the "null" version, replacing the previous null
      version; "Enabled" adds a version with a new id. A delete without version id adds a delete marker
      when versioning is Enabled (a "null" marker when Suspended) and removes the object when never
      enabled. A delete with a version id removes that version for good (absent ids: no-op) and never
      creates a marker. The latest version is the newest; a latest delete marker hides the key
      (NoSuchKey with `delete_marker` set).
    - Once put_object, complete_upload or put_replica has returned, the version is durable (survives kill
      -9 of the process) and visible; a write that did not return is never partly visible.
    - Listings are ordered by the UTF-8 bytes of keys; pages hold at most `max_keys` entries (keys plus
      common prefixes) and resume from their token or markers.
    - Multipart: parts other than the last are at least 5 MiB (EntityTooSmall); completing needs the parts
      in ascending order (InvalidPartOrder) with their ETags (InvalidPart); the ETag is the MD5 of the
      parts' binary MD5s, "-N". Complete and abort of an unknown upload raise NoSuchUpload.
    - Named configurations (`put_config`): stored as given per bucket, None when absent, gone with the
      bucket. `uploads_started_before` lists (key, upload id) by key. A delete with `replicate=False`
      never queues its delete marker.
    - Replication state: a version written into a bucket whose replication configuration has an enabled
      rule matching it (delete markers only where the rule replicates them) starts PENDING, in the same
      atomic step as the write; `put_replica` writes a version with the given id, times, metadata and
      ETag, status REPLICA, and is idempotent; `set_replication_status` changes only the status and
      reason; `put_replicas` and `set_replication_statuses` do the same for many at once, each one
      refused alone (its Outcome carries the error) and the others written together;
      `pending_replications` lists PENDING versions oldest first. Deleting a version by id never
      queues anything.
    """

    # True when calls on small objects return in well under a millisecond (no network round trip), so the
    # HTTP layer may call them on its event loop rather than in a worker thread.
    runs_inline: bool
