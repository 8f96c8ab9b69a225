"""Bucket policies: Put/Get/DeleteBucketPolicy, and the anonymous reads an Allow statement grants.

A policy is kept as the JSON text the client sent, once checked (MalformedPolicy otherwise). Requests
are signed by the deployment's one identity, which may do everything, so a policy only matters to
unsigned requests: `allows_anonymous` grants s3:GetObject (s3:GetObjectVersion for a versionId) when a
statement allows it to Principal "*" on a resource ARN matching the object, and no statement denies it.
Statements with a Condition are not evaluated: such an Allow grants nothing and such a Deny always
applies, so a condition this store cannot judge never opens more than the policy says.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from bookstore.objectstore.context import S3Context
from bookstore.objectstore.errors import MalformedPolicy, NoSuchBucketPolicy
from bookstore.objectstore.request import Call

KIND = "policy"
# S3's limit on a bucket policy's size.
MAX_POLICY_BYTES = 20 * 1024
ARN_PREFIX = "arn:aws:s3:::"
_VERSIONS = ("2012-10-17", "2008-10-17")
_STATEMENT_FIELDS = {
    "Sid",
    "Effect",
    "Principal",
    "NotPrincipal",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
}


def check(body: bytes, bucket: str) -> str:
    """The policy document `body` as stored, when S3 would take it for `bucket`; else MalformedPolicy."""
    if len(body) > MAX_POLICY_BYTES:
        raise MalformedPolicy(f"Policies must be at most {MAX_POLICY_BYTES} bytes")
    try:
        text = body.decode("utf-8")
        doc = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedPolicy("Policies must be valid JSON and the first byte must be '{'") from exc
    if not isinstance(doc, dict):
        raise MalformedPolicy("Policies must be valid JSON and the first byte must be '{'")
    unknown = set(doc) - {"Version", "Id", "Statement"}
    if unknown:
        raise MalformedPolicy(f"Unknown field {sorted(unknown)[0]}")
    if "Version" in doc and doc["Version"] not in _VERSIONS:
        raise MalformedPolicy("The policy must contain a valid version string")
    statements = _statements(doc)
    for statement in statements:
        _check_statement(statement, bucket)
    return text


def _statements(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if "Statement" not in doc:
        raise MalformedPolicy("Missing required field Statement")
    found = doc["Statement"]
    statements = found if isinstance(found, list) else [found]
    if not statements or not all(isinstance(s, Mapping) for s in statements):
        raise MalformedPolicy("Statement must be an object or a non-empty list of objects")
    return statements


def _check_statement(statement: Mapping[str, Any], bucket: str) -> None:
    unknown = set(statement) - _STATEMENT_FIELDS
    if unknown:
        raise MalformedPolicy(f"Unknown field {sorted(unknown)[0]}")
    effect = statement.get("Effect")
    if effect is None:
        raise MalformedPolicy("Missing required field Effect")
    if effect not in ("Allow", "Deny"):
        raise MalformedPolicy(f"Invalid effect: {effect}")
    for one, other, what in (
        ("Principal", "NotPrincipal", "Principal"),
        ("Action", "NotAction", "Action"),
        ("Resource", "NotResource", "Resource"),
    ):
        if (one in statement) == (other in statement):
            raise MalformedPolicy(f"Missing required field {what} (or Not{what}, not both)")
    principal = statement.get("Principal", statement.get("NotPrincipal"))
    if principal != "*" and not (
        isinstance(principal, Mapping) and principal and all(_strings(v) for v in principal.values())
    ):
        raise MalformedPolicy("Invalid principal in policy")
    for action in _strings(statement.get("Action", statement.get("NotAction"))) or [""]:
        if action != "*" and not re.fullmatch(r"s3:[A-Za-z*?]+", action):
            raise MalformedPolicy(f"Policy has invalid action: {action!r}")
    for resource in _strings(statement.get("Resource", statement.get("NotResource"))) or [""]:
        name = resource.removeprefix(ARN_PREFIX).partition("/")[0]
        if not resource.startswith(ARN_PREFIX) or not _glob(name, bucket):
            raise MalformedPolicy(f"Policy has invalid resource: {resource!r}")
    condition = statement.get("Condition")
    if condition is not None and not isinstance(condition, Mapping):
        raise MalformedPolicy("Condition must be an object")


def _strings(value: Any) -> list[str]:
    """A policy field that is one string or a list of them, as a list; [] for anything else."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return []


def _anonymous(statement: Mapping[str, Any]) -> bool:
    """Whether a statement's principal covers an unsigned request."""
    if "NotPrincipal" in statement:
        # Allow with NotPrincipal is not granted to anyone unsigned; Deny with it is taken to apply.
        return bool(statement["Effect"] == "Deny")
    principal = statement["Principal"]
    if principal == "*":
        return True
    return "*" in _strings(principal.get("AWS")) if isinstance(principal, Mapping) else False


def _listed(statement: Mapping[str, Any], field: str, value: str, *, fold: bool) -> bool:
    """Whether `value` matches the statement's `field` (or is outside its Not`field`), by wildcard."""
    patterns = _strings(statement.get(field, statement.get("Not" + field)))
    if fold:
        value, patterns = value.lower(), [p.lower() for p in patterns]
    hit = any(_glob(p, value) for p in patterns)
    return hit if field in statement else not hit


def _glob(pattern: str, value: str) -> bool:
    # Policy wildcards are * and ? only ("[" is an ordinary character, unlike fnmatch's).
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL) is not None


def allows_anonymous(document: str | None, action: str, resource: str) -> bool:
    """Whether the policy `document` lets an unsigned request do `action` (s3:GetObject) on `resource`."""
    if document is None:
        return False
    allowed = False
    for statement in _statements(json.loads(document)):
        if not _anonymous(statement):
            continue
        if not _listed(statement, "Action", action, fold=True):
            continue
        if not _listed(statement, "Resource", resource, fold=False):
            continue
        if statement["Effect"] == "Deny":
            return False
        if "Condition" not in statement:
            allowed = True
    return allowed


async def put_policy(ctx: S3Context, call: Call) -> Response:
    document = check(call.body, call.bucket)
    await ctx.run(ctx.store.put_config, call.bucket, KIND, document)
    return Response(status_code=204)


async def get_policy(ctx: S3Context, call: Call) -> Response:
    document = await ctx.run(ctx.store.get_config, call.bucket, KIND)
    if document is None:
        raise NoSuchBucketPolicy(f"The bucket policy does not exist: {call.bucket!r} has none")
    return Response(document, status_code=200, media_type="application/json")


async def delete_policy(ctx: S3Context, call: Call) -> Response:
    await ctx.run(ctx.store.delete_config, call.bucket, KIND)
    return Response(status_code=204)
