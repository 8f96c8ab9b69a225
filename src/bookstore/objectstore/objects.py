"""S3 handlers of objects: GetObject, HeadObject, PutObject, CopyObject, DeleteObject and object tagging."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable, Iterator
from functools import partial

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from bookstore.objectstore import attributes, documents, encryption, inputs, parts
from bookstore.objectstore import headers as rules
from bookstore.objectstore.context import S3Context, release, xml
from bookstore.objectstore.errors import (
    InvalidArgument,
    InvalidRequest,
    NoSuchKey,
)
from bookstore.objectstore.port import ByteRange, ObjectVersion
from bookstore.objectstore.request import Call, object_content
from bookstore.objectstore.tags import MAX_OBJECT_TAGS, from_document

# What a streamed answer takes from the store per worker-thread hop. A hop costs about 100 us of CPU
# and a MiB piece about 200 us to read and decrypt: one hop a piece (as Starlette iterates a plain
# iterable) was a third of an 8 MiB GET's server CPU. Four pieces a hop hold at most 4 MiB more per
# answer in flight, while the transport's flow control keeps the socket's side to a piece.
HOP_BYTES = 4 * 1024 * 1024


async def get_tagging(ctx: S3Context, call: Call) -> Response:
    version = await ctx.run(
        ctx.store.head_object, call.bucket, call.object_key, version_id=call.query.get("versionId")
    )
    response = xml(documents.tagging(version.tags))
    response.headers["x-amz-version-id"] = version.version_id
    return response


async def delete_tagging(ctx: S3Context, call: Call) -> Response:
    version_id = await ctx.run(
        ctx.store.put_tags, call.bucket, call.object_key, {}, version_id=call.query.get("versionId")
    )
    return Response(status_code=204, headers={"x-amz-version-id": version_id})


async def get(ctx: S3Context, call: Call, *, head: bool) -> Response:
    query, headers = call.query, call.headers
    version_id = query.get("versionId") or None
    byte_range = None if head else rules.byte_range(headers.get("range"))
    by_part: tuple[ByteRange | None, int] | None = None
    if "partNumber" in query:
        by_part = await parts.part(ctx, call, version_id)
        byte_range = by_part[0]
    customer_key = encryption.customer_key(headers)
    if head:
        version = await ctx.run(
            ctx.store.head_object,
            call.bucket,
            call.object_key,
            version_id=version_id,
            customer_key=customer_key,
        )
        content = None
    else:
        content = await ctx.run(
            ctx.store.get_object,
            call.bucket,
            call.object_key,
            version_id=version_id,
            byte_range=byte_range,
            customer_key=customer_key,
        )
        version = content.version
    answer = rules.preconditions(version, headers)
    if answer is not None:
        return answer
    out = rules.object_headers(version)
    whole = by_part is None and (content is None or not content.partial)
    out.update(attributes.read_headers(version, headers, whole=whole))
    out.update(inputs.response_overrides(query))
    if by_part is not None:
        out.update(parts.part_headers(by_part[1]))
    if content is None and by_part is not None and by_part[0] is not None:
        # HEAD of a part: its size and place, as a GET of it would answer.
        first = by_part[0][0] or 0
        last = version.size - 1 if by_part[0][1] is None else by_part[0][1]
        out["Content-Range"] = f"bytes {first}-{last}/{version.size}"
        out["Content-Length"] = str(max(0, last - first + 1))
        return Response(status_code=206, headers=out)
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
    return StreamingResponse(
        streamed(content.body, content.last - content.first + 1), status_code=status, headers=out
    )


async def streamed(body: Iterable[bytes], length: int) -> AsyncGenerator[bytes, None]:
    """The `length` bytes of a stored body, taken in a worker thread HOP_BYTES at a time; no hop only
    to find the end, and the body closed (its file with it) however the answer ends."""
    pieces = iter(body)
    try:
        while length > 0:
            batch = await run_in_threadpool(_take, pieces, min(length, HOP_BYTES))
            if not batch:
                return
            batch.reverse()
            while batch:
                piece = batch.pop()
                length -= len(piece)
                yield piece
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()


def _take(pieces: Iterator[bytes], want: int) -> list[bytes]:
    """The next pieces, until they hold `want` bytes or the body ends."""
    batch: list[bytes] = []
    for piece in pieces:
        batch.append(piece)
        want -= len(piece)
        if want <= 0:
            break
    return batch


async def current(ctx: S3Context, bucket: str, key: str) -> ObjectVersion | None:
    """The key's current version, or None when it has none (or a delete marker is current)."""
    try:
        return await ctx.run(ctx.store.head_object, bucket, key)
    except NoSuchKey:
        return None
    except InvalidRequest:
        # An SSE-C version, which a HEAD without its key may not read: conditions need only its ETag,
        # which a listing gives without the key.
        page = await ctx.run(ctx.store.list_objects, bucket, prefix=key, max_keys=1)
        return next((v for v in page.objects if v.key == key), None)


