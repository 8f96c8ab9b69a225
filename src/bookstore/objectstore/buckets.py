"""S3 handlers of buckets: ListBuckets, CreateBucket, HeadBucket, DeleteBucket, ListObjects(V2),
ListObjectVersions and DeleteObjects.
"""

from __future__ import annotations

from starlette.responses import Response

from bookstore.objectstore import documents
from bookstore.objectstore.context import S3Context, xml
from bookstore.objectstore.errors import (
    BucketAlreadyExists,
    IllegalLocationConstraintException,
    InvalidArgument,
    MalformedXML,
    S3Error,
)
from bookstore.objectstore.port import check_bucket_name, check_key
from bookstore.objectstore.request import Call, int_param


async def list_buckets(ctx: S3Context) -> Response:
    listing = ctx.store.list_buckets if ctx.cluster is None else ctx.cluster.all_buckets
    return xml(documents.list_buckets(await ctx.run(listing), documents.OWNER_ID))


async def head_bucket(ctx: S3Context, call: Call) -> Response:
    bucket = await ctx.run(ctx.store.get_bucket, call.bucket)
    return Response(status_code=200, headers={"x-amz-bucket-region": bucket.region})


async def delete_bucket(ctx: S3Context, call: Call) -> Response:
    await ctx.run(ctx.store.delete_bucket, call.bucket)
    if ctx.cluster is not None:
        ctx.cluster.directory.release(call.bucket)
    return Response(status_code=204)


async def create_bucket(ctx: S3Context, call: Call) -> Response:
    constraint = ""
    if call.body.strip():
        doc = documents.parse(call.body, "CreateBucketConfiguration")
        constraint = str(doc.get("LocationConstraint") or "")
    constraint = {"EU": "eu-west-1"}.get(constraint, constraint)
    cluster = ctx.cluster
    if constraint and constraint != ctx.region:
        if cluster is not None and not call.forwarded and constraint in cluster.peers:
            return await ctx.forward(call, constraint)
        raise IllegalLocationConstraintException(
            f"The {constraint} location constraint is incompatible for the region specific endpoint "
            f"this request was sent to ({ctx.region})."
        )
    if cluster is None:
        await ctx.run(ctx.store.create_bucket, call.bucket)
    else:
        check_bucket_name(call.bucket)
        owner = await cluster.owner(call.bucket)
        if owner is not None and owner.region != ctx.region:
            raise BucketAlreadyExists(
                f"The requested bucket name {call.bucket!r} is not available: it exists in {owner.region}"
            )
        # Listed before it is created: a crash in between leaves an entry that a retry completes.
        cluster.directory.claim(call.bucket, ctx.now_ms())
        await ctx.run(ctx.store.create_bucket, call.bucket)
    return Response(status_code=200, headers={"Location": f"/{call.bucket}"})


async def list_objects(ctx: S3Context, call: Call) -> Response:
    query = call.query
    v2 = query.get("list-type") == "2"
    prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
    max_keys = int_param(query.get("max-keys"), 1000, "max-keys", 0, 2**31)
    encoding = query.get("encoding-type")
    if encoding not in (None, "url"):
        raise InvalidArgument("Invalid Encoding Method specified in Request")
    token = query.get("continuation-token") if v2 else None
    start_after = query.get("start-after", "") if v2 else query.get("marker", "")
    page = await ctx.run(
        ctx.store.list_objects,
        call.bucket,
        prefix=prefix,
        delimiter=delimiter,
        start_after=start_after,
        token=token or None,
        max_keys=min(max_keys, 1000),
    )
    listing = documents.Listing(encode=encoding == "url")
    owner = documents.OWNER_ID if (not v2 or query.get("fetch-owner") == "true") else None
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
            # S3 leaves v1's Prefix as sent under encoding-type=url (SDKs decode only the others).
            Prefix=documents.text(prefix),
            Marker=listing.name(start_after),
            NextMarker=listing.name(last) if page.is_truncated and last is not None else None,
            MaxKeys=max_keys,
            Delimiter=listing.name(delimiter) if delimiter else None,
            EncodingType=encoding,
            IsTruncated=page.is_truncated,
        )
    return xml(documents.document("ListBucketResult", head + entries))


async def list_versions(ctx: S3Context, call: Call) -> Response:
    query = call.query
    prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
    key_marker, version_marker = query.get("key-marker", ""), query.get("version-id-marker", "")
    max_keys = int_param(query.get("max-keys"), 1000, "max-keys", 0, 2**31)
    encoding = query.get("encoding-type")
    if encoding not in (None, "url"):
        raise InvalidArgument("Invalid Encoding Method specified in Request")
    page = await ctx.run(
        ctx.store.list_versions,
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
    body = head + listing.versions(page.versions, documents.OWNER_ID) + listing.prefixes(page.common_prefixes)
    return xml(documents.document("ListVersionsResult", body))


async def delete_objects(ctx: S3Context, call: Call) -> Response:
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
            result = await ctx.run(ctx.store.delete_object, call.bucket, key, version_id=version_id or None)
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
    return xml(documents.delete_result(deleted, errors))
