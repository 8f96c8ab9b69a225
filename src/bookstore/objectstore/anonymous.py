"""Unsigned requests: CORS preflights, and the anonymous reads a bucket policy allows.

Every other request must be signed (sigv4). An unsigned GET or HEAD of an object is served when the
bucket's policy allows s3:GetObject (s3:GetObjectVersion with a versionId) to everyone on that object
(objectstore.policy); anything else unsigned is refused with AccessDenied, as before. The policy lives
with the bucket, so a region that does not own the bucket forwards the request marked anonymous
(MARKER, a header only the regions' signed forwarding can carry: a client's is dropped) and the owner
decides.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import Response

from bookstore.objectstore import policy, post_object
from bookstore.objectstore.context import S3Context
from bookstore.objectstore.dispatch import dispatch
from bookstore.objectstore.errors import AccessDenied, NoSuchBucket, NoSuchKey
from bookstore.objectstore.request import Call
from bookstore.objectstore.sigv4 import UNSIGNED_PAYLOAD, Authorized, SigV4

ANONYMOUS = Authorized("", UNSIGNED_PAYLOAD, "", b"", "", "", False)
MARKER = "x-bookstore-anonymous"
_DENIED = "Access Denied: anonymous requests are refused unless the bucket policy allows them"
# Query parameters an anonymous GetObject may carry (response-* overrides need a signature on S3).
_ANONYMOUS_QUERY = frozenset(["versionId", "partNumber"])


def _unsigned(raw_query: str, headers: Mapping[str, str]) -> bool:
    query = raw_query.lower()
    return (
        "authorization" not in headers and "x-amz-signature=" not in query and "awsaccesskeyid=" not in query
    )


def authorize(
    signer: SigV4, method: str, raw_path: str, raw_query: str, headers: dict[str, str]
) -> Authorized:
    """ANONYMOUS for an unsigned preflight, GET or HEAD (judged later by `serve`); else SigV4's check."""
    headers.pop(MARKER, None)
    if method == "OPTIONS" or (method in ("GET", "HEAD") and _unsigned(raw_query, headers)):
        return ANONYMOUS
    # A browser's form upload is signed inside the form (its policy), checked by post_object.
    if method == "POST" and _unsigned(raw_query, headers) and _form_to_bucket(raw_path, headers):
        return ANONYMOUS
    return signer.authorize(method, raw_path, raw_query, headers)


def _form_to_bucket(raw_path: str, headers: Mapping[str, str]) -> bool:
    bucket, _, key = raw_path.lstrip("/").partition("/")
    return bool(bucket) and post_object.is_form("POST", key or None, headers)


def forwarded_auth(headers: Mapping[str, str], auth: Authorized) -> Authorized:
    """A forwarded request's identity: ANONYMOUS when the forwarding region marked it so."""
    return ANONYMOUS if headers.get(MARKER) else auth


async def serve(ctx: S3Context, call: Call) -> Response:
    """Answer an unsigned call: forwarded to the bucket's owner, or admitted here by the bucket's policy."""
    if ctx.cluster is not None and not call.forwarded and call.bucket:
        owner = await ctx.cluster.owner(call.bucket)
        if owner is not None and owner.region != ctx.region:
            call.headers[MARKER] = "1"
            return await ctx.forward(call, owner.region)
    if call.method == "OPTIONS":
        return await dispatch(ctx, call)
    if post_object.is_form(call.method, call.key, call.headers):
        return await post_object.post_object(ctx, call)
    document = await admit(ctx, call)
    try:
        return await dispatch(ctx, call)
    except NoSuchKey as exc:
        # As S3: whether a key exists is told only to who may list the bucket (s3:ListBucket).
        if policy.allows_anonymous(document, "s3:ListBucket", f"{policy.ARN_PREFIX}{call.bucket}"):
            raise
        raise AccessDenied(_DENIED) from exc


async def admit(ctx: S3Context, call: Call) -> str | None:
    """The bucket's policy; AccessDenied unless it lets anyone read this object."""
    if not call.bucket or call.key is None or set(call.query) - _ANONYMOUS_QUERY:
        raise AccessDenied(_DENIED)
    action = "s3:GetObjectVersion" if "versionId" in call.query else "s3:GetObject"
    try:
        document = await ctx.run(ctx.store.get_config, call.bucket, policy.KIND)
    except NoSuchBucket as exc:
        # Whether a bucket exists is not told to someone who may not read it.
        raise AccessDenied(_DENIED) from exc
    if not policy.allows_anonymous(document, action, f"{policy.ARN_PREFIX}{call.bucket}/{call.key}"):
        raise AccessDenied(_DENIED)
    return document
