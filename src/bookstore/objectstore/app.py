"""The S3-compatible REST API of one region (path-style), over an ObjectStore, with SigV4 checked.

`create_s3_app(store, credentials, region)` returns the ASGI app. Every request must be signed with
AWS Signature Version 4 by a known access key (headers or a presigned URL); errors are S3 XML.
Request bodies are read from the stream as they arrive, checked, and spooled (objectstore.bodies): an
object's content is never held whole in memory, and the store sees it only once it has all arrived.

With a `cluster` (namespace.Cluster) the app serves every region's buckets: a request for a bucket
that lives in another region is checked here, then forwarded through the link to that region's
internal endpoint (peers.FORWARD_PATH), which trusts it on the strength of the shared-secret HMAC.
CreateBucket goes to the region its LocationConstraint names; ListBuckets lists the whole namespace;
CopyObject and UploadPartCopy read a source in another region from that region. The internal
endpoints under peers.INTERNAL_PREFIX (forwarded requests, replica writes, version reads, bucket
lookups) answer only requests signed with the deployment's shared secret.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from bookstore.domain.errors import (
    BookstoreError,
    Conflict,
    Forbidden,
    NotFound,
    StorageError,
    Unauthorized,
    Unavailable,
    ValidationError,
)
from bookstore.objectstore import bodies, documents, inputs
from bookstore.objectstore.bodies import Payload
from bookstore.objectstore.configs import ReplicationConfiguration, WebsiteConfiguration
from bookstore.objectstore.errors import (
    AccessDenied,
    BucketAlreadyExists,
    IllegalLocationConstraintException,
    InvalidArgument,
    InvalidRange,
    InvalidRequest,
    InvalidURI,
    KeyTooLongError,
    MalformedXML,
    MethodNotAllowed,
    NotImplementedS3,
    NotSupported,
    PreconditionFailed,
    S3Error,
)
from bookstore.objectstore.namespace import Cluster
from bookstore.objectstore.peers import (
    BUCKETS_PATH,
    FORWARD_PATH,
    FORWARDED_HEADERS,
    INTERNAL_PREFIX,
    OBJECTS_PATH,
    PING_PATH,
    VERSION_HEADER,
    Forwarded,
    PeerUnavailable,
    decode_fields,
    digest,
    encode_fields,
    forwardable,
    version_fields,
    version_from_fields,
)
from bookstore.objectstore.port import (
    STORED_HEADERS,
    Body,
    ByteRange,
    ObjectContent,
    ObjectStore,
    ObjectVersion,
    check_bucket_name,
    check_key,
)
from bookstore.objectstore.sigv4 import UNSIGNED_PAYLOAD, Authorized, PayloadReader, SigV4
from bookstore.ports import Clock
from bookstore.replication.auth import PeerAuthMiddleware
from bookstore.replication.clock import SystemClock

log = logging.getLogger("bookstore.objectstore")

T = TypeVar("T")
MAX_PUT = 5 * 1024**3
# Bodies above this go to the store in a worker thread: they are written to files and fsynced.
_INLINE_BODY = 64 * 1024
# Query keys that name an S3 sub-resource this API does not serve (answered 501, never misrouted).
_UNSERVED = frozenset(
    [
        "accelerate",
        "analytics",
        "attributes",
        "cors",
        "encryption",
        "intelligent-tiering",
        "inventory",
        "legal-hold",
        "lifecycle",
        "logging",
        "metrics",
        "notification",
        "object-lock",
        "ownershipControls",
        "policy",
        "policyStatus",
        "publicAccessBlock",
        "requestPayment",
        "restore",
        "retention",
        "select",
        "session",
        "torrent",
    ]
)
_LOWER_STORED = {name.lower(): name for name in STORED_HEADERS}
OWNER_ID = hashlib.sha256(b"bookstore").hexdigest()


class _Call:
    """One request, parsed: what the handlers need."""

    __slots__ = (
        "auth",
        "body",
        "bucket",
        "forwarded",
        "headers",
        "key",
        "method",
        "payload",
        "query",
        "request",
        "target",
        "trailers",
        "verified",
    )

    def __init__(
        self,
        request: Request,
        method: str,
        headers: dict[str, str],
        query: dict[str, str],
        bucket: str,
        key: str | None,
        auth: Authorized,
        target: str,
        forwarded: bool,
    ) -> None:
        self.request = request
        self.method = method
        self.headers = headers
        self.query = query
        self.bucket = bucket
        self.key = key
        self.auth = auth
        # A document's body (XML), read whole; an object's content is in `payload`, spooled.
        self.body = b""
        self.payload: Payload | None = None
        self.trailers: dict[str, str] = {}
        # The checksums of the body that were verified, echoed in the answer.
        self.verified: dict[str, str] = {}
        # The request target (raw path and query) as the client sent it; a forwarded request's, as sent there.
        self.target = target
        # Checked by the region that forwarded it, not here.
        self.forwarded = forwarded

    def close(self) -> None:
        if self.payload is not None:
            self.payload.close()


def create_s3_app(
    store: ObjectStore,
    credentials: Mapping[str, str],
    region: str,
    *,
    clock: Clock | None = None,
    cluster: Cluster | None = None,
    secret: str | None = None,
    staging: Path | None = None,
) -> ASGIApp:
    """The S3 API of `region` over `store`; `credentials` maps access key ids to secret keys.

    `clock` (epoch ms) decides signature expiry and skew; the wall clock when None. With `cluster`
    (which needs the deployment's `secret`) the API serves every region's buckets, see the module.
    Request bodies beyond a MiB are spooled to unnamed files in `staging` (the system's temporary
    directory when None).
    """
    api = S3Api(store, credentials, region, clock, cluster, staging)
    route = Route("/{path:path}", api.handle, methods=["GET", "HEAD", "PUT", "POST", "DELETE"])
    # Every path is the API's, newlines included ("." stops at one): the API answers a bad name in S3 XML.
    route.path_regex = re.compile(r"^/(?P<path>.*)$", re.DOTALL)
    app = Starlette(routes=[route])
    if cluster is None:
        return app
    if not secret:
        raise ValueError("an S3 API that serves a cluster needs the deployment's shared secret")
    return PeerAuthMiddleware(
        app,
        secret,
        clock or SystemClock(),
        destination=region,
        protected_prefix=INTERNAL_PREFIX,
        max_body_bytes=MAX_PUT + 1024 * 1024,
    )


class S3Api:
    """Routes S3 requests to the store; one instance per region."""

    def __init__(
        self,
        store: ObjectStore,
        credentials: Mapping[str, str],
        region: str,
        clock: Clock | None = None,
        cluster: Cluster | None = None,
        staging: Path | None = None,
    ) -> None:
        self.store = store
        self.region = region
        self.cluster = cluster
        self.staging = staging
        self.now_ms: Callable[[], int] = (
            (lambda: time.time_ns() // 1_000_000) if clock is None else clock.now_ms
        )
        now: Callable[[], float] = time.time if clock is None else (lambda: clock.now_ms() / 1000)
        self.signer = SigV4(credentials, now)

    async def handle(self, request: Request) -> Response:
        # Request ids only need to be unique enough to find a request in logs, not unguessable.
        request_id = f"{random.getrandbits(64):016X}"
        method = request.method
        call: _Call | None = None
        try:
            if request.scope["path"].startswith(INTERNAL_PREFIX):
                response = await self._internal(request, method)
            else:
                call = await self._parse(request, method)
                response = await self._dispatch(call)
        except BookstoreError as exc:
            response = self._error(exc, method, request_id, request)
            await _drain(request)
        except Exception:
            log.exception("s3 %s: %s %s failed", self.region, method, request.url.path)
            internal = StorageError("We encountered an internal error. Please try again.")
            response = self._error(internal, method, request_id, request)
            await _drain(request)
        finally:
            if call is not None:
                call.close()
        response.headers["x-amz-request-id"] = request_id
        response.headers["x-amz-id-2"] = request_id
        return response

    # Parsing and dispatch.

    async def _parse(self, request: Request, method: str) -> _Call:
        scope = request.scope
        try:
            raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidURI("Couldn't parse the specified URI.") from exc
        raw_query = scope.get("query_string", b"").decode("latin-1")
        headers: dict[str, str] = {}
        for name_bytes, value_bytes in scope["headers"]:
            name, value = name_bytes.decode("latin-1").lower(), value_bytes.decode("latin-1")
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        auth = self.signer.authorize(method, raw_path, raw_query, headers)
        return await self._call(request, method, raw_path, raw_query, headers, auth, forwarded=False)

    async def _call(
        self,
        request: Request,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: dict[str, str],
        auth: Authorized,
        *,
        forwarded: bool,
    ) -> _Call:
        query: dict[str, str] = {}
        for part in raw_query.split("&"):
            if part:
                name, _, value = part.partition("=")
                query[unquote(name)] = unquote(value)
        inputs.check_query(query)
        _, _, rest = raw_path.partition("/")
        bucket_part, slash, key_part = rest.partition("/")
        try:
            bucket = unquote(bucket_part, errors="strict")
            key = unquote(key_part, errors="strict") if slash and key_part else None
        except UnicodeDecodeError as exc:
            raise InvalidURI("Couldn't parse the specified URI: keys are UTF-8") from exc
        target = f"{raw_path}?{raw_query}" if raw_query else raw_path
        call = _Call(request, method, headers, query, bucket, key, auth, target, forwarded)
        if method in ("PUT", "POST"):
            reader = PayloadReader() if forwarded else self.signer.payload(auth, headers)
            if _carries_content(call):
                call.payload = await self._receive(request, reader, headers, MAX_PUT)
                call.trailers, call.verified = call.payload.trailers, call.payload.verified
            else:
                payload = await self._receive(request, reader, headers, documents.MAX_DOCUMENT)
                try:
                    call.body = payload.read(documents.MAX_DOCUMENT)
                    call.trailers, call.verified = payload.trailers, payload.verified
                finally:
                    payload.close()
        return call

    async def _receive(
        self, request: Request, reader: PayloadReader, headers: Mapping[str, str], limit: int
    ) -> Payload:
        return await bodies.receive(request.stream(), reader, headers, limit=limit, staging=self.staging)

    async def _dispatch(self, call: _Call) -> Response:
        method, query = call.method, call.query
        unserved = _UNSERVED.intersection(query)
        if unserved:
            raise NotImplementedS3(
                "A header or query you provided implies functionality that is not implemented: "
                + ", ".join(sorted(unserved))
            )
        if not call.bucket:
            if method == "GET":
                listing = self.store.list_buckets if self.cluster is None else self.cluster.all_buckets
                return self._xml(documents.list_buckets(await self._run(listing), OWNER_ID))
            raise MethodNotAllowed("The specified method is not allowed against this resource.")
        if self.cluster is not None and not call.forwarded and not _creates_bucket(call):
            owner = await self.cluster.owner(call.bucket)
            if owner is not None and owner.region != self.region:
                return await self._forward(call, owner.region)
        if call.key is None:
            return await self._bucket(call)
        check_key(call.key)
        return await self._object(call)

    async def _bucket(self, call: _Call) -> Response:
        method, query, name = call.method, call.query, call.bucket
        store = self.store
        if method == "PUT":
            if "versioning" in query:
                doc = documents.parse(call.body, "VersioningConfiguration")
                status = doc.get("Status")
                if status not in ("Enabled", "Suspended"):
                    raise MalformedXML("VersioningConfiguration needs Status Enabled or Suspended")
                await self._run(store.set_versioning, name, status)
                return Response(status_code=200)
            if "replication" in query:
                config = ReplicationConfiguration.from_json(
                    documents.parse(call.body, "ReplicationConfiguration")
                )
                await self._run(store.put_replication, name, config)
                return Response(status_code=200)
            if "website" in query:
                website = WebsiteConfiguration.from_json(documents.parse(call.body, "WebsiteConfiguration"))
                await self._run(store.put_website, name, website)
                return Response(status_code=200)
            if "tagging" in query or "acl" in query:
                raise NotImplementedS3("Bucket tagging and ACLs are not implemented")
            return await self._create_bucket(call)
        if method == "GET":
            if "versioning" in query:
                bucket = await self._run(store.get_bucket, name)
                return self._xml(documents.versioning(bucket.versioning))
            if "replication" in query:
                return self._xml(documents.replication(await self._run(store.get_replication, name)))
            if "website" in query:
                return self._xml(documents.website(await self._run(store.get_website, name)))
            if "location" in query:
                bucket = await self._run(store.get_bucket, name)
                return self._xml(documents.location(bucket.region))
            if "versions" in query:
                return await self._list_versions(call)
            if "uploads" in query or "tagging" in query or "acl" in query:
                raise NotImplementedS3("ListMultipartUploads, bucket tagging and ACLs are not implemented")
            return await self._list_objects(call)
        if method == "HEAD":
            bucket = await self._run(store.get_bucket, name)
            return Response(status_code=200, headers={"x-amz-bucket-region": bucket.region})
        if method == "DELETE":
            if "replication" in query:
                await self._run(store.delete_replication, name)
            elif "website" in query:
                await self._run(store.delete_website, name)
            elif "tagging" in query:
                raise NotImplementedS3("Bucket tagging is not implemented")
            else:
                await self._run(store.delete_bucket, name)
                if self.cluster is not None:
                    self.cluster.directory.release(name)
            return Response(status_code=204)
        if method == "POST" and "delete" in query:
            return await self._delete_objects(call)
        raise MethodNotAllowed("The specified method is not allowed against this resource.")

    async def _object(self, call: _Call) -> Response:
        method, query = call.method, call.query
        if method == "GET":
            if "uploadId" in query:
                return await self._list_parts(call)
            if "tagging" in query:
                version = await self._run(
                    self.store.head_object, call.bucket, self._key(call), version_id=query.get("versionId")
                )
                response = self._xml(documents.tagging(version.tags))
                response.headers["x-amz-version-id"] = version.version_id
                return response
            return await self._get(call, head=False)
        if method == "HEAD":
            return await self._get(call, head=True)
        if method == "PUT":
            if "partNumber" in query and "uploadId" in query:
                return await self._upload_part(call)
            if "tagging" in query:
                return await self._put_tagging(call)
            if "acl" in query:
                raise NotImplementedS3("Object ACLs are not implemented")
            if "x-amz-copy-source" in call.headers:
                return await self._copy(call)
            return await self._put(call)
        if method == "DELETE":
            if "uploadId" in query:
                await self._run(self.store.abort_upload, call.bucket, self._key(call), query["uploadId"])
                return Response(status_code=204)
            if "tagging" in query:
                version_id = await self._run(
                    self.store.put_tags, call.bucket, self._key(call), {}, version_id=query.get("versionId")
                )
                return Response(status_code=204, headers={"x-amz-version-id": version_id})
            return await self._delete(call)
        if method == "POST":
            if "uploads" in query:
                return await self._create_upload(call)
            if "uploadId" in query:
                return await self._complete_upload(call)
        raise MethodNotAllowed("The specified method is not allowed against this resource.")

    # Buckets.

    async def _create_bucket(self, call: _Call) -> Response:
        constraint = ""
        if call.body.strip():
            doc = documents.parse(call.body, "CreateBucketConfiguration")
            constraint = str(doc.get("LocationConstraint") or "")
        constraint = {"EU": "eu-west-1"}.get(constraint, constraint)
        cluster = self.cluster
        if constraint and constraint != self.region:
            if cluster is not None and not call.forwarded and constraint in cluster.peers:
                return await self._forward(call, constraint)
            raise IllegalLocationConstraintException(
                f"The {constraint} location constraint is incompatible for the region specific endpoint "
                f"this request was sent to ({self.region})."
            )
        if cluster is None:
            await self._run(self.store.create_bucket, call.bucket)
        else:
            check_bucket_name(call.bucket)
            owner = await cluster.owner(call.bucket)
            if owner is not None and owner.region != self.region:
                raise BucketAlreadyExists(
                    f"The requested bucket name {call.bucket!r} is not available: it exists in {owner.region}"
                )
            # Listed before it is created: a crash in between leaves an entry that a retry completes.
            cluster.directory.claim(call.bucket, self.now_ms())
            await self._run(self.store.create_bucket, call.bucket)
        return Response(status_code=200, headers={"Location": f"/{call.bucket}"})

    async def _list_objects(self, call: _Call) -> Response:
        query = call.query
        v2 = query.get("list-type") == "2"
        prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
        max_keys = self._int(query.get("max-keys"), 1000, "max-keys", 0, 2**31)
        encoding = query.get("encoding-type")
        if encoding not in (None, "url"):
            raise InvalidArgument("Invalid Encoding Method specified in Request")
        token = query.get("continuation-token") if v2 else None
        start_after = query.get("start-after", "") if v2 else query.get("marker", "")
        page = await self._run(
            self.store.list_objects,
            call.bucket,
            prefix=prefix,
            delimiter=delimiter,
            start_after=start_after,
            token=token or None,
            max_keys=min(max_keys, 1000),
        )
        listing = documents.Listing(encode=encoding == "url")
        owner = OWNER_ID if (not v2 or query.get("fetch-owner") == "true") else None
        entries = listing.contents(page.objects, owner) + listing.prefixes(page.common_prefixes)
        if v2:
            head = listing.header(
                Name=documents.text(call.bucket),
                Prefix=listing.name(prefix),
                Delimiter=listing.name(delimiter) if delimiter else None,
                MaxKeys=max_keys,
                EncodingType=encoding,
                KeyCount=len(page.objects) + len(page.common_prefixes),
                IsTruncated=page.is_truncated,
                ContinuationToken=documents.text(token) if token is not None else None,
                NextContinuationToken=documents.text(page.next_token) if page.next_token else None,
                StartAfter=listing.name(start_after) if start_after else None,
            )
        else:
            last = max([o.key for o in page.objects[-1:]] + page.common_prefixes[-1:], default=None)
            head = listing.header(
                Name=documents.text(call.bucket),
                Prefix=listing.name(prefix),
                Marker=listing.name(start_after),
                NextMarker=listing.name(last) if page.is_truncated and last is not None else None,
                MaxKeys=max_keys,
                Delimiter=listing.name(delimiter) if delimiter else None,
                EncodingType=encoding,
                IsTruncated=page.is_truncated,
            )
        return self._xml(documents.document("ListBucketResult", head + entries))

    async def _list_versions(self, call: _Call) -> Response:
        query = call.query
        prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
        key_marker, version_marker = query.get("key-marker", ""), query.get("version-id-marker", "")
        max_keys = self._int(query.get("max-keys"), 1000, "max-keys", 0, 2**31)
        encoding = query.get("encoding-type")
        if encoding not in (None, "url"):
            raise InvalidArgument("Invalid Encoding Method specified in Request")
        page = await self._run(
            self.store.list_versions,
            call.bucket,
            prefix=prefix,
            delimiter=delimiter,
            key_marker=key_marker,
            version_id_marker=version_marker,
            max_keys=min(max_keys, 1000),
        )
        listing = documents.Listing(encode=encoding == "url")
        head = listing.header(
            Name=documents.text(call.bucket),
            Prefix=listing.name(prefix),
            KeyMarker=listing.name(key_marker),
            VersionIdMarker=documents.text(version_marker),
            NextKeyMarker=listing.name(page.next_key_marker) if page.next_key_marker is not None else None,
            NextVersionIdMarker=documents.text(page.next_version_id_marker)
            if page.next_version_id_marker
            else None,
            MaxKeys=max_keys,
            Delimiter=listing.name(delimiter) if delimiter else None,
            EncodingType=encoding,
            IsTruncated=page.is_truncated,
        )
        body = head + listing.versions(page.versions, OWNER_ID) + listing.prefixes(page.common_prefixes)
        return self._xml(documents.document("ListVersionsResult", body))

    async def _delete_objects(self, call: _Call) -> Response:
        doc = documents.parse(call.body, "Delete")
        objects = doc.get("Objects", [])
        if not objects or len(objects) > 1000:
            raise MalformedXML("A Delete document holds 1 to 1000 Object elements")
        quiet = documents.scalar(doc.get("Quiet", "false"), "Quiet").lower() == "true"
        deleted: list[dict[str, str]] = []
        errors: list[dict[str, str]] = []
        for entry in objects:
            if not isinstance(entry, dict) or not entry.get("Key"):
                raise MalformedXML("Each Object needs a Key")
            key = documents.scalar(entry["Key"], "Key")
            version_id = documents.scalar(entry.get("VersionId", ""), "VersionId")
            try:
                check_key(key)
                result = await self._run(
                    self.store.delete_object, call.bucket, key, version_id=version_id or None
                )
            except S3Error as exc:
                errors.append(
                    {
                        "Key": key,
                        **({"VersionId": version_id} if version_id else {}),
                        "Code": exc.code,
                        "Message": exc.message,
                    }
                )
                continue
            if quiet:
                continue
            item = {"Key": key}
            if version_id:
                item["VersionId"] = version_id
            if result.delete_marker:
                item["DeleteMarker"] = "true"
                if result.version_id:
                    item["DeleteMarkerVersionId"] = result.version_id
            deleted.append(item)
        return self._xml(documents.delete_result(deleted, errors))

    # Objects.

    async def _get(self, call: _Call, *, head: bool) -> Response:
        query, headers = call.query, call.headers
        version_id = query.get("versionId") or None
        byte_range = None if head else _byte_range(headers.get("range"))
        if "partNumber" in query:
            raise NotImplementedS3("GET and HEAD by partNumber are not implemented")
        if head:
            version = await self._run(
                self.store.head_object, call.bucket, self._key(call), version_id=version_id
            )
            content = None
        else:
            content = await self._run(
                self.store.get_object,
                call.bucket,
                self._key(call),
                version_id=version_id,
                byte_range=byte_range,
            )
            version = content.version
        answer = _preconditions(version, headers)
        if answer is not None:
            return answer
        out = _object_headers(version)
        out.update(inputs.response_overrides(query))
        if content is None:
            out["Content-Length"] = str(version.size)
            return Response(status_code=200, headers=out)
        status = 200
        if content.partial:
            status = 206
            out["Content-Range"] = f"bytes {content.first}-{content.last}/{version.size}"
        out["Content-Length"] = str(max(0, content.last - content.first + 1))
        # Content-Type goes in as a header: as media_type, Starlette would add a charset to text types.
        if isinstance(content.body, list | tuple):
            return Response(b"".join(content.body), status_code=status, headers=out)
        return StreamingResponse(content.body, status_code=status, headers=out)

    def _write_fields(self, call: _Call) -> dict[str, Any]:
        headers = call.headers
        metadata = inputs.user_metadata(headers)
        stored = {canonical: headers[lower] for lower, canonical in _LOWER_STORED.items() if lower in headers}
        encoding = stored.get("Content-Encoding")
        if encoding is not None:
            # aws-chunked is how this request was sent, not how the object is stored.
            kept = [t.strip() for t in encoding.split(",") if t.strip() and t.strip() != "aws-chunked"]
            if kept:
                stored["Content-Encoding"] = ", ".join(kept)
            else:
                del stored["Content-Encoding"]
        tags = (
            dict(parse_qsl(headers["x-amz-tagging"], keep_blank_values=True))
            if "x-amz-tagging" in headers
            else None
        )
        return {
            "content_type": headers.get("content-type") or None,
            "metadata": metadata,
            "headers": stored,
            "tags": tags,
        }

    async def _put(self, call: _Call) -> Response:
        fields = self._write_fields(call)
        body, big = _content(call)
        version = await self._run(
            self.store.put_object, call.bucket, self._key(call), body, big=big, **fields
        )
        out = {"ETag": f'"{version.etag}"', **call.verified}
        if version.version_id != "null":
            out["x-amz-version-id"] = version.version_id
        return Response(status_code=200, headers=out)

    async def _copy(self, call: _Call) -> Response:
        source_bucket, source_key, source_version = _copy_source(call.headers["x-amz-copy-source"])
        key = self._key(call)
        directive = call.headers.get("x-amz-metadata-directive", "COPY").upper()
        tag_directive = call.headers.get("x-amz-tagging-directive", "COPY").upper()
        if directive not in ("COPY", "REPLACE") or tag_directive not in ("COPY", "REPLACE"):
            raise InvalidArgument("x-amz-metadata-directive and x-amz-tagging-directive are COPY or REPLACE")
        if (
            (source_bucket, source_key) == (call.bucket, key)
            and source_version is None
            and directive == "COPY"
        ):
            raise InvalidRequest(
                "This copy request is illegal because it is trying to copy an object to itself without "
                "changing the object's metadata, storage class, website redirect location or encryption "
                "attributes."
            )
        fields = self._write_fields(call)
        content = await self._source(source_bucket, source_key, source_version, None)
        source = content.version
        _copy_preconditions(source, call.headers)
        write = dict(fields)
        if directive == "COPY":
            write.update(content_type=source.content_type, metadata=source.metadata, headers=source.headers)
        if tag_directive == "COPY":
            write["tags"] = source.tags
        version = await run_in_threadpool(self.store.put_object, call.bucket, key, content.body, **write)
        out = {"x-amz-copy-source-version-id": source.version_id}
        if version.version_id != "null":
            out["x-amz-version-id"] = version.version_id
        return self._xml(
            documents.copy_result("CopyObjectResult", version.etag, version.last_modified_ms), out
        )

    async def _delete(self, call: _Call) -> Response:
        version_id = call.query.get("versionId") or None
        result = await self._run(
            self.store.delete_object, call.bucket, self._key(call), version_id=version_id
        )
        out = {}
        if result.version_id:
            out["x-amz-version-id"] = result.version_id
        if result.delete_marker:
            out["x-amz-delete-marker"] = "true"
        return Response(status_code=204, headers=out)

    async def _put_tagging(self, call: _Call) -> Response:
        doc = documents.parse(call.body, "Tagging")
        tag_set = doc.get("TagSet", [])
        if not isinstance(tag_set, list) or not all(isinstance(t, dict) and "Key" in t for t in tag_set):
            raise MalformedXML("Tagging holds a TagSet of Tag elements with Key and Value")
        tags = {
            documents.scalar(t["Key"], "Key"): documents.scalar(t.get("Value", ""), "Value") for t in tag_set
        }
        if len(tags) > 10:
            raise InvalidArgument("Object tags cannot be greater than 10")
        version_id = await self._run(
            self.store.put_tags,
            call.bucket,
            self._key(call),
            tags,
            version_id=call.query.get("versionId") or None,
        )
        return Response(status_code=200, headers={"x-amz-version-id": version_id})

    # Multipart uploads.

    async def _create_upload(self, call: _Call) -> Response:
        key = self._key(call)
        upload_id = await self._run(self.store.create_upload, call.bucket, key, **self._write_fields(call))
        return self._xml(documents.initiate_upload(call.bucket, key, upload_id))

    async def _upload_part(self, call: _Call) -> Response:
        number = self._int(call.query.get("partNumber"), 0, "partNumber", 1, 10_000)
        upload_id = call.query["uploadId"]
        key = self._key(call)
        if "x-amz-copy-source" in call.headers:
            source_bucket, source_key, source_version = _copy_source(call.headers["x-amz-copy-source"])
            wanted = call.headers.get("x-amz-copy-source-range")
            byte_range = _byte_range(wanted) if wanted else None
            if wanted and byte_range is None:
                raise InvalidArgument(
                    "The x-amz-copy-source-range value must be of the form bytes=first-last"
                )

            content = await self._source(
                source_bucket, source_key, source_version, wanted if byte_range else None
            )
            _copy_preconditions(content.version, call.headers)
            part = await run_in_threadpool(
                self.store.upload_part, call.bucket, key, upload_id, number, content.body
            )
            return self._xml(
                documents.copy_result("CopyPartResult", part.etag, part.last_modified_ms),
                {"x-amz-copy-source-version-id": content.version.version_id},
            )
        body, _ = _content(call)
        part = await self._run(self.store.upload_part, call.bucket, key, upload_id, number, body, big=True)
        return Response(status_code=200, headers={"ETag": f'"{part.etag}"', **call.verified})

    async def _list_parts(self, call: _Call) -> Response:
        key = self._key(call)
        upload_id = call.query["uploadId"]
        marker = self._int(call.query.get("part-number-marker"), 0, "part-number-marker", 0, 10_000)
        max_parts = self._int(call.query.get("max-parts"), 1000, "max-parts", 0, 2**31)
        parts = [
            p
            for p in await self._run(self.store.list_parts, call.bucket, key, upload_id)
            if p.number > marker
        ]
        page = parts[: min(max_parts, 1000)]
        body = documents.list_parts(
            call.bucket,
            key,
            upload_id,
            page,
            marker=marker,
            max_parts=max_parts,
            truncated=len(parts) > len(page),
            owner_id=OWNER_ID,
        )
        return self._xml(body)

    async def _complete_upload(self, call: _Call) -> Response:
        key = self._key(call)
        doc = documents.parse(call.body, "CompleteMultipartUpload")
        parts = []
        for part in doc.get("Parts", []):
            if not isinstance(part, dict) or "PartNumber" not in part or "ETag" not in part:
                raise MalformedXML("Each Part needs a PartNumber and an ETag")
            number = self._int(documents.scalar(part["PartNumber"], "PartNumber"), 0, "PartNumber", 1, 10_000)
            parts.append((number, documents.scalar(part["ETag"], "ETag")))
        version = await self._run(
            self.store.complete_upload, call.bucket, key, call.query["uploadId"], parts, big=True
        )
        out = {}
        if version.version_id != "null":
            out["x-amz-version-id"] = version.version_id
        location = f"/{quote(call.bucket)}/{quote(key)}"
        return self._xml(documents.complete_upload(location, call.bucket, key, version.etag), out)

    # Between regions.

    async def _forward(self, call: _Call, region: str) -> Response:
        """Send a checked request to the region that owns its bucket, and relay that region's answer."""
        assert self.cluster is not None
        peer = self.cluster.peers.get(region)
        if peer is None:
            raise PeerUnavailable(f"bucket {call.bucket!r} lives in {region}, which this region cannot reach")
        # The peer client signs the whole body: an object's content is read into memory to be forwarded.
        body = call.body if call.payload is None else b"".join(call.payload.chunks())
        answer = await peer.forward(call.method, call.target, forwardable(call.headers, call.trailers), body)
        return _relayed(answer)

    async def _source(
        self, bucket: str, key: str, version_id: str | None, byte_range: str | None
    ) -> ObjectContent:
        """A copy source and its bytes, read from this region's store or from the region that owns it."""
        owner = None if self.cluster is None else await self.cluster.owner(bucket)
        if self.cluster is None or owner is None or owner.region == self.region:
            wanted = _byte_range(byte_range) if byte_range else None
            return await run_in_threadpool(
                self.store.get_object, bucket, key, version_id=version_id, byte_range=wanted
            )
        peer = self.cluster.peers.get(owner.region)
        if peer is None:
            raise PeerUnavailable(
                f"bucket {bucket!r} lives in {owner.region}, which this region cannot reach"
            )
        version, data = await peer.get_version(bucket, key, version_id, byte_range)
        first = _first_byte(byte_range, version.size)
        return ObjectContent(version, (data,), first, first + len(data) - 1, byte_range is not None)

    async def _internal(self, request: Request, method: str) -> Response:
        """The endpoints between regions; PeerAuthMiddleware has checked the shared-secret signature."""
        peer = request.scope.get("state", {}).get("peer_region")
        if self.cluster is None or not peer:
            raise AccessDenied("Access Denied: this endpoint serves other regions only")
        path, query = request.scope["path"], request.query_params
        if path == FORWARD_PATH:
            return await self._dispatch(await self._forwarded_call(request, method, peer))
        if path == OBJECTS_PATH and method == "PUT":
            encoded = request.headers.get(VERSION_HEADER, "")
            if digest(encoded) != query.get("version"):
                raise InvalidRequest("the replica's version does not match the signed request")
            try:
                version = version_from_fields(decode_fields(encoded))
            except ValueError as exc:
                raise InvalidRequest(f"the replica's version is malformed: {exc}") from exc
            payload = await self._receive(request, PayloadReader(), request.headers, MAX_PUT)
            try:
                if payload.size != version.size:
                    raise InvalidRequest(
                        f"the replica's body holds {payload.size} bytes; its version says {version.size}"
                    )
                small = payload.size <= _INLINE_BODY
                replica: Body = payload.read(payload.size) if small else payload.chunks()
                written = await self._run(self.store.put_replica, version, replica, big=not small)
            finally:
                payload.close()
            return Response(
                orjson.dumps({"versionId": written.version_id, "status": written.replication_status}),
                media_type="application/json",
            )
        if path == OBJECTS_PATH and method == "GET":
            bucket, key = query.get("bucket", ""), check_key(query.get("key", ""))
            wanted = query.get("range")
            content = await run_in_threadpool(
                self.store.get_object,
                bucket,
                key,
                version_id=query.get("versionId") or None,
                byte_range=_byte_range(wanted) if wanted else None,
            )
            data = await run_in_threadpool(content.read)
            return Response(
                data,
                status_code=206 if content.partial else 200,
                headers={VERSION_HEADER: encode_fields(version_fields(content.version))},
            )
        if path == BUCKETS_PATH and method == "GET":
            held = await self._run(self.store.get_bucket, query.get("name", ""))
            return Response(
                orjson.dumps({"name": held.name, "region": held.region, "createdMs": held.created_ms}),
                media_type="application/json",
            )
        if path == PING_PATH:
            return Response(b"pong", media_type="text/plain")
        raise MethodNotAllowed("The specified method is not allowed against this resource.")

    async def _forwarded_call(self, request: Request, method: str, peer: str) -> _Call:
        query = request.query_params
        encoded = request.headers.get(FORWARDED_HEADERS, "")
        if digest(encoded) != query.get("headers"):
            raise InvalidRequest("the forwarded headers do not match the signed request")
        try:
            headers = {str(k).lower(): str(v) for k, v in decode_fields(encoded).items()}
        except ValueError as exc:
            raise InvalidRequest(f"the forwarded headers are malformed: {exc}") from exc
        raw_path, _, raw_query = query.get("target", "").partition("?")
        if not raw_path.startswith("/"):
            raise InvalidRequest("a forwarded request needs its target")
        # The region that forwarded this request checked its signature and decoded its payload.
        auth = Authorized(f"region:{peer}", UNSIGNED_PAYLOAD, "", b"", "", "", False)
        return await self._call(request, method, raw_path, raw_query, headers, auth, forwarded=True)

    # Helpers.

    async def _run(self, function: Callable[..., T], *args: Any, big: bool = False, **kwargs: Any) -> T:
        """Call the store: on the event loop when it is quick (local, small), else in a worker thread."""
        if self.store.runs_inline and not big:
            return function(*args, **kwargs)
        return await run_in_threadpool(function, *args, **kwargs)

    @staticmethod
    def _key(call: _Call) -> str:
        assert call.key is not None
        return call.key

    @staticmethod
    def _int(value: str | None, default: int, name: str, low: int, high: int) -> int:
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError as exc:
            raise InvalidArgument(f"{name} must be an integer, not {value!r}") from exc
        if not low <= number <= high:
            raise InvalidArgument(f"{name} must be between {low} and {high}")
        return number

    @staticmethod
    def _xml(body: bytes, headers: Mapping[str, str] | None = None) -> Response:
        return Response(body, status_code=200, headers=dict(headers or {}), media_type="application/xml")

    def _error(self, exc: BookstoreError, method: str, request_id: str, request: Request) -> Response:
        code, status = _code_and_status(exc)
        if status >= 500:
            log.warning(
                "s3 %s: %s %s -> %s %s: %s", self.region, method, request.url.path, status, code, exc.message
            )
        headers: dict[str, str] = {}
        extra: dict[str, str] = {"Resource": request.url.path}
        marker = getattr(exc, "delete_marker", False)
        if marker:
            headers["x-amz-delete-marker"] = "true"
            version_id = getattr(exc, "version_id", None)
            if version_id:
                headers["x-amz-version-id"] = version_id
        if isinstance(exc, MethodNotAllowed) and marker:
            headers["Allow"] = "DELETE"
        if isinstance(exc, InvalidRange):
            headers["Content-Range"] = f"bytes */{exc.size}"
            extra["ActualObjectSize"] = str(exc.size)
        if method == "HEAD":
            return Response(status_code=status, headers=headers)
        body = documents.error(code, exc.message, request_id, extra)
        return Response(body, status_code=status, headers=headers, media_type="application/xml")


async def _drain(request: Request) -> None:
    """Read what is left of a refused request's body, so the connection's next request parses cleanly."""
    try:
        async for _ in request.stream():
            pass
    except Exception:
        # Already consumed, or the client went away: nothing is left to drain.
        return


def _carries_content(call: _Call) -> bool:
    """True for PutObject and UploadPart (not copies): their body is an object's content, not a document."""
    if call.method != "PUT" or call.key is None or "x-amz-copy-source" in call.headers:
        return False
    return not any(q in call.query for q in ("tagging", "acl"))


def _content(call: _Call) -> tuple[Body, bool]:
    """An object's content for the store: in memory when small, else read from its spool; and whether big."""
    payload = call.payload
    if payload is None:
        return call.body, len(call.body) > _INLINE_BODY
    if payload.size <= _INLINE_BODY:
        return payload.read(_INLINE_BODY), False
    return payload.chunks(), True


def _creates_bucket(call: _Call) -> bool:
    """True for CreateBucket: a PUT of a bucket that names no sub-resource."""
    return (
        call.method == "PUT"
        and call.key is None
        and not any(q in call.query for q in ("versioning", "replication", "website", "tagging", "acl"))
    )


def _relayed(answer: Forwarded) -> Response:
    """The answer of the region a request was forwarded to, as this region's answer."""
    raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers]
    response: Response
    if answer.stream is not None:
        response = StreamingResponse(answer.stream, status_code=answer.status)
    else:
        response = Response(answer.body or b"", status_code=answer.status)
    response.raw_headers = raw
    return response


