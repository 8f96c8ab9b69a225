"""S3 ACLs of a store with one identity: the owner's FULL_CONTROL is read back, and only `private` is set.

Every bucket and object belongs to the deployment's one identity, so the only ACL there is is S3's
`private` (the owner has FULL_CONTROL). Get{Bucket,Object}Acl answer it; Put{Bucket,Object}Acl and the
x-amz-acl header of writes accept it (as a canned ACL or as a policy granting just that), and refuse any
other grant with 400 AccessControlListNotSupported, S3's answer when a bucket's ACLs are disabled.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping

import defusedxml.ElementTree as defused
from starlette.responses import Response

from bookstore.objectstore import documents
from bookstore.objectstore.context import S3Context, xml
from bookstore.objectstore.errors import AccessControlListNotSupported, MalformedXML
from bookstore.objectstore.request import Call

# Canned ACLs that leave the owner alone with FULL_CONTROL (bucket-owner-full-control: the owner of
# the bucket is the owner of the object here).
_PRIVATE = frozenset(["private", "bucket-owner-full-control"])
_CANNED = frozenset(
    [
        "public-read",
        "public-read-write",
        "authenticated-read",
        "aws-exec-read",
        "bucket-owner-read",
        "log-delivery-write",
    ]
)
_GRANTS = (
    "x-amz-grant-read",
    "x-amz-grant-write",
    "x-amz-grant-read-acp",
    "x-amz-grant-write-acp",
    "x-amz-grant-full-control",
)
_XSI = "http://www.w3.org/2001/XMLSchema-instance"


def check_headers(headers: Mapping[str, str]) -> None:
    """Refuse a write's x-amz-acl or x-amz-grant-* that asks for more than `private`."""
    canned = headers.get("x-amz-acl")
    if canned is not None and canned not in _PRIVATE:
        if canned in _CANNED:
            raise AccessControlListNotSupported(
                f"The bucket does not allow ACLs: only the canned ACL private is accepted, not {canned}"
            )
        raise AccessControlListNotSupported(
            f"The canned ACL {canned!r} is not one S3 knows, and only private is accepted"
        )
    for name in _GRANTS:
        if name in headers and not _only_owner(headers[name], name):
            raise AccessControlListNotSupported(
                f"The bucket does not allow ACLs: {name} can only grant the owner FULL_CONTROL"
            )


def _only_owner(value: str, name: str) -> bool:
    return name == "x-amz-grant-full-control" and all(
        g.strip().replace('"', "") == f"id={documents.OWNER_ID}" for g in value.split(",")
    )


def policy() -> bytes:
    """The AccessControlPolicy of everything: the owner has FULL_CONTROL."""
    owner_id = documents.OWNER_ID
    grant = (
        f'<Grant><Grantee xmlns:xsi="{_XSI}" xsi:type="CanonicalUser"><ID>{owner_id}</ID>'
        "<DisplayName>bookstore</DisplayName></Grantee><Permission>FULL_CONTROL</Permission></Grant>"
    )
    return documents.document(
        "AccessControlPolicy", documents.owner(owner_id) + f"<AccessControlList>{grant}</AccessControlList>"
    )


async def get_bucket_acl(ctx: S3Context, call: Call) -> Response:
    await ctx.run(ctx.store.get_bucket, call.bucket)
    return xml(policy())


async def get_object_acl(ctx: S3Context, call: Call) -> Response:
    version = await ctx.run(
        ctx.store.head_object, call.bucket, call.object_key, version_id=call.query.get("versionId") or None
    )
    out = {} if version.version_id == "null" else {"x-amz-version-id": version.version_id}
    return xml(policy(), out)


async def put_bucket_acl(ctx: S3Context, call: Call) -> Response:
    _check_put(call)
    await ctx.run(ctx.store.get_bucket, call.bucket)
    return Response(status_code=200)


async def put_object_acl(ctx: S3Context, call: Call) -> Response:
    _check_put(call)
    version = await ctx.run(
        ctx.store.head_object, call.bucket, call.object_key, version_id=call.query.get("versionId") or None
    )
    out = {} if version.version_id == "null" else {"x-amz-version-id": version.version_id}
    return Response(status_code=200, headers=out)


def _check_put(call: Call) -> None:
    """A PutAcl request: a canned ACL or grant headers, or an AccessControlPolicy body, never both."""
    given = "x-amz-acl" in call.headers or any(name in call.headers for name in _GRANTS)
    if given and call.body.strip():
        raise MalformedXML("Specify an ACL by headers or by an AccessControlPolicy document, not both")
    if given:
        check_headers(call.headers)
        return
    documents.parse(call.body, "AccessControlPolicy")
    grants = defused.fromstring(call.body, forbid_dtd=True).iter(f"{{{documents.XMLNS}}}Grant")
    found = [_grant(g) for g in grants] or [_grant_plain(call.body)]
    if not found or not all(found):
        raise AccessControlListNotSupported(
            "The bucket does not allow ACLs: the only policy accepted grants the owner FULL_CONTROL"
        )


def _grant(grant: ET.Element) -> bool:
    """Whether a Grant gives the owner FULL_CONTROL (the grant `private` is made of)."""
    ns = f"{{{documents.XMLNS}}}"
    permission = grant.findtext(f"{ns}Permission") or grant.findtext("Permission")
    grantee = grant.find(f"{ns}Grantee")
    if grantee is None:
        grantee = grant.find("Grantee")
    if grantee is None:
        return False
    grantee_id = grantee.findtext(f"{ns}ID") or grantee.findtext("ID")
    return permission == "FULL_CONTROL" and grantee_id == documents.OWNER_ID


def _grant_plain(body: bytes) -> bool:
    """The same, for a document written without S3's namespace."""
    grants = list(defused.fromstring(body, forbid_dtd=True).iter("Grant"))
    return bool(grants) and all(_grant(g) for g in grants)
