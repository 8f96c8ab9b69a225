"""GET and HEAD by partNumber: the bytes of one part of a multipart object, as S3 answers them (206)."""

from __future__ import annotations

from collections.abc import Mapping

from bookstore.objectstore import encryption
from bookstore.objectstore.context import S3Context
from bookstore.objectstore.errors import InvalidPartNumber, InvalidRequest, NotImplementedS3
from bookstore.objectstore.port import ByteRange
from bookstore.objectstore.request import Call, int_param


async def part(ctx: S3Context, call: Call, version_id: str | None) -> tuple[ByteRange | None, int]:
    """The byte range of the part the query names, and the object's parts count (1 if written whole).

    A part past the last answers 416 InvalidPartNumber; an object written whole has one part, itself.
    """
    number = int_param(call.query.get("partNumber"), 1, "partNumber", 1, 10_000)
    if "range" in call.headers:
        raise InvalidRequest("Cannot specify both Range header and partNumber query parameter")
    version = await ctx.run(
        ctx.store.head_object,
        call.bucket,
        call.object_key,
        version_id=version_id,
        customer_key=encryption.customer_key(call.headers),
    )
    count = version.parts_count or 1
    if number > count:
        raise InvalidPartNumber("The requested partnumber is not satisfiable")
    if version.parts_count is None:
        # The one part is the whole object (none of an empty one: a range of it would be unsatisfiable).
        return ((0, None) if version.size else None), count
    found = await ctx.run(ctx.store.part_range, call.bucket, call.object_key, number, version_id=version_id)
    if found is None:
        raise NotImplementedS3("The part boundaries of this version are not known here (a replica)")
    return found, count


def part_headers(count: int) -> Mapping[str, str]:
    return {"x-amz-mp-parts-count": str(count)}
