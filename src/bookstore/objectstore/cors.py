"""CORS: Put/Get/DeleteBucketCors, preflight OPTIONS answered by the bucket's rules, CORS headers on others.

As S3 does: a configuration holds 1 to 100 CORSRules, each with AllowedMethods (GET, PUT, HEAD, POST,
DELETE), AllowedOrigins (at most one "*" each), optional AllowedHeaders (at most one "*" each),
ExposeHeaders, MaxAgeSeconds and ID. The first rule that matches the request's Origin, method (for a
preflight, Access-Control-Request-Method) and, for a preflight, every Access-Control-Request-Headers
name, answers; a preflight that none matches is 403 AccessForbidden, and a request with an Origin
that none matches gets no CORS headers (the browser then refuses it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from bookstore.objectstore import documents
from bookstore.objectstore.context import S3Context, xml
from bookstore.objectstore.errors import (
    AccessForbidden,
    InvalidRequest,
    MalformedXML,
    NoSuchBucket,
    NoSuchCORSConfiguration,
)
from bookstore.objectstore.request import Call

KIND = "cors"
MAX_RULES = 100
METHODS = ("GET", "PUT", "HEAD", "POST", "DELETE")
_RULE_FIELDS = {"ID", "AllowedMethods", "AllowedOrigins", "AllowedHeaders", "ExposeHeaders", "MaxAgeSeconds"}
_VARY = "Origin, Access-Control-Request-Headers, Access-Control-Request-Method"


def check(doc: Any) -> dict[str, Any]:
    """A CORS configuration in the JSON shape (boto3's), checked as S3 checks it, in canonical form."""
    if not isinstance(doc, Mapping) or set(doc) - {"CORSRules"}:
        raise MalformedXML("CORSConfiguration holds CORSRule elements only")
    rules = doc.get("CORSRules")
    if not isinstance(rules, list) or not rules:
        raise MalformedXML("CORSConfiguration needs at least one CORSRule")
    if len(rules) > MAX_RULES:
        raise InvalidRequest(f"A CORS configuration holds at most {MAX_RULES} rules")
    return {"CORSRules": [_rule(r) for r in rules]}


def _rule(rule: Any) -> dict[str, Any]:
    if not isinstance(rule, Mapping) or set(rule) - _RULE_FIELDS:
        raise MalformedXML(f"a CORSRule holds only {', '.join(sorted(_RULE_FIELDS))}")
    out: dict[str, Any] = {}
    if "ID" in rule:
        out["ID"] = documents.scalar(rule["ID"], "ID")
        if len(out["ID"]) > 255:
            raise InvalidRequest("A CORSRule ID is at most 255 characters")
    for name in ("AllowedHeaders", "AllowedMethods", "AllowedOrigins", "ExposeHeaders"):
        if name in rule:
            values = rule[name]
            if not isinstance(values, list):
                raise MalformedXML(f"{name} must be a list")
            out[name] = [documents.scalar(v, name) for v in values]
    if not out.get("AllowedMethods") or not out.get("AllowedOrigins"):
        raise MalformedXML("a CORSRule needs AllowedMethod and AllowedOrigin")
    for method in out["AllowedMethods"]:
        if method not in METHODS:
            raise InvalidRequest(
                f"Found unsupported HTTP method in CORS config. Unsupported method is {method}"
            )
    for origin in out["AllowedOrigins"]:
        if origin.count("*") > 1:
            raise InvalidRequest(f'AllowedOrigin "{origin}" can not have more than one wildcard.')
    for header in out.get("AllowedHeaders", []):
        if header.count("*") > 1:
            raise InvalidRequest(f'AllowedHeader "{header}" can not have more than one wildcard.')
    if "MaxAgeSeconds" in rule:
        try:
            out["MaxAgeSeconds"] = int(rule["MaxAgeSeconds"])
        except (TypeError, ValueError) as exc:
            raise MalformedXML("MaxAgeSeconds must be an integer") from exc
    return out


def _wildcard(pattern: str, value: str) -> bool:
    """S3's CORS match: one optional "*" standing for any text."""
    head, star, tail = pattern.partition("*")
    if not star:
        return pattern == value
    return len(value) >= len(head) + len(tail) and value.startswith(head) and value.endswith(tail)


def match(
    config: Mapping[str, Any], origin: str, method: str, request_headers: list[str] | None = None
) -> dict[str, Any] | None:
    """The first rule allowing `origin`, `method` and (a preflight's) `request_headers`, or None."""
    for rule in config["CORSRules"]:
        if method not in rule["AllowedMethods"]:
            continue
        if not any(_wildcard(o, origin) for o in rule["AllowedOrigins"]):
            continue
        allowed = [h.lower() for h in rule.get("AllowedHeaders", [])]
        if request_headers and not all(any(_wildcard(a, h) for a in allowed) for h in request_headers):
            continue
        return dict(rule)
    return None


def answer_headers(rule: Mapping[str, Any], origin: str) -> dict[str, str]:
    """The Access-Control-* headers a matching rule adds, as S3 sends them."""
    headers: dict[str, str] = {}
    if "*" in rule["AllowedOrigins"]:
        headers["Access-Control-Allow-Origin"] = "*"
    else:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Allow-Credentials"] = "true"
    headers["Access-Control-Allow-Methods"] = ", ".join(rule["AllowedMethods"])
    if rule.get("ExposeHeaders"):
        headers["Access-Control-Expose-Headers"] = ", ".join(rule["ExposeHeaders"])
    if "MaxAgeSeconds" in rule:
        headers["Access-Control-Max-Age"] = str(rule["MaxAgeSeconds"])
    headers["Vary"] = _VARY
    return headers


async def _config(ctx: S3Context, bucket: str) -> dict[str, Any] | None:
    document = await ctx.run(ctx.store.get_config, bucket, KIND)
    return None if document is None else dict(json.loads(document))


async def put_cors(ctx: S3Context, call: Call) -> Response:
    config = check(documents.parse(call.body, "CORSConfiguration"))
    await ctx.run(ctx.store.put_config, call.bucket, KIND, json.dumps(config))
    return Response(status_code=200)


async def get_cors(ctx: S3Context, call: Call) -> Response:
    config = await _config(ctx, call.bucket)
    if config is None:
        raise NoSuchCORSConfiguration(f"The CORS configuration does not exist: {call.bucket!r} has none")
    return xml(documents.configuration("CORSConfiguration", config))


async def delete_cors(ctx: S3Context, call: Call) -> Response:
    await ctx.run(ctx.store.delete_config, call.bucket, KIND)
    return Response(status_code=204)


async def preflight(ctx: S3Context, call: Call) -> Response:
    """OPTIONS on a bucket or object: 200 with the matching rule's headers, else 400 or 403 as S3."""
    origin = call.headers.get("origin")
    if not origin:
        raise InvalidRequest("Insufficient information. Origin request header needed.")
    method = call.headers.get("access-control-request-method", "")
    if method not in METHODS:
        raise InvalidRequest(f"Invalid Access-Control-Request-Method: {method!r}")
    requested = [
        h.strip().lower()
        for h in call.headers.get("access-control-request-headers", "").split(",")
        if h.strip()
    ]
    config = await _config(ctx, call.bucket)
    if config is None:
        raise AccessForbidden("CORSResponse: CORS is not enabled for this bucket.")
    rule = match(config, origin, method, requested)
    if rule is None:
        raise AccessForbidden(
            "CORSResponse: This CORS request is not allowed. The Origin, request method or requested "
            "headers are not allowed by the bucket's CORS configuration."
        )
    headers = answer_headers(rule, origin)
    if requested:
        headers["Access-Control-Allow-Headers"] = ", ".join(requested)
    return Response(status_code=200, headers=headers)


async def decorate(ctx: S3Context, call: Call, response: Response) -> None:
    """Add the CORS headers of the bucket's matching rule to an answer to a request with an Origin.

    Only for a bucket this region's store holds: a forwarded answer carries its owner's headers already.
    """
    origin = call.headers.get("origin")
    if (
        not origin
        or not call.bucket
        or call.method == "OPTIONS"
        or "access-control-allow-origin" in response.headers
    ):
        return
    try:
        config = await _config(ctx, call.bucket)
    except NoSuchBucket:
        return
    if config is None:
        return
    rule = match(config, origin, call.method)
    if rule is not None:
        response.headers.update(answer_headers(rule, origin))
