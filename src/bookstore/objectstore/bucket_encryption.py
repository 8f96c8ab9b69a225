"""Put/Get/DeleteBucketEncryption: a bucket's default encryption, AES256 (SSE-S3) only.

Every object is encrypted at rest with SSE-S3 whatever the configuration says (as S3 does since 2023),
so an AES256 default is stored and returned and changes nothing; an SSE-KMS one is refused (no key
management service here). Stored through the generic `put_config` as "encryption", not replicated.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from bookstore.objectstore import documents
from bookstore.objectstore.context import S3Context, xml
from bookstore.objectstore.encryption import SSE_S3, ServerSideEncryptionConfigurationNotFoundError
from bookstore.objectstore.errors import MalformedXML, NotImplementedS3
from bookstore.objectstore.request import Call

KIND = "encryption"


def check(doc: dict[str, Any]) -> dict[str, Any]:
    """The configuration's canonical form, once it checks out as S3 checks it."""
    rule = doc.get("Rule")
    if not isinstance(rule, dict):
        raise MalformedXML("ServerSideEncryptionConfiguration holds one Rule")
    default = rule.get("ApplyServerSideEncryptionByDefault")
    if not isinstance(default, dict) or not isinstance(default.get("SSEAlgorithm"), str):
        raise MalformedXML("The Rule needs ApplyServerSideEncryptionByDefault with an SSEAlgorithm")
    algorithm = default["SSEAlgorithm"].strip()
    if algorithm in ("aws:kms", "aws:kms:dsse"):
        raise NotImplementedS3(
            f"Default encryption with {algorithm} (SSE-KMS) is not implemented: this store has no key "
            "management service. Use AES256 (SSE-S3)."
        )
    if algorithm != SSE_S3:
        raise MalformedXML(f"SSEAlgorithm must be AES256, not {algorithm[:20]!r}")
    if "KMSMasterKeyID" in default:
        raise MalformedXML("KMSMasterKeyID is only allowed with the aws:kms SSEAlgorithm")
    canonical: dict[str, Any] = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": SSE_S3}}
    enabled = rule.get("BucketKeyEnabled")
    if enabled is not None:
        if str(enabled).strip().lower() not in ("true", "false"):
            raise MalformedXML("BucketKeyEnabled must be true or false")
        canonical["BucketKeyEnabled"] = str(enabled).strip().lower()
    return {"Rule": canonical}


async def put_encryption(ctx: S3Context, call: Call) -> Response:
    config = check(documents.parse(call.body, "ServerSideEncryptionConfiguration"))
    await ctx.run(ctx.store.put_config, call.bucket, KIND, json.dumps(config))
    return Response(status_code=200)


async def get_encryption(ctx: S3Context, call: Call) -> Response:
    document = await ctx.run(ctx.store.get_config, call.bucket, KIND)
    if document is None:
        raise ServerSideEncryptionConfigurationNotFoundError(
            f"The server side encryption configuration was not found: {call.bucket!r} has none"
        )
    return xml(documents.configuration("ServerSideEncryptionConfiguration", json.loads(document)))


async def delete_encryption(ctx: S3Context, call: Call) -> Response:
    await ctx.run(ctx.store.delete_config, call.bucket, KIND)
    return Response(status_code=204)
