"""A version's checksum and encryption in S3's answers, GetObjectAttributes, and what writes ask of them.

Kept apart from objects.py and multipart.py, which call these: how a request names a checksum or an
SSE-C key, and which headers and elements an answer carries about them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from bookstore.objectstore import checksums, documents, encryption
from bookstore.objectstore.checksums import Algorithm, Checksum, ChecksumType
from bookstore.objectstore.context import S3Context, xml
from bookstore.objectstore.encryption import CustomerKey
from bookstore.objectstore.errors import InvalidArgument, InvalidPart, InvalidRequest, NoSuchUpload
from bookstore.objectstore.port import ObjectVersion, Part
from bookstore.objectstore.request import Call, int_param

_ATTRIBUTES = {"etag", "checksum", "objectparts", "storageclass", "objectsize"}


def verified_checksum(verified: Mapping[str, str]) -> Checksum | None:
    """The checksum to store of a body, from those its request verified (or the default computed)."""
    for name, header in checksums.HEADERS.items():
        if header in verified:
            return Checksum(name, verified[header])
    return None


def write_key(headers: Mapping[str, str]) -> CustomerKey | None:
    """The SSE-C key of a write, once its x-amz-server-side-encryption has been checked (no SSE-KMS)."""
    encryption.check_request(headers)
    return encryption.customer_key(headers)


def upload_checksum(headers: Mapping[str, str]) -> tuple[Algorithm, ChecksumType] | None:
    """The checksum algorithm and type CreateMultipartUpload asks for (x-amz-checksum-algorithm)."""
    name = headers.get("x-amz-checksum-algorithm")
    if name is None:
        if "x-amz-checksum-type" in headers:
            raise InvalidRequest("The x-amz-checksum-type header needs an x-amz-checksum-algorithm")
        return None
    algorithm = checksums.algorithm(name)
    return algorithm, checksums.upload_type(algorithm, headers.get("x-amz-checksum-type"))


def written_headers(version: ObjectVersion) -> dict[str, str]:
    """Encryption and checksum headers of a write's answer."""
    out = encryption.response_headers(version.encryption, version.sse_key_md5)
    if version.checksum is not None:
        out.update(version.checksum.headers())
    return out


def read_headers(version: ObjectVersion, headers: Mapping[str, str], *, whole: bool) -> dict[str, str]:
    """Encryption headers of a GET or HEAD, and the checksum with x-amz-checksum-mode: ENABLED.

    A range GET has no checksum of its own (S3 returns none for one that is not the whole object).
    """
    out = encryption.response_headers(version.encryption, version.sse_key_md5)
    mode = headers.get("x-amz-checksum-mode", "").strip().upper()
    if mode and mode != "ENABLED":
        raise InvalidArgument("The value of x-amz-checksum-mode must be ENABLED")
    if mode and whole and version.checksum is not None:
        out.update(version.checksum.headers())
    return out


def checksum_elements(checksum: Checksum | None) -> str:
    """The <ChecksumX> and <ChecksumType> elements of a checksum in an XML answer."""
    if checksum is None:
        return ""
    return (
        f"<Checksum{checksum.algorithm}>{documents.text(checksum.value)}</Checksum{checksum.algorithm}>"
        f"<ChecksumType>{checksum.type}</ChecksumType>"
    )


async def check_part_checksums(ctx: S3Context, call: Call, parts: Any) -> None:
    """InvalidPart when a part of CompleteMultipartUpload names a checksum other than the one stored.

    Only when some part names one (the parts are read only then); an upload that is gone is left for
    the completion itself to answer.
    """
    given: dict[int, str] = {}
    for part in parts if isinstance(parts, list) else []:
        for name in checksums.ALGORITHMS:
            value = part.get(f"Checksum{name}") if isinstance(part, dict) else None
            if isinstance(value, str) and str(part.get("PartNumber", "")).strip().isdigit():
                given[int(str(part["PartNumber"]).strip())] = value.strip()
    if not given:
        return
    try:
        stored = await ctx.run(ctx.store.list_parts, call.bucket, call.object_key, call.query["uploadId"])
    except NoSuchUpload:
        return
    for part in stored:
        value = given.get(part.number)
        if value is not None and part.checksum and value != part.checksum:
            raise InvalidPart(
                f"The checksum of part {part.number} does not match the one it was uploaded with: "
                "upload it again"
            )


async def get_attributes(ctx: S3Context, call: Call) -> Response:
    """GetObjectAttributes: the attributes x-amz-object-attributes names, of a version."""
    wanted = {
        a.strip().lower() for a in call.headers.get("x-amz-object-attributes", "").split(",") if a.strip()
    }
    if not wanted or not wanted <= _ATTRIBUTES:
        raise InvalidArgument(
            "x-amz-object-attributes names one or more of "
            "ETag, Checksum, ObjectParts, StorageClass, ObjectSize"
        )
    version = await ctx.run(
        ctx.store.head_object,
        call.bucket,
        call.object_key,
        version_id=call.query.get("versionId") or None,
        customer_key=encryption.customer_key(call.headers),
    )
    body = []
    if "etag" in wanted:
        body.append(f"<ETag>{documents.text(version.etag)}</ETag>")
    if "checksum" in wanted and version.checksum is not None:
        body.append(f"<Checksum>{checksum_elements(version.checksum)}</Checksum>")
    if "objectparts" in wanted and version.parts_count is not None:
        parts = await ctx.run(
            ctx.store.completed_parts, call.bucket, call.object_key, version_id=version.version_id
        )
        body.append(f"<ObjectParts>{_object_parts(version.parts_count, parts, call.headers)}</ObjectParts>")
    if "storageclass" in wanted:
        body.append("<StorageClass>STANDARD</StorageClass>")
    if "objectsize" in wanted:
        body.append(f"<ObjectSize>{version.size}</ObjectSize>")
    out = {"Last-Modified": documents.http_date(version.last_modified_ms)}
    if version.version_id != "null":
        out["x-amz-version-id"] = version.version_id
    return xml(documents.document("GetObjectAttributesResponse", "".join(body)), out)


def _object_parts(count: int, parts: list[Part], headers: Mapping[str, str]) -> str:
    """ObjectParts of GetObjectAttributes: the count, and a page of the parts when they have checksums
    (S3 lists parts only for uploads with checksums), by x-amz-max-parts and x-amz-part-number-marker."""
    out = f"<PartsCount>{count}</PartsCount>"
    if not parts or not all(p.checksum for p in parts):
        return out
    marker = int_param(headers.get("x-amz-part-number-marker"), 0, "x-amz-part-number-marker", 0, 10_000)
    most = int_param(headers.get("x-amz-max-parts"), 1000, "x-amz-max-parts", 0, 1000)
    after = [p for p in parts if p.number > marker]
    page = after[:most]
    out += f"<PartNumberMarker>{marker}</PartNumberMarker><MaxParts>{most}</MaxParts>"
    out += f"<IsTruncated>{str(len(after) > len(page)).lower()}</IsTruncated>"
    if page:
        out += f"<NextPartNumberMarker>{page[-1].number}</NextPartNumberMarker>"
    for p in page:
        name = p.checksum_algorithm
        out += (
            f"<Part><PartNumber>{p.number}</PartNumber><Size>{p.size}</Size>"
            f"<Checksum{name}>{documents.text(p.checksum)}</Checksum{name}></Part>"
        )
    return out
