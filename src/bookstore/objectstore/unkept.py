"""What S3 answers about features this store does not keep: empty configurations, and Object Lock refused.

A client (the aws CLI, an SDK, a conformance suite, a console) reads these of every bucket; S3 answers
them for a bucket that never had one with an empty document or a 404 of its own code, not an error
of the server. Setting them stays refused (501 NotImplemented), except Object Lock, refused as S3
refuses it on a bucket created without it.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import Response

from bookstore.objectstore import documents
from bookstore.objectstore.context import S3Context, xml
from bookstore.objectstore.errors import (
    InvalidBucketState,
    InvalidRequest,
    NoSuchConfiguration,
    NoSuchPublicAccessBlockConfiguration,
    NotImplementedS3,
    ObjectLockConfigurationNotFoundError,
)
from bookstore.objectstore.request import Call

# GET ?name of a bucket that never had one: the document S3 answers with.
_EMPTY = {
    "accelerate": ("AccelerateConfiguration", ""),
    "logging": ("BucketLoggingStatus", ""),
    "notification": ("NotificationConfiguration", ""),
    "requestPayment": ("RequestPaymentConfiguration", "<Payer>BucketOwner</Payer>"),
    # S3's default since 2023, and the truth here: one owner, ACLs disabled (see acl.py).
    "ownershipControls": (
        "OwnershipControls",
        "<Rule><ObjectOwnership>BucketOwnerEnforced</ObjectOwnership></Rule>",
    ),
}
# GET ?name without an id lists a bucket's configurations of that kind (none); with an id, 404.
_LISTED = {
    "analytics": "ListBucketAnalyticsConfigurationResult",
    "inventory": "ListInventoryConfigurationsResult",
    "metrics": "ListMetricsConfigurationsResult",
    "intelligent-tiering": "ListBucketIntelligentTieringConfigurationsOutput",
}
# Sub-resources of a bucket answered here on GET.
SERVED = frozenset([*_EMPTY, *_LISTED, "publicAccessBlock", "object-lock"])
# Headers of a write asking for Object Lock, which no bucket here has.
_LOCK_HEADERS = frozenset(
    [
        "x-amz-object-lock-mode",
        "x-amz-object-lock-retain-until-date",
        "x-amz-object-lock-legal-hold",
    ]
)
_NO_LOCK = "Bucket is missing Object Lock Configuration"


def served(query: Mapping[str, str]) -> str | None:
    """The sub-resource of a bucket GET this module answers, if any."""
    return next((name for name in SERVED if name in query), None)


async def get_bucket(ctx: S3Context, call: Call, name: str) -> Response:
    """GET ?`name` of a bucket that has none, as S3 answers it."""
    await ctx.run(ctx.store.get_bucket, call.bucket)
    if name in _EMPTY:
        root, inner = _EMPTY[name]
        return xml(documents.document(root, inner))
    if name in _LISTED:
        if "id" in call.query:
            raise NoSuchConfiguration("The specified configuration does not exist.")
        return xml(documents.document(_LISTED[name], "<IsTruncated>false</IsTruncated>"))
    if name == "publicAccessBlock":
        raise NoSuchPublicAccessBlockConfiguration("The public access block configuration was not found")
    raise ObjectLockConfigurationNotFoundError("Object Lock configuration does not exist for this bucket")


async def put_object_lock(ctx: S3Context, call: Call) -> Response:
    """PutObjectLockConfiguration: S3 refuses it on a bucket made without Object Lock (all, here)."""
    await ctx.run(ctx.store.get_bucket, call.bucket)
    raise InvalidBucketState("Object Lock configuration cannot be enabled on existing buckets")


def refuse_lock_on_create(headers: Mapping[str, str]) -> None:
    """CreateBucket asking for Object Lock: a feature this store does not have (NotImplemented)."""
    if headers.get("x-amz-bucket-object-lock-enabled", "").lower() == "true":
        raise NotImplementedS3(
            "A header you provided implies functionality that is not implemented: "
            "x-amz-bucket-object-lock-enabled (Object Lock is out of scope)"
        )


def refuse_lock_on_write(headers: Mapping[str, str]) -> None:
    """A write carrying Object Lock headers, refused as S3 refuses it on a bucket without Object Lock."""
    if not _LOCK_HEADERS.isdisjoint(headers):
        raise InvalidRequest(_NO_LOCK)


async def object_lock_state(ctx: S3Context, call: Call) -> Response:
    """Get/PutObjectRetention and Get/PutObjectLegalHold: S3's answer on a bucket without Object Lock."""
    await ctx.run(ctx.store.get_bucket, call.bucket)
    raise InvalidRequest(_NO_LOCK)