async def put(ctx: S3Context, call: Call) -> Response:
    fields = rules.write_fields(call.headers)
    customer_key = attributes.write_key(call.headers)
    body, big = object_content(call)
    key = call.object_key
    write = partial(
        ctx.run,
        ctx.store.put_object,
        call.bucket,
        key,
        body,
        big=big,
        checksum=attributes.verified_checksum(call.verified),
        customer_key=customer_key,
        **fields,
    )
    version = await ctx.conditions.guarded(
        call.bucket, key, call.headers, lambda: current(ctx, call.bucket, key), write
    )
    out = {"ETag": f'"{version.etag}"', **call.verified, **attributes.written_headers(version)}
    if version.version_id != "null":
        out["x-amz-version-id"] = version.version_id
    return Response(status_code=200, headers=out)


async def copy(ctx: S3Context, call: Call) -> Response:
    source_bucket, source_key, source_version = rules.copy_source(call.headers["x-amz-copy-source"])
    key = call.object_key
    directive = call.headers.get("x-amz-metadata-directive", "COPY").upper()
    tag_directive = call.headers.get("x-amz-tagging-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE") or tag_directive not in ("COPY", "REPLACE"):
        raise InvalidArgument("x-amz-metadata-directive and x-amz-tagging-directive are COPY or REPLACE")
    # Copying an object onto itself is how S3 changes its encryption (SSE-C to SSE-S3, or a new key).
    encrypts = any(h in call.headers for h in ("x-amz-server-side-encryption", encryption.CUSTOMER + "key"))
    same = (source_bucket, source_key) == (call.bucket, key) and source_version is None
    if same and directive == "COPY" and not encrypts:
        raise InvalidRequest(
            "This copy request is illegal because it is trying to copy an object to itself without "
            "changing the object's metadata, storage class, website redirect location or encryption "
            "attributes."
        )
    fields = rules.write_fields(call.headers)
    customer_key = attributes.write_key(call.headers)
    source_sse = encryption.customer_key(call.headers, encryption.COPY_CUSTOMER)
    content = await ctx.source(source_bucket, source_key, source_version, None, customer_key=source_sse)
    try:
        source = content.version
        rules.copy_preconditions(source, call.headers)
        write = dict(fields)
        if directive == "COPY":
            write.update(content_type=source.content_type, metadata=source.metadata, headers=source.headers)
        if tag_directive == "COPY":
            write["tags"] = source.tags
        # The content is the same: so is a whole-object checksum (a composite one is of the parts).
        checksum = source.checksum if source.checksum and source.checksum.type == "FULL_OBJECT" else None
        version = await run_in_threadpool(
            ctx.store.put_object,
            call.bucket,
            key,
            content.body,
            checksum=checksum,
            customer_key=customer_key,
            **write,
        )
    finally:
        await release(content)
    out = {"x-amz-copy-source-version-id": source.version_id, **attributes.written_headers(version)}
    if version.version_id != "null":
        out["x-amz-version-id"] = version.version_id
    return xml(documents.copy_result("CopyObjectResult", version.etag, version.last_modified_ms), out)


async def delete(ctx: S3Context, call: Call) -> Response:
    version_id = call.query.get("versionId") or None
    result = await ctx.run(ctx.store.delete_object, call.bucket, call.object_key, version_id=version_id)
    out = {}
    if result.version_id:
        out["x-amz-version-id"] = result.version_id
    if result.delete_marker:
        out["x-amz-delete-marker"] = "true"
    return Response(status_code=204, headers=out)


async def put_tagging(ctx: S3Context, call: Call) -> Response:
    tags = from_document(call.body, MAX_OBJECT_TAGS)
    version_id = await ctx.run(
        ctx.store.put_tags,
        call.bucket,
        call.object_key,
        tags,
        version_id=call.query.get("versionId") or None,
    )
    return Response(status_code=200, headers={"x-amz-version-id": version_id})
