"""Which S3 operation a request is: from its method, bucket, key and sub-resource (query) to its handler.

A request for a bucket that lives in another region is forwarded to that region (S3Context.forward),
unless it was forwarded here already or it creates a bucket (which goes where its LocationConstraint says).
"""

from __future__ import annotations

from starlette.responses import Response

from bookstore.objectstore import (
    acl,
    attributes,
    bucket_configs,
    bucket_encryption,
    bucket_tags,
    buckets,
    cors,
    lifecycle,
    multipart,
    objects,
    policy,
    post_object,
    unkept,
    uploads,
)
from bookstore.objectstore.context import S3Context
from bookstore.objectstore.errors import MethodNotAllowed, NotImplementedS3
from bookstore.objectstore.port import check_key
from bookstore.objectstore.request import Call, creates_bucket

# Query keys that name an S3 sub-resource this API does not serve (answered 501, never misrouted).
_UNSERVED = frozenset(["policyStatus", "restore", "select", "session", "torrent"])
# Bucket sub-resources served on GET only (PUT, DELETE and any of an object stay 501); see unkept.py.
_READ_ONLY = frozenset(["accelerate", "analytics", "intelligent-tiering", "inventory", "logging", "metrics"])
_READ_ONLY |= frozenset(["notification", "ownershipControls", "publicAccessBlock", "requestPayment"])
# Bucket sub-resources that S3 has no DELETE of.
_NOT_DELETED = frozenset(["acl", "location", "object-lock", "uploads", "versioning", "versions", "delete"])


def _not_allowed() -> MethodNotAllowed:
    return MethodNotAllowed("The specified method is not allowed against this resource.")


async def dispatch(ctx: S3Context, call: Call) -> Response:
    """The answer to `call`: served by this region's store, or by the region that owns the bucket."""
    method, query = call.method, call.query
    unserved = _UNSERVED.intersection(query)
    if method != "GET" or call.key is not None:
        unserved |= _READ_ONLY.intersection(query)
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
        if "tagging" in query:
            return await bucket_tags.put_bucket_tagging(ctx, call)
        if "acl" in query:
            return await acl.put_bucket_acl(ctx, call)
        if "object-lock" in query:
            return await unkept.put_object_lock(ctx, call)
        acl.check_headers(call.headers)
        unkept.refuse_lock_on_create(call.headers)
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
        if "tagging" in query:
            return await bucket_tags.get_bucket_tagging(ctx, call)
        if "acl" in query:
            return await acl.get_bucket_acl(ctx, call)
        if "uploads" in query:
            return await uploads.list_uploads(ctx, call)
        other = unkept.served(query)
        if other is not None:
            return await unkept.get_bucket(ctx, call, other)
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
            return await bucket_tags.delete_bucket_tagging(ctx, call)
        if _NOT_DELETED.intersection(query):
            # A sub-resource with no DELETE must never fall through to deleting the bucket.
            raise _not_allowed()
        return await buckets.delete_bucket(ctx, call)
    if method == "POST" and "delete" in query:
        return await buckets.delete_objects(ctx, call)
    if post_object.is_form(method, call.key, call.headers):
        return await post_object.post_object(ctx, call)
    raise _not_allowed()


async def _object(ctx: S3Context, call: Call) -> Response:
    method, query = call.method, call.query
    if "retention" in query or "legal-hold" in query:
        return await unkept.object_lock_state(ctx, call)
    if method == "GET":
        if "uploadId" in query:
            return await multipart.list_parts(ctx, call)
        if "tagging" in query:
            return await objects.get_tagging(ctx, call)
        if "acl" in query:
            return await acl.get_object_acl(ctx, call)
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
            return await acl.put_object_acl(ctx, call)
        acl.check_headers(call.headers)
        unkept.refuse_lock_on_write(call.headers)
        if "x-amz-copy-source" in call.headers:
            return await objects.copy(ctx, call)
        return await objects.put(ctx, call)
    if method == "DELETE":
        if "uploadId" in query:
            return await multipart.abort_upload(ctx, call)
        if "tagging" in query:
            return await objects.delete_tagging(ctx, call)
        if "acl" in query:
            raise _not_allowed()  # an object's ACL has no DELETE; the object stays
        return await objects.delete(ctx, call)
    if method == "POST":
        if "uploads" in query:
            acl.check_headers(call.headers)
            unkept.refuse_lock_on_write(call.headers)
            return await multipart.create_upload(ctx, call)
        if "uploadId" in query:
            return await multipart.complete_upload(ctx, call)
    raise _not_allowed()
