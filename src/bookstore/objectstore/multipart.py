"""S3 handlers of multipart uploads: create, upload a part (or copy one), list parts, complete, abort."""

from __future__ import annotations

from functools import partial
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from bookstore.objectstore import attributes, checksums, documents, encryption, objects
from bookstore.objectstore import headers as rules
from bookstore.objectstore.completed import Completed
from bookstore.objectstore.context import S3Context, release, xml
from bookstore.objectstore.errors import (
    InvalidArgument,
    InvalidRange,
    MalformedXML,
    NoSuchUpload,
    PreconditionFailed,
)
from bookstore.objectstore.request import Call, int_param, object_content


async def abort_upload(ctx: S3Context, call: Call) -> Response:
    await ctx.run(ctx.store.abort_upload, call.bucket, call.object_key, call.query["uploadId"])
    return Response(status_code=204)


async def create_upload(ctx: S3Context, call: Call) -> Response:
    key = call.object_key
    fields = rules.write_fields(call.headers)
    customer_key = attributes.write_key(call.headers)
    checksum = attributes.upload_checksum(call.headers)
    upload_id = await ctx.run(
        ctx.store.create_upload, call.bucket, key, checksum=checksum, customer_key=customer_key, **fields
    )
    out = encryption.response_headers(
        encryption.SSE_S3 if customer_key is None else encryption.SSE_C,
        "" if customer_key is None else customer_key.md5,
    )
    if checksum is not None:
        out.update({"x-amz-checksum-algorithm": checksum[0], "x-amz-checksum-type": checksum[1]})
    return xml(documents.initiate_upload(call.bucket, key, upload_id), out)


async def upload_part(ctx: S3Context, call: Call) -> Response:
    number = int_param(call.query.get("partNumber"), 0, "partNumber", 1, 10_000)
    upload_id = call.query["uploadId"]
    key = call.object_key
    if "x-amz-copy-source" in call.headers:
        source_bucket, source_key, source_version = rules.copy_source(call.headers["x-amz-copy-source"])
        wanted = call.headers.get("x-amz-copy-source-range")
        byte_range = rules.byte_range(wanted) if wanted else None
        if wanted and byte_range is None:
            raise InvalidArgument("The x-amz-copy-source-range value must be of the form bytes=first-last")

        if byte_range is not None and byte_range[0] is None:
            raise InvalidArgument("The x-amz-copy-source-range value must be of the form bytes=first-last")
        try:
            content = await ctx.source(
                source_bucket,
                source_key,
                source_version,
                wanted if byte_range else None,
                customer_key=encryption.customer_key(call.headers, encryption.COPY_CUSTOMER),
            )
        except InvalidRange as exc:
            raise InvalidArgument(
                f"Range specified is not valid for source object of size: {exc.size}"
            ) from exc
        try:
            size = content.version.size
            if byte_range is not None and (byte_range[1] is None or byte_range[1] >= size):
                # S3 copies a part's range exactly or not at all: it never clips one past the end.
                raise InvalidArgument(f"Range specified is not valid for source object of size: {size}")
            rules.copy_preconditions(content.version, call.headers)
            part = await run_in_threadpool(
                ctx.store.upload_part,
                call.bucket,
                key,
                upload_id,
                number,
                content.body,
                customer_key=encryption.customer_key(call.headers),
                copied=True,
            )
        finally:
            await release(content)
        return xml(
            documents.copy_result("CopyPartResult", part.etag, part.last_modified_ms),
            {"x-amz-copy-source-version-id": content.version.version_id},
        )
    customer_key = encryption.customer_key(call.headers)
    body, _ = object_content(call)
    part = await ctx.run(
        ctx.store.upload_part,
        call.bucket,
        key,
        upload_id,
        number,
        body,
        big=True,
        checksum=attributes.verified_checksum(call.verified),
        customer_key=customer_key,
    )
    out = {"ETag": f'"{part.etag}"', **call.verified}
    if customer_key is not None:
        out.update(encryption.response_headers(encryption.SSE_C, customer_key.md5))
    else:
        out.update(encryption.response_headers(encryption.SSE_S3, ""))
    return Response(status_code=200, headers=out)


async def list_parts(ctx: S3Context, call: Call) -> Response:
    key = call.object_key
    upload_id = call.query["uploadId"]
    marker = int_param(call.query.get("part-number-marker"), 0, "part-number-marker", 0, 10_000)
    max_parts = int_param(call.query.get("max-parts"), 1000, "max-parts", 0, 2**31)
    parts = [p for p in await ctx.run(ctx.store.list_parts, call.bucket, key, upload_id) if p.number > marker]
    page = parts[: min(max_parts, 1000)]
    body = documents.list_parts(
        call.bucket,
        key,
        upload_id,
        page,
        marker=marker,
        max_parts=max_parts,
        truncated=len(parts) > len(page),
        owner_id=documents.OWNER_ID,
    )
    return xml(body)


async def complete_upload(ctx: S3Context, call: Call) -> Response:
    key = call.object_key
    doc = documents.parse(call.body, "CompleteMultipartUpload")
    parts = []
    for part in doc.get("Parts", []):
        if not isinstance(part, dict) or "PartNumber" not in part or "ETag" not in part:
            raise MalformedXML("Each Part needs a PartNumber and an ETag")
        number = int_param(documents.scalar(part["PartNumber"], "PartNumber"), 0, "PartNumber", 1, 10_000)
        parts.append((number, documents.scalar(part["ETag"], "ETag")))
    await attributes.check_part_checksums(ctx, call, doc.get("Parts", []))
    upload_id = call.query["uploadId"]
    try:
        complete = partial(
            ctx.run,
            ctx.store.complete_upload,
            call.bucket,
            key,
            upload_id,
            parts,
            big=True,
            expected=checksums.named(call.headers),
        )
        version = await ctx.conditions.guarded(
            call.bucket, key, call.headers, lambda: objects.current(ctx, call.bucket, key), complete
        )
    except (NoSuchUpload, PreconditionFailed):
        # A retry of a complete that succeeded (its answer lost to a timeout) answers as the first did.
        done = ctx.completed.get(call.bucket, key, upload_id, ctx.now_ms())
        if done is None:
            raise
        return _completed(done)
    done = Completed(
        call.bucket,
        key,
        version.version_id,
        version.etag,
        ctx.now_ms(),
        attributes.checksum_elements(version.checksum),
        tuple(encryption.response_headers(version.encryption, version.sse_key_md5).items()),
    )
    ctx.completed.add(upload_id, done)
    return _completed(done)


def _completed(done: Completed) -> Response:
    """The answer of a completed upload, the same to the first request and to a retry."""
    out = dict(done.headers)
    if done.version_id != "null":
        out["x-amz-version-id"] = done.version_id
    location = f"/{quote(done.bucket)}/{quote(done.key)}"
    return xml(documents.complete_upload(location, done.bucket, done.key, done.etag, done.checksum), out)
