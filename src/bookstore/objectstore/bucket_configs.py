"""S3 handlers of a bucket's configurations: versioning, replication, website, and its location."""

from __future__ import annotations

from starlette.responses import Response

from bookstore.objectstore import documents
from bookstore.objectstore.configs import ReplicationConfiguration, WebsiteConfiguration
from bookstore.objectstore.context import S3Context, xml
from bookstore.objectstore.errors import MalformedXML
from bookstore.objectstore.request import Call


async def put_versioning(ctx: S3Context, call: Call) -> Response:
    doc = documents.parse(call.body, "VersioningConfiguration")
    status = doc.get("Status")
    if status not in ("Enabled", "Suspended"):
        raise MalformedXML("VersioningConfiguration needs Status Enabled or Suspended")
    await ctx.run(ctx.store.set_versioning, call.bucket, status)
    return Response(status_code=200)


async def get_versioning(ctx: S3Context, call: Call) -> Response:
    bucket = await ctx.run(ctx.store.get_bucket, call.bucket)
    return xml(documents.versioning(bucket.versioning))


async def put_replication(ctx: S3Context, call: Call) -> Response:
    config = ReplicationConfiguration.from_json(documents.parse(call.body, "ReplicationConfiguration"))
    await ctx.run(ctx.store.put_replication, call.bucket, config)
    return Response(status_code=200)


async def get_replication(ctx: S3Context, call: Call) -> Response:
    return xml(documents.replication(await ctx.run(ctx.store.get_replication, call.bucket)))


async def delete_replication(ctx: S3Context, call: Call) -> Response:
    await ctx.run(ctx.store.delete_replication, call.bucket)
    return Response(status_code=204)


async def put_website(ctx: S3Context, call: Call) -> Response:
    website = WebsiteConfiguration.from_json(documents.parse(call.body, "WebsiteConfiguration"))
    await ctx.run(ctx.store.put_website, call.bucket, website)
    return Response(status_code=200)


async def get_website(ctx: S3Context, call: Call) -> Response:
    return xml(documents.website(await ctx.run(ctx.store.get_website, call.bucket)))


async def delete_website(ctx: S3Context, call: Call) -> Response:
    await ctx.run(ctx.store.delete_website, call.bucket)
    return Response(status_code=204)


async def get_location(ctx: S3Context, call: Call) -> Response:
    bucket = await ctx.run(ctx.store.get_bucket, call.bucket)
    return xml(documents.location(bucket.region))
