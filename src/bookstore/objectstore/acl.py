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
from defusedxml import DefusedXmlException
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
    root = _policy_document(call.body)
    grants = [element for element in root.iter() if _local(element.tag) == "Grant"]
    if not grants or not all(_owner_full_control(g) for g in grants):
        raise AccessControlListNotSupported(
            "The bucket does not allow ACLs: the only policy accepted grants the owner FULL_CONTROL"
        )


def _policy_document(body: bytes) -> ET.Element:
    """The AccessControlPolicy element of a PutAcl body; MalformedXML when it is not one (DTDs refused)."""
    if not body.strip() or len(body) > documents.MAX_DOCUMENT:
        raise MalformedXML("An AccessControlPolicy document (or an x-amz-acl header) is required")
    try:
        root = defused.fromstring(body, forbid_dtd=True)
    except (DefusedXmlException, ET.ParseError, ValueError) as exc:
        raise MalformedXML("The XML you provided was not well-formed or did not validate") from exc
    if _local(root.tag) != "AccessControlPolicy":
        raise MalformedXML("The XML you provided is not an AccessControlPolicy document")
    return root


def _local(tag: str) -> str:
    """An element's name without its namespace (clients write S3's, or none)."""
    return tag.rpartition("}")[2]


def _child_text(element: ET.Element, name: str) -> str | None:
    child = next((c for c in element if _local(c.tag) == name), None)
    return None if child is None else (child.text or "").strip()


def _owner_full_control(grant: ET.Element) -> bool:
    """Whether a Grant gives the owner FULL_CONTROL (the one grant `private` is made of)."""
    grantee = next((c for c in grant if _local(c.tag) == "Grantee"), None)
    return (
        grantee is not None
        and _child_text(grant, "Permission") == "FULL_CONTROL"
        and _child_text(grantee, "ID") == documents.OWNER_ID
    )
