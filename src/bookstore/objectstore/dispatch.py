"""Which S3 operation a request is: from its method, bucket, key and sub-resource (query) to its handler.

A request for a bucket that lives in another region is forwarded to that region (S3Context.forward),
unless it was forwarded here already or it creates a bucket (which goes where its LocationConstraint says).
"""

from __future__ import annotations

from starlette.responses import Response

from bookstore.objectstore import (
    attributes,
    bucket_configs,
    bucket_encryption,
    buckets,
    cors,
    lifecycle,
    multipart,
    objects,
    policy,
)
from bookstore.objectstore.context import S3Context
from bookstore.objectstore.errors import MethodNotAllowed, NotImplementedS3
from bookstore.objectstore.port import check_key
from bookstore.objectstore.request import Call, creates_bucket

# Query keys that name an S3 sub-resource this API does not serve (answered 501, never misrouted).
_UNSERVED = frozenset(
    [
        "accelerate",
        "analytics",
        "intelligent-tiering",
        "inventory",
        "legal-hold",
        "logging",
        "metrics",
        "notification",
        "object-lock",
        "ownershipControls",
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


def _not_allowed() -> MethodNotAllowed:
    return MethodNotAllowed("The specified method is not allowed against this resource.")


async def dispatch(ctx: S3Context, call: Call) -> Response:
    """The answer to `call`: served by this region's store, or by the region that owns the bucket."""
    method, query = call.method, call.query
    unserved = _UNSERVED.intersection(query)
    if unserved:
        raise NotImplementedS3(
            "A header or query you provided implies functionality that is not implemented: "
            + ", ".join(sorted(unserved))
        )
    if not call.bucket:
        if method == "GET":
            return await buckets.list_buckets(ctx)
        raise _not_allowed()
    if ctx.cluster is not None and not call.forwarded and not creates_bucket(call):
        owner = await ctx.cluster.owner(call.bucket)
        if owner is not None and owner.region != ctx.region:
            return await ctx.forward(call, owner.region)
    if call.key is None:
        return await _bucket(ctx, call)
    check_key(call.key)
    return await _object(ctx, call)


async def _bucket(ctx: S3Context, call: Call) -> Response:
    method, query = call.method, call.query
    if method == "PUT":
        if "versioning" in query:
            return await bucket_configs.put_versioning(ctx, call)
        if "replication" in query:
            return await bucket_configs.put_replication(ctx, call)
        if "website" in query:
            return await bucket_configs.put_website(ctx, call)
        if "policy" in query:
            return await policy.put_policy(ctx, call)
        if "cors" in query:
            return await cors.put_cors(ctx, call)
        if "lifecycle" in query:
            return await lifecycle.put_lifecycle(ctx, call)
        if "encryption" in query:
            return await bucket_encryption.put_encryption(ctx, call)
        if "tagging" in query or "acl" in query:
            raise NotImplementedS3("Bucket tagging and ACLs are not implemented")
        return await buckets.create_bucket(ctx, call)
    if method == "GET":
        if "versioning" in query:
            return await bucket_configs.get_versioning(ctx, call)
        if "replication" in query:
            return await bucket_configs.get_replication(ctx, call)
        if "website" in query:
            return await bucket_configs.get_website(ctx, call)
        if "policy" in query:
            return await policy.get_policy(ctx, call)
        if "cors" in query:
            return await cors.get_cors(ctx, call)
        if "lifecycle" in query:
            return await lifecycle.get_lifecycle(ctx, call)
        if "encryption" in query:
            return await bucket_encryption.get_encryption(ctx, call)
        if "location" in query:
            return await bucket_configs.get_location(ctx, call)
        if "versions" in query:
            return await buckets.list_versions(ctx, call)
        if "uploads" in query or "tagging" in query or "acl" in query:
            raise NotImplementedS3("ListMultipartUploads, bucket tagging and ACLs are not implemented")
        return await buckets.list_objects(ctx, call)
    if method == "HEAD":
        return await buckets.head_bucket(ctx, call)
    if method == "OPTIONS":
        return await cors.preflight(ctx, call)
    if method == "DELETE":
        if "replication" in query:
            return await bucket_configs.delete_replication(ctx, call)
        if "website" in query:
            return await bucket_configs.delete_website(ctx, call)
        if "policy" in query:
            return await policy.delete_policy(ctx, call)
        if "cors" in query:
            return await cors.delete_cors(ctx, call)
        if "lifecycle" in query:
            return await lifecycle.delete_lifecycle(ctx, call)
        if "encryption" in query:
            return await bucket_encryption.delete_encryption(ctx, call)
        if "tagging" in query:
            raise NotImplementedS3("Bucket tagging is not implemented")
        return await buckets.delete_bucket(ctx, call)
    if method == "POST" and "delete" in query:
        return await buckets.delete_objects(ctx, call)
    raise _not_allowed()


async def _object(ctx: S3Context, call: Call) -> Response:
    method, query = call.method, call.query
    if method == "GET":
        if "uploadId" in query:
            return await multipart.list_parts(ctx, call)
        if "tagging" in query:
            return await objects.get_tagging(ctx, call)
        if "attributes" in query:
            return await attributes.get_attributes(ctx, call)
        return await objects.get(ctx, call, head=False)
    if method == "HEAD":
        return await objects.get(ctx, call, head=True)
    if method == "OPTIONS":
        return await cors.preflight(ctx, call)
    if method == "PUT":
        if "partNumber" in query and "uploadId" in query:
            return await multipart.upload_part(ctx, call)
        if "tagging" in query:
            return await objects.put_tagging(ctx, call)
        if "acl" in query:
            raise NotImplementedS3("Object ACLs are not implemented")
        if "x-amz-copy-source" in call.headers:
            return await objects.copy(ctx, call)
        return await objects.put(ctx, call)
    if method == "DELETE":
        if "uploadId" in query:
            return await multipart.abort_upload(ctx, call)
        if "tagging" in query:
            return await objects.delete_tagging(ctx, call)
        return await objects.delete(ctx, call)
    if method == "POST":
        if "uploads" in query:
            return await multipart.create_upload(ctx, call)
        if "uploadId" in query:
            return await multipart.complete_upload(ctx, call)
    raise _not_allowed()
