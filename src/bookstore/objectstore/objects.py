"""S3 handlers of objects: GetObject, HeadObject, PutObject, CopyObject, DeleteObject and object tagging."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from bookstore.objectstore import attributes, documents, encryption, inputs
from bookstore.objectstore import headers as rules
from bookstore.objectstore.context import S3Context, release, xml
from bookstore.objectstore.errors import InvalidArgument, InvalidRequest, MalformedXML, NotImplementedS3
from bookstore.objectstore.request import Call, object_content


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
    if "partNumber" in query:
        raise NotImplementedS3("GET and HEAD by partNumber are not implemented")
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
    out.update(attributes.read_headers(version, headers, whole=content is None or not content.partial))
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


async def put(ctx: S3Context, call: Call) -> Response:
    fields = rules.write_fields(call.headers)
    customer_key = attributes.write_key(call.headers)
    body, big = object_content(call)
    version = await ctx.run(
        ctx.store.put_object,
        call.bucket,
        call.object_key,
        body,
        big=big,
        checksum=attributes.verified_checksum(call.verified),
        customer_key=customer_key,
        **fields,
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
    doc = documents.parse(call.body, "Tagging")
    tag_set = doc.get("TagSet", [])
    if not isinstance(tag_set, list) or not all(isinstance(t, dict) and "Key" in t for t in tag_set):
        raise MalformedXML("Tagging holds a TagSet of Tag elements with Key and Value")
    tags = {documents.scalar(t["Key"], "Key"): documents.scalar(t.get("Value", ""), "Value") for t in tag_set}
    if len(tags) > 10:
        raise InvalidArgument("Object tags cannot be greater than 10")
    version_id = await ctx.run(
        ctx.store.put_tags,
        call.bucket,
        call.object_key,
        tags,
        version_id=call.query.get("versionId") or None,
    )
    return Response(status_code=200, headers={"x-amz-version-id": version_id})