def _first_byte(header: str | None, size: int) -> int:
    wanted = _byte_range(header) if header else None
    if wanted is None:
        return 0
    first, last = wanted
    if first is None:
        return max(0, size - (last or 0))
    return first


def _code_and_status(exc: BookstoreError) -> tuple[str, int]:
    if isinstance(exc, S3Error):
        return exc.code, exc.status
    if isinstance(exc, NotSupported):
        return "NotImplemented", 501
    if isinstance(exc, ValidationError):
        return "InvalidArgument", 400
    if isinstance(exc, NotFound):
        return "NoSuchKey", 404
    if isinstance(exc, Forbidden | Unauthorized):
        return "AccessDenied", 403
    if isinstance(exc, Conflict):
        return "OperationAborted", 409
    if isinstance(exc, Unavailable):
        return "ServiceUnavailable", 503
    return "InternalError", 500


def _object_headers(version: ObjectVersion) -> dict[str, str]:
    out = {
        "ETag": f'"{version.etag}"',
        "Last-Modified": documents.http_date(version.last_modified_ms),
        "Content-Type": version.content_type,
        "Accept-Ranges": "bytes",
    }
    if version.version_id != "null":
        out["x-amz-version-id"] = version.version_id
    out.update(version.headers)
    for name, value in version.metadata.items():
        out[f"x-amz-meta-{name}"] = value
    if version.replication_status:
        out["x-amz-replication-status"] = version.replication_status
    if version.tags:
        out["x-amz-tagging-count"] = str(len(version.tags))
    return out


