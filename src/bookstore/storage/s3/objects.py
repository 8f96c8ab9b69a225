"""S3ObjectStore: the ObjectStore port over S3 (or any S3-compatible service) through a boto3 client.

S3 runs replication by itself: it sets PENDING/COMPLETED/FAILED/REPLICA and copies versions with their
ids, which no client can do. So `put_replica`, `set_replication_status` and `pending_replications`
raise NotSupported here; the status S3 keeps is still read into ObjectVersion.replication_status.
Some answers cost extra requests because S3 does not return them with the call itself: a version's
time and tags after a write (HeadObject, GetObjectTagging), a bucket's region and versioning.
"""

from __future__ import annotations

import itertools
import json
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import IO, Any, Literal
from urllib.parse import urlencode

from botocore.exceptions import BotoCoreError, ClientError

from bookstore.domain.errors import StorageError
from bookstore.objectstore import encoded_words
from bookstore.objectstore.checksums import ALGORITHMS, Algorithm, Checksum, ChecksumType
from bookstore.objectstore.configs import ReplicationConfiguration, WebsiteConfiguration
from bookstore.objectstore.encryption import CustomerKey
from bookstore.objectstore.errors import (
    ERRORS_BY_CODE,
    AccessDenied,
    BucketAlreadyOwnedByYou,
    InvalidPartOrder,
    InvalidRange,
    InvalidRequest,
    MalformedXML,
    MethodNotAllowed,
    NoSuchBucket,
    NoSuchKey,
    NoSuchVersion,
    NotSupported,
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
    Replica,
    ReplicationStatus,
    Seal,
    StartedUpload,
    StatusChange,
    VersionPage,
    check_bucket_name,
    check_key,
)
from bookstore.ports import Outcome

_EAGER_READ = 1024 * 1024
# boto3 parameter names of the standard headers S3 stores with an object.
_HEADER_PARAMS = {
    "Cache-Control": "CacheControl",
    "Content-Disposition": "ContentDisposition",
    "Content-Encoding": "ContentEncoding",
    "Content-Language": "ContentLanguage",
    "Expires": "Expires",
}
_NOT_SUPPORTED = (
    "S3 replicates by itself: give the bucket a replication configuration and read x-amz-replication-status"
)


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _etag(value: str) -> str:
    return value.strip('"')


