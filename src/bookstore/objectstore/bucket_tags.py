"""S3 handlers of bucket tagging: Put/Get/DeleteBucketTagging, kept as the "tagging" configuration."""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.responses import Response

from bookstore.objectstore import documents
from bookstore.objectstore.context import S3Context, xml
from bookstore.objectstore.errors import NoSuchTagSet
from bookstore.objectstore.request import Call
from bookstore.objectstore.tags import MAX_BUCKET_TAGS, from_document

KIND = "tagging"


async def put_bucket_tagging(ctx: S3Context, call: Call) -> Response:
    tags = from_document(call.body, MAX_BUCKET_TAGS)
    document = {"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]}
    await ctx.run(ctx.store.put_config, call.bucket, KIND, _json(document))
    return Response(status_code=204)


async def get_bucket_tagging(ctx: S3Context, call: Call) -> Response:
    stored = await ctx.run(ctx.store.get_config, call.bucket, KIND)
    tags = _tags(stored)
    if not tags:
        raise NoSuchTagSet("The TagSet does not exist")
    return xml(documents.tagging(tags))


async def delete_bucket_tagging(ctx: S3Context, call: Call) -> Response:
    await ctx.run(ctx.store.delete_config, call.bucket, KIND)
    return Response(status_code=204)


def _json(document: Mapping[str, object]) -> str:
    return json.dumps(document, separators=(",", ":"))


def _tags(stored: str | None) -> dict[str, str]:
    if stored is None:
        return {}
    return {str(t["Key"]): str(t.get("Value", "")) for t in json.loads(stored).get("TagSet", [])}