def _byte_range(header: str | None) -> ByteRange | None:
    """The one range of a `bytes=` header; None (the whole object, as S3 does) when absent or unusable."""
    if not header or not header.startswith("bytes="):
        return None
    spec = header[6:].strip()
    if "," in spec:
        return None
    first, dash, last = spec.partition("-")
    if not dash:
        return None
    try:
        if not first.strip():
            return (None, int(last)) if last.strip() else None
        start = int(first)
        end = int(last) if last.strip() else None
    except ValueError:
        return None
    if start < 0 or (end is not None and end < start):
        return None
    return start, end


def _http_ms(value: str) -> int | None:
    try:
        return int(parsedate_to_datetime(value).timestamp() * 1000)
    except (TypeError, ValueError, IndexError):
        return None


def _etag_matches(header: str, etag: str) -> bool:
    return any(t.strip() in ("*", f'"{etag}"', etag) for t in header.split(","))


def _preconditions(version: ObjectVersion, headers: Mapping[str, str]) -> Response | None:
    """The 304 or 412 answer that conditional headers call for, else None."""
    if_match, if_none_match = headers.get("if-match"), headers.get("if-none-match")
    modified_s = version.last_modified_ms // 1000 * 1000
    if if_match is not None and not _etag_matches(if_match, version.etag):
        raise PreconditionFailed("At least one of the pre-conditions you specified did not hold")
    if if_match is None and "if-unmodified-since" in headers:
        since = _http_ms(headers["if-unmodified-since"])
        if since is not None and modified_s > since:
            raise PreconditionFailed("At least one of the pre-conditions you specified did not hold")
    if if_none_match is not None and _etag_matches(if_none_match, version.etag):
        return Response(status_code=304, headers={"ETag": f'"{version.etag}"'})
    if if_none_match is None and "if-modified-since" in headers:
        since = _http_ms(headers["if-modified-since"])
        if since is not None and modified_s <= since:
            return Response(status_code=304, headers={"ETag": f'"{version.etag}"'})
    return None


def _copy_preconditions(source: ObjectVersion, headers: Mapping[str, str]) -> None:
    match = headers.get("x-amz-copy-source-if-match")
    none_match = headers.get("x-amz-copy-source-if-none-match")
    if (match is not None and not _etag_matches(match, source.etag)) or (
        none_match is not None and _etag_matches(none_match, source.etag)
    ):
        raise PreconditionFailed("At least one of the pre-conditions you specified did not hold")


def _copy_source(header: str) -> tuple[str, str, str | None]:
    """(bucket, key, version id) of an x-amz-copy-source header: URL-encoded "bucket/key[?versionId=v]"."""
    path, _, version = header.partition("?versionId=")
    bucket, slash, key = unquote(path).lstrip("/").partition("/")
    if not bucket or not slash or not key:
        raise InvalidArgument("Copy Source must mention the source bucket and key: sourcebucket/sourcekey")
    try:
        check_key(key)
    except KeyTooLongError as exc:
        raise InvalidArgument(f"Copy Source key is invalid: {exc.message}") from exc
    return bucket, key, unquote(version) or None