class S3ObjectStore:
    """The ObjectStore port over a boto3 S3 client; see the module docstring for what S3 does itself."""

    runs_inline = False

    def __init__(self, client: Any) -> None:
        self._client = client
        self.region: str = client.meta.region_name or "us-east-1"

    # Buckets.

    def create_bucket(self, name: str) -> Bucket:
        check_bucket_name(name)
        # us-east-1 answers 200 to a second create; the port promises BucketAlreadyOwnedByYou everywhere.
        if self._bucket_exists(name):
            raise BucketAlreadyOwnedByYou(f"You already own the bucket {name!r}")
        args: dict[str, Any] = {"Bucket": name}
        if self.region != "us-east-1":
            args["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        self._call(self._client.create_bucket, **args)
        return self.get_bucket(name)

    def get_bucket(self, name: str) -> Bucket:
        for bucket in self._call(self._client.list_buckets).get("Buckets", []):
            if bucket["Name"] == name:
                return self._bucket(name, _ms(bucket["CreationDate"]))
        raise NoSuchBucket(f"The specified bucket does not exist: {name!r}")

    def list_buckets(self) -> list[Bucket]:
        found = self._call(self._client.list_buckets).get("Buckets", [])
        return sorted((self._bucket(b["Name"], _ms(b["CreationDate"])) for b in found), key=lambda b: b.name)

    def delete_bucket(self, name: str) -> None:
        self._call(self._client.delete_bucket, Bucket=name)

    def set_versioning(self, name: str, status: Literal["Enabled", "Suspended"]) -> None:
        self._call(
            self._client.put_bucket_versioning, Bucket=name, VersioningConfiguration={"Status": status}
        )

    def put_replication(self, name: str, config: ReplicationConfiguration) -> ReplicationConfiguration:
        config = config.validate(source_bucket=name)
        status = self._call(self._client.get_bucket_versioning, Bucket=name).get("Status", "")
        if status != "Enabled":
            raise InvalidRequest(
                "Versioning must be 'Enabled' on the bucket to apply a replication configuration"
            )
        self._call(
            self._client.put_bucket_replication, Bucket=name, ReplicationConfiguration=config.to_json()
        )
        return config

    def get_replication(self, name: str) -> ReplicationConfiguration:
        found = self._call(self._client.get_bucket_replication, Bucket=name)
        return ReplicationConfiguration.from_json(found["ReplicationConfiguration"])

    def delete_replication(self, name: str) -> None:
        self._call(self._client.delete_bucket_replication, Bucket=name)

    def put_website(self, name: str, config: WebsiteConfiguration) -> None:
        config = config.validate()
        self._call(self._client.put_bucket_website, Bucket=name, WebsiteConfiguration=config.to_json())

    def get_website(self, name: str) -> WebsiteConfiguration:
        found = self._call(self._client.get_bucket_website, Bucket=name)
        found.pop("ResponseMetadata", None)
        return WebsiteConfiguration.from_json(found)

    def delete_website(self, name: str) -> None:
        self._call(self._client.delete_bucket_website, Bucket=name)

    # Named configurations: S3's own (S3 enforces them itself).

    def put_config(self, name: str, kind: str, document: str) -> None:
        put, _, _, param, _ = _native(kind)
        value: Any = document if kind == "policy" else json.loads(document)
        self._call(getattr(self._client, put), Bucket=name, **{param: value})

    def get_config(self, name: str, kind: str) -> str | None:
        _, get, _, _, absent = _native(kind)
        try:
            found = getattr(self._client, get)(Bucket=name)
        except ClientError as exc:
            if _code(exc) == absent:
                return None
            raise _translate(exc) from exc
        except BotoCoreError as exc:
            raise StorageError(f"s3: {exc}") from exc
        if kind == "policy":
            return str(found["Policy"])
        found.pop("ResponseMetadata", None)
        found.pop("TransitionDefaultMinimumObjectSize", None)
        return json.dumps(found, default=_json_value)

    def delete_config(self, name: str, kind: str) -> None:
        _, _, delete, _, _ = _native(kind)
        self._call(getattr(self._client, delete), Bucket=name)

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
        # `checksum` is not sent: S3 computes and keeps its own (boto3 sends one with each body).
        check_key(key)
        args = self._write_args(bucket, key, content_type, metadata, headers, tags)
        args.update(_sse_c(customer_key))
        with _spooled(body) as (data, _size):
            written = self._call(self._client.put_object, Body=data, **args)
        return self.head_object(bucket, key, version_id=_real_id(written), customer_key=customer_key)

    def get_object(
        self,
        bucket: str,
        key: str,
        *,
        version_id: str | None = None,
        byte_range: ByteRange | None = None,
        customer_key: CustomerKey | None = None,
    ) -> ObjectContent:
        args: dict[str, Any] = {"Bucket": bucket, "Key": key, **_sse_c(customer_key)}
        if version_id is not None:
            args["VersionId"] = version_id
        if byte_range is not None:
            first, last = byte_range
            args["Range"] = f"bytes={'' if first is None else first}-{'' if last is None else last}"
        found = self._read_call(self._client.get_object, bucket, version_id, **args)
        version = self._version_of(bucket, key, found, version_id)
        first, last, partial = 0, version.size - 1, False
        content_range = found.get("ContentRange")
        if content_range and byte_range is not None:
            span = content_range.split()[1].split("/")[0]
            first, last = (int(n) for n in span.split("-"))
            partial = True
        stream = found["Body"]
        if found.get("ContentLength", 0) <= _EAGER_READ:
            return ObjectContent(version, (self._guard(stream.read),), first, last, partial)
        return ObjectContent(version, self._chunks(stream), first, last, partial)

    def head_object(
        self, bucket: str, key: str, *, version_id: str | None = None, customer_key: CustomerKey | None = None
    ) -> ObjectVersion:
        args: dict[str, Any] = {"Bucket": bucket, "Key": key, **_sse_c(customer_key)}
        if version_id is not None:
            args["VersionId"] = version_id
        found = self._read_call(self._client.head_object, bucket, version_id, **args)
        return self._version_of(bucket, key, found, version_id)

    def part_range(
        self, bucket: str, key: str, number: int, *, version_id: str | None = None
    ) -> tuple[int, int] | None:
        args: dict[str, Any] = {"Bucket": bucket, "Key": key, "PartNumber": number}
        if version_id is not None:
            args["VersionId"] = version_id
        found = self._read_call(self._client.head_object, bucket, version_id, **args)
        # S3 answers the part's bytes as a range: "bytes FIRST-LAST/SIZE".
        spans = str(found.get("ContentRange", "")).removeprefix("bytes ").split("/")[0].split("-")
        if len(spans) != 2 or not all(s.isdigit() for s in spans):
            return None
        return int(spans[0]), int(spans[1])

    def delete_object(
        self, bucket: str, key: str, *, version_id: str | None = None, replicate: bool = True
    ) -> Deleted:
        # `replicate` is S3's to decide: it never replicates its own lifecycle's markers, and no client
        # writes a marker that S3 will not replicate (the sweeper does not run over S3).
        check_key(key)
        args: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if version_id is not None:
            args["VersionId"] = version_id
        found = self._call(self._client.delete_object, **args)
        return Deleted(found.get("VersionId", version_id), bool(found.get("DeleteMarker", False)))

    def put_tags(
        self, bucket: str, key: str, tags: Mapping[str, str], *, version_id: str | None = None
    ) -> str:
        args: dict[str, Any] = {
            "Bucket": bucket,
            "Key": key,
            "Tagging": {"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]},
        }
        if version_id is not None:
            args["VersionId"] = version_id
        found = self._call(self._client.put_object_tagging, **args)
        if found.get("VersionId"):
            return str(found["VersionId"])
        return version_id or self.head_object(bucket, key).version_id

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
        args: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": max_keys}
        if delimiter:
            args["Delimiter"] = delimiter
        if start_after:
            args["StartAfter"] = start_after
        if token is not None:
            args["ContinuationToken"] = token
        found = self._call(self._client.list_objects_v2, **args)
        objects = [
            ObjectVersion(
                bucket=bucket,
                key=o["Key"],
                version_id="",
                last_modified_ms=_ms(o["LastModified"]),
                etag=_etag(o.get("ETag", "")),
                size=o.get("Size", 0),
            )
            for o in found.get("Contents", [])
        ]
        prefixes = [p["Prefix"] for p in found.get("CommonPrefixes", [])]
        return ObjectPage(
            objects, prefixes, found.get("NextContinuationToken") if found.get("IsTruncated") else None
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
        args: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": max_keys}
        if delimiter:
            args["Delimiter"] = delimiter
        if key_marker:
            args["KeyMarker"] = key_marker
        if version_id_marker:
            args["VersionIdMarker"] = version_id_marker
        found = self._call(self._client.list_object_versions, **args)
        entries = [self._listed(bucket, v, marker=False) for v in found.get("Versions", [])]
        entries += [self._listed(bucket, m, marker=True) for m in found.get("DeleteMarkers", [])]
        # botocore splits S3's single ordered list in two; put it back: key order, newest first.
        entries.sort(key=lambda v: (v.key.encode(), not v.is_latest, -v.last_modified_ms))
        prefixes = [p["Prefix"] for p in found.get("CommonPrefixes", [])]
        if not found.get("IsTruncated"):
            return VersionPage(entries, prefixes)
        return VersionPage(
            entries, prefixes, found.get("NextKeyMarker", ""), found.get("NextVersionIdMarker")
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
        args = self._write_args(bucket, key, content_type, metadata, headers, tags)
        args.update(_sse_c(customer_key))
        return str(self._call(self._client.create_multipart_upload, **args)["UploadId"])

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
        with _spooled(body) as (data, size):
            found = self._call(
                self._client.upload_part,
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
                **_sse_c(customer_key),
            )
        return Part(number, _etag(found["ETag"]), size, self._server_ms(found))

    def list_parts(self, bucket: str, key: str, upload_id: str) -> list[Part]:
        parts: list[Part] = []
        marker = 0
        while True:
            found = self._call(
                self._client.list_parts, Bucket=bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker
            )
            parts += [
                Part(p["PartNumber"], _etag(p["ETag"]), p["Size"], _ms(p["LastModified"]))
                for p in found.get("Parts", [])
            ]
            if not found.get("IsTruncated"):
                return parts
            marker = found["NextPartNumberMarker"]

    def completed_parts(self, bucket: str, key: str, *, version_id: str | None = None) -> list[Part]:
        # S3 keeps them, and answers GetObjectAttributes itself; the API over this adapter lists none.
        return []

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
        # `expected` is not sent: this adapter leaves checksums to S3 (it sends none of the parts').
        del expected
        found = self._call(
            self._client.complete_multipart_upload,
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": f'"{_etag(e)}"'} for n, e in parts]},
        )
        return self.head_object(bucket, key, version_id=_real_id(found))

    def abort_upload(self, bucket: str, key: str, upload_id: str) -> None:
        self._call(self._client.abort_multipart_upload, Bucket=bucket, Key=key, UploadId=upload_id)

    def uploads_started_before(self, bucket: str, before_ms: int) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        paginator = self._client.get_paginator("list_multipart_uploads")
        try:
            for page in paginator.paginate(Bucket=bucket):
                for upload in page.get("Uploads", []):
                    if _ms(upload["Initiated"]) < before_ms:
                        found.append((str(upload["Key"]), str(upload["UploadId"])))
        except ClientError as exc:
            raise _translate(exc) from exc
        except BotoCoreError as exc:
            raise StorageError(f"s3: {exc}") from exc
        return sorted(found)

    def list_uploads(self, bucket: str, prefix: str = "") -> list[StartedUpload]:
        found: list[StartedUpload] = []
        paginator = self._client.get_paginator("list_multipart_uploads")
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for upload in page.get("Uploads", []):
                    found.append(
                        StartedUpload(str(upload["Key"]), str(upload["UploadId"]), _ms(upload["Initiated"]))
                    )
        except ClientError as exc:
            raise _translate(exc) from exc
        except BotoCoreError as exc:
            raise StorageError(f"s3: {exc}") from exc
        return sorted(found, key=lambda u: (u.key, u.initiated_ms, u.upload_id))

    # Replication state: S3's own business.

    def put_replica(
        self, version: ObjectVersion, body: Body, parts: Sequence[Part] = (), seal: Seal | None = None
    ) -> ObjectVersion:
        raise NotSupported(_NOT_SUPPORTED)

    def read_sealed(self, bucket: str, key: str, version_id: str) -> tuple[Seal, Iterable[bytes]]:
        raise NotSupported(_NOT_SUPPORTED)

    def set_replication_status(
        self, bucket: str, key: str, version_id: str, status: ReplicationStatus, reason: str = ""
    ) -> None:
        raise NotSupported(_NOT_SUPPORTED)

    def put_replicas(self, replicas: Sequence[Replica]) -> list[Outcome]:
        raise NotSupported(_NOT_SUPPORTED)

    def set_replication_statuses(self, changes: Sequence[StatusChange]) -> list[Outcome]:
        raise NotSupported(_NOT_SUPPORTED)

    def pending_replications(self, *, limit: int = 100) -> list[ObjectVersion]:
        raise NotSupported(_NOT_SUPPORTED)

    # Internals.

    def _call(self, operation: Callable[..., Any], **args: Any) -> Any:
        try:
            return operation(**args)
        except ClientError as exc:
            raise _translate(exc) from exc
        except BotoCoreError as exc:
            raise StorageError(f"s3: {exc}") from exc

    def _read_call(
        self, operation: Callable[..., Any], bucket: str, version_id: str | None, **args: Any
    ) -> Any:
        """A GET or HEAD of an object; a HEAD's bodiless 404 is told apart with one more request."""
        try:
            return operation(**args)
        except ClientError as exc:
            error = _translate(exc)
            if _code(exc) in ("404", "NotFound"):
                if not self._bucket_exists(bucket):
                    raise NoSuchBucket(f"The specified bucket does not exist: {bucket!r}") from exc
                if version_id is not None:
                    raise NoSuchVersion(f"The specified version does not exist: {version_id!r}") from exc
            is_get = operation != self._client.head_object
            if is_get and isinstance(error, NoSuchKey) and not error.delete_marker:
                # Some S3-compatible servers leave x-amz-delete-marker off GET errors; HEAD tells.
                self._read_call(self._client.head_object, bucket, version_id, **args)
            raise error from exc
        except BotoCoreError as exc:
            raise StorageError(f"s3: {exc}") from exc

    def _bucket_exists(self, name: str) -> bool:
        try:
            self._client.head_bucket(Bucket=name)
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchBucket", "NotFound"):
                return False
            raise _translate(exc) from exc
        except BotoCoreError as exc:
            raise StorageError(f"s3: {exc}") from exc
        return True

    def _bucket(self, name: str, created_ms: int) -> Bucket:
        location = self._call(self._client.get_bucket_location, Bucket=name).get("LocationConstraint")
        region = {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)
        versioning = self._call(self._client.get_bucket_versioning, Bucket=name).get("Status", "")
        return Bucket(name=name, region=str(region), created_ms=created_ms, versioning=versioning)

    def _write_args(
        self,
        bucket: str,
        key: str,
        content_type: str | None,
        metadata: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        tags: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        args: dict[str, Any] = {
            "Bucket": bucket,
            "Key": key,
            "ContentType": content_type or DEFAULT_CONTENT_TYPE,
        }
        if metadata:
            # botocore sends ASCII only: other text as an encoded word, which S3 decodes before storing.
            args["Metadata"] = {name: encoded_words.to_header(value) for name, value in metadata.items()}
        for name, value in (headers or {}).items():
            param = _HEADER_PARAMS.get(name)
            if param == "Expires":
                args[param] = parsedate_to_datetime(value)
            elif param is not None:
                args[param] = value
        if tags:
            args["Tagging"] = urlencode(dict(tags))
        return args

    def _version_of(
        self, bucket: str, key: str, found: Mapping[str, Any], version_id: str | None
    ) -> ObjectVersion:
        headers: dict[str, str] = {}
        for name, param in _HEADER_PARAMS.items():
            if param == "Expires":
                value = found.get("ExpiresString") or found.get("Expires")
                if isinstance(value, datetime):
                    value = format_datetime(value, usegmt=True)
            else:
                value = found.get(param)
            if value:
                headers[name] = str(value)
        found_id = str(found.get("VersionId") or NULL_VERSION)
        is_latest = True
        if version_id is not None:
            try:
                latest = self._client.head_object(Bucket=bucket, Key=key)
            except ClientError:
                # The latest version is a delete marker (or just went away): this one is not the latest.
                is_latest = False
            except BotoCoreError as exc:
                raise StorageError(f"s3: {exc}") from exc
            else:
                is_latest = str(latest.get("VersionId") or NULL_VERSION) == found_id
        tag_args: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if found.get("VersionId"):
            tag_args["VersionId"] = found["VersionId"]
        tag_set = self._call(self._client.get_object_tagging, **tag_args).get("TagSet", [])
        status = found.get("ReplicationStatus")
        size = found.get("ContentLength", 0)
        content_range = found.get("ContentRange")
        if content_range:
            size = int(content_range.rsplit("/", 1)[1])
        return ObjectVersion(
            bucket=bucket,
            key=key,
            version_id=found_id,
            last_modified_ms=_ms(found["LastModified"]),
            etag=_etag(found.get("ETag", "")),
            size=size,
            is_latest=is_latest,
            content_type=found.get("ContentType") or DEFAULT_CONTENT_TYPE,
            metadata={name: encoded_words.decode(value) for name, value in found.get("Metadata", {}).items()},
            headers=headers,
            tags={t["Key"]: t["Value"] for t in tag_set},
            replication_status=status if status in ("PENDING", "COMPLETED", "FAILED", "REPLICA") else None,
            parts_count=found.get("PartsCount"),
            checksum=_checksum(found),
            encryption="SSE-C"
            if found.get("SSECustomerAlgorithm")
            else str(found.get("ServerSideEncryption") or ""),
            sse_key_md5=str(found.get("SSECustomerKeyMD5") or ""),
        )

    def _listed(self, bucket: str, entry: Mapping[str, Any], *, marker: bool) -> ObjectVersion:
        return ObjectVersion(
            bucket=bucket,
            key=entry["Key"],
            version_id=str(entry.get("VersionId") or NULL_VERSION),
            last_modified_ms=_ms(entry["LastModified"]),
            etag="" if marker else _etag(entry.get("ETag", "")),
            size=0 if marker else entry.get("Size", 0),
            is_delete_marker=marker,
            is_latest=bool(entry.get("IsLatest", False)),
        )

    @staticmethod
    def _server_ms(found: Mapping[str, Any]) -> int:
        date = found.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        return _ms(parsedate_to_datetime(date)) if date else int(time.time() * 1000)

    def _guard(self, read: Callable[[], bytes]) -> bytes:
        try:
            return read()
        except (BotoCoreError, OSError) as exc:
            raise StorageError(f"s3: reading the body failed: {exc}") from exc

    def _chunks(self, stream: Any) -> Iterator[bytes]:
        try:
            yield from stream.iter_chunks(_EAGER_READ)
        except (BotoCoreError, OSError) as exc:
            raise StorageError(f"s3: reading the body failed: {exc}") from exc
        finally:
            stream.close()


# kind -> (put, get and delete operations of boto3, the put's parameter, the error code of "none").
_NATIVE_CONFIGS = {
    "policy": (
        "put_bucket_policy",
        "get_bucket_policy",
        "delete_bucket_policy",
        "Policy",
        "NoSuchBucketPolicy",
    ),
    "cors": (
        "put_bucket_cors",
        "get_bucket_cors",
        "delete_bucket_cors",
        "CORSConfiguration",
        "NoSuchCORSConfiguration",
    ),
    "lifecycle": (
        "put_bucket_lifecycle_configuration",
        "get_bucket_lifecycle_configuration",
        "delete_bucket_lifecycle",
        "LifecycleConfiguration",
        "NoSuchLifecycleConfiguration",
    ),
    "tagging": (
        "put_bucket_tagging",
        "get_bucket_tagging",
        "delete_bucket_tagging",
        "Tagging",
        "NoSuchTagSet",
    ),
}


def _native(kind: str) -> tuple[str, str, str, str, str]:
    found = _NATIVE_CONFIGS.get(kind)
    if found is None:
        raise NotSupported(f"S3 keeps no {kind!r} configuration this adapter knows of")
    return found


def _json_value(value: Any) -> Any:
    """JSON for what boto3 parses beyond JSON: a lifecycle Date is a datetime."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    raise TypeError(f"{type(value).__name__} is not JSON")


def _real_id(found: Mapping[str, Any]) -> str | None:
    """The version id a write answered, None for the "null" version (which HEAD finds without an id)."""
    version_id = found.get("VersionId")
    return None if version_id in (None, "", NULL_VERSION) else str(version_id)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _http_ms(headers: Mapping[str, str]) -> int | None:
    """The Last-Modified of an error answer (a delete marker's 405), in epoch ms; None without one."""
    try:
        return int(parsedate_to_datetime(headers["last-modified"]).timestamp() * 1000)
    except (KeyError, TypeError, ValueError):
        return None


def _translate(exc: ClientError) -> Exception:
    """The port's error for an S3 error answer; unknown codes become StorageError."""
    code = _code(exc)
    message = str(exc.response.get("Error", {}).get("Message", "") or code)
    headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    marker = headers.get("x-amz-delete-marker") == "true"
    version_id = headers.get("x-amz-version-id")
    if code in ("NoSuchKey", "404", "NotFound"):
        return NoSuchKey(message, delete_marker=marker, version_id=version_id)
    if code in ("MethodNotAllowed", "405"):
        return MethodNotAllowed(
            message, delete_marker=marker, version_id=version_id, last_modified_ms=_http_ms(headers)
        )
    if code in ("InvalidRange", "416"):
        size = headers.get("content-range", "").rpartition("/")[2]
        return InvalidRange(message, size=int(size) if size.isdigit() else 0)
    if code in ("AccessDenied", "403"):
        return AccessDenied(message)
    cls = ERRORS_BY_CODE.get(code)
    if cls is not None:
        return cls(message)
    return StorageError(f"s3: {code}: {message}")


# A streamed body up to this size stays in memory on its way to S3; a larger one goes through a file.
_SPOOL_IN_MEMORY = 1024 * 1024


@contextmanager
def _spooled(body: Body) -> Iterator[tuple[bytes | IO[bytes], int]]:
    """The body as boto3 takes it without holding it whole: bytes as they are, pieces spooled to a file.

    boto3 reads a file body in chunks and seeks it back to retry, so a 5 GiB PUT costs a MiB of memory.
    """
    if isinstance(body, bytes):
        yield body, len(body)
        return
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
        size = 0
        for piece in body:
            spool.write(piece)
            size += len(piece)
        spool.seek(0)
        yield spool, size


def _sse_c(customer_key: CustomerKey | None) -> dict[str, Any]:
    """boto3's arguments of an SSE-C key (it computes the key's MD5 itself)."""
    if customer_key is None:
        return {}
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": customer_key.key}


def _checksum(found: Mapping[str, Any]) -> Checksum | None:
    """The checksum S3 returned (with ChecksumMode, which this adapter does not ask for: mostly None)."""
    for name in ALGORITHMS:
        value = found.get(f"Checksum{name}")
        if value:
            kind: ChecksumType = "COMPOSITE" if found.get("ChecksumType") == "COMPOSITE" else "FULL_OBJECT"
            return Checksum(name, str(value), kind)
    return None
