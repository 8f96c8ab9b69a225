"""Lifecycle configurations: Put/Get/DeleteBucketLifecycleConfiguration, checked as S3 checks them.

A configuration holds 1 to 1,000 rules; each has an ID (made up when absent), a Status, a Filter
(Prefix, Tag, ObjectSizeGreaterThan/LessThan, or And of them; or the older rule-level Prefix; none:
every object) and at least one action: Expiration (Days, Date or ExpiredObjectDeleteMarker),
NoncurrentVersionExpiration (NoncurrentDays, NewerNoncurrentVersions), AbortIncompleteMultipartUpload
(DaysAfterInitiation), Transition/NoncurrentVersionTransition (kept and returned; this store has one
storage class, so they move nothing). The sweeper (objectstore.sweeper) carries the rules out.
"""

from __future__ import annotations

import calendar
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from bookstore.objectstore import documents
from bookstore.objectstore.context import S3Context, xml
from bookstore.objectstore.errors import (
    InvalidArgument,
    InvalidRequest,
    MalformedXML,
    NoSuchLifecycleConfiguration,
)
from bookstore.objectstore.request import Call

KIND = "lifecycle"
MAX_RULES = 1000
_RULE_FIELDS = {
    "ID",
    "Filter",
    "Prefix",
    "Status",
    "Expiration",
    "NoncurrentVersionExpiration",
    "AbortIncompleteMultipartUpload",
    "Transitions",
    "NoncurrentVersionTransitions",
}
_ACTIONS = (
    "Expiration",
    "NoncurrentVersionExpiration",
    "AbortIncompleteMultipartUpload",
    "Transitions",
    "NoncurrentVersionTransitions",
)
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:T00:00:00(?:\.0+)?(?:Z|[+-]00:?00)?)?")


def check(doc: Any) -> dict[str, Any]:
    """A lifecycle configuration in the JSON shape (boto3's), checked, in canonical form (IDs filled)."""
    if not isinstance(doc, Mapping) or set(doc) - {"Rules"}:
        raise MalformedXML("LifecycleConfiguration holds Rule elements only")
    rules = doc.get("Rules")
    if not isinstance(rules, list) or not rules:
        raise MalformedXML("LifecycleConfiguration needs at least one Rule")
    if len(rules) > MAX_RULES:
        raise InvalidRequest(f"A lifecycle configuration holds at most {MAX_RULES} rules")
    checked = [_rule(r) for r in rules]
    ids = [r["ID"] for r in checked]
    if len(set(ids)) != len(ids):
        raise InvalidArgument("Rule ID must be unique. Found same ID for more than one rule")
    return {"Rules": checked}


def _rule(rule: Any) -> dict[str, Any]:
    if not isinstance(rule, Mapping) or set(rule) - _RULE_FIELDS:
        raise MalformedXML(f"a lifecycle Rule holds only {', '.join(sorted(_RULE_FIELDS))}")
    out: dict[str, Any] = {"ID": documents.scalar(rule.get("ID") or secrets.token_urlsafe(24), "ID")}
    if len(out["ID"]) > 255:
        raise InvalidArgument("ID length should not exceed allowed limit of 255")
    if "Filter" in rule and "Prefix" in rule:
        raise MalformedXML("a lifecycle Rule has a Filter or a Prefix, not both")
    if "Filter" in rule:
        out["Filter"] = _filter(rule["Filter"])
    elif "Prefix" in rule:
        out["Prefix"] = documents.scalar(rule["Prefix"], "Prefix")
    status = rule.get("Status")
    if status not in ("Enabled", "Disabled"):
        raise MalformedXML("a lifecycle Rule needs Status Enabled or Disabled")
    out["Status"] = status
    if not any(a in rule for a in _ACTIONS):
        raise InvalidRequest("At least one action needs to be specified in a rule")
    tagged = bool(out.get("Filter", {}).get("Tag") or out.get("Filter", {}).get("And", {}).get("Tags"))
    if "Expiration" in rule:
        out["Expiration"] = _expiration(rule["Expiration"], tagged)
    if "NoncurrentVersionExpiration" in rule:
        out["NoncurrentVersionExpiration"] = _noncurrent(rule["NoncurrentVersionExpiration"])
    if "AbortIncompleteMultipartUpload" in rule:
        if tagged:
            raise InvalidRequest("AbortIncompleteMultipartUpload cannot be specified with Tags.")
        block = _block(
            rule["AbortIncompleteMultipartUpload"], {"DaysAfterInitiation"}, "AbortIncompleteMultipartUpload"
        )
        out["AbortIncompleteMultipartUpload"] = {
            "DaysAfterInitiation": _positive(block.get("DaysAfterInitiation"), "DaysAfterInitiation")
        }
    for name in ("Transitions", "NoncurrentVersionTransitions"):
        if name in rule:
            if not isinstance(rule[name], list):
                raise MalformedXML(f"{name} must be a list")
            out[name] = [_transition(t, name) for t in rule[name]]
    return out


def _block(value: Any, fields: set[str], where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or set(value) - fields or not value:
        raise MalformedXML(f"{where} holds {', '.join(sorted(fields))}")
    return value


def _positive(value: Any, where: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise MalformedXML(f"{where} must be an integer") from exc
    if number <= 0:
        raise InvalidArgument(f"'{where}' in a lifecycle action must be a positive integer")
    return number


def _date(value: Any) -> str:
    """A lifecycle Date, which S3 takes at midnight UTC only, as ISO 8601."""
    found = _DATE.fullmatch(str(value))
    if found is None:
        raise InvalidArgument("'Date' must be at midnight GMT (e.g. 2030-01-01T00:00:00.000Z)")
    return f"{found.group(1)}-{found.group(2)}-{found.group(3)}T00:00:00.000Z"


def date_ms(value: str) -> int:
    """Epoch ms of a Date as `check` stores it."""
    year, month, day = int(value[0:4]), int(value[5:7]), int(value[8:10])
    return calendar.timegm((year, month, day, 0, 0, 0)) * 1000


def _expiration(value: Any, tagged: bool) -> dict[str, Any]:
    block = _block(value, {"Days", "Date", "ExpiredObjectDeleteMarker"}, "Expiration")
    if len(block) != 1:
        if "ExpiredObjectDeleteMarker" in block:
            raise InvalidRequest(
                "ExpiredObjectDeleteMarker cannot be specified with Days or Date in a Lifecycle "
                "Expiration Policy"
            )
        raise MalformedXML("Expiration holds one of Days, Date or ExpiredObjectDeleteMarker")
    if "Days" in block:
        return {"Days": _positive(block["Days"], "Days")}
    if "Date" in block:
        return {"Date": _date(block["Date"])}
    flag = str(block["ExpiredObjectDeleteMarker"]).lower()
    if flag not in ("true", "false"):
        raise MalformedXML("ExpiredObjectDeleteMarker must be true or false")
    if tagged:
        raise InvalidRequest("ExpiredObjectDeleteMarker cannot be specified with tags")
    return {"ExpiredObjectDeleteMarker": flag == "true"}


def _noncurrent(value: Any) -> dict[str, Any]:
    block = _block(value, {"NoncurrentDays", "NewerNoncurrentVersions"}, "NoncurrentVersionExpiration")
    out = {"NoncurrentDays": _positive(block.get("NoncurrentDays"), "NoncurrentDays")}
    if "NewerNoncurrentVersions" in block:
        newer = _positive(block["NewerNoncurrentVersions"], "NewerNoncurrentVersions")
        if newer > 100:
            raise InvalidArgument("NewerNoncurrentVersions must be between 1 and 100")
        out["NewerNoncurrentVersions"] = newer
    return out


def _transition(value: Any, where: str) -> dict[str, Any]:
    days = "NoncurrentDays" if where == "NoncurrentVersionTransitions" else "Days"
    block = _block(value, {days, "Date", "StorageClass", "NewerNoncurrentVersions"}, where)
    if "StorageClass" not in block:
        raise MalformedXML(f"a {where} item needs a StorageClass")
    out: dict[str, Any] = {}
    if days in block:
        out[days] = int(block[days]) if str(block[days]).isdigit() else _positive(block[days], days)
    if "Date" in block:
        out["Date"] = _date(block["Date"])
    if "NewerNoncurrentVersions" in block:
        out["NewerNoncurrentVersions"] = _positive(
            block["NewerNoncurrentVersions"], "NewerNoncurrentVersions"
        )
    out["StorageClass"] = documents.scalar(block["StorageClass"], "StorageClass")
    return out


def _size(value: Any, where: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise MalformedXML(f"{where} must be an integer") from exc
    if number < 0:
        raise InvalidArgument(f"{where} must be a non-negative integer")
    return number


def _tag(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping) or set(value) != {"Key", "Value"}:
        raise MalformedXML("a Tag holds a Key and a Value")
    return {
        "Key": documents.scalar(value["Key"], "Tag.Key"),
        "Value": documents.scalar(value["Value"], "Tag.Value"),
    }


def _filter(value: Any) -> dict[str, Any]:
    fields = {"Prefix", "Tag", "And", "ObjectSizeGreaterThan", "ObjectSizeLessThan"}
    if not isinstance(value, Mapping) or set(value) - fields:
        raise MalformedXML(f"a lifecycle Filter holds one of {', '.join(sorted(fields))}")
    if len(value) > 1:
        raise MalformedXML("a lifecycle Filter holds one element; combine them with And")
    if "Prefix" in value:
        return {"Prefix": documents.scalar(value["Prefix"], "Filter.Prefix")}
    if "Tag" in value:
        return {"Tag": _tag(value["Tag"])}
    for size in ("ObjectSizeGreaterThan", "ObjectSizeLessThan"):
        if size in value:
            return {size: _size(value[size], size)}
    if "And" in value:
        inner = value["And"]
        allowed = {"Prefix", "Tags", "ObjectSizeGreaterThan", "ObjectSizeLessThan"}
        if not isinstance(inner, Mapping) or set(inner) - allowed:
            raise MalformedXML(f"Filter.And holds {', '.join(sorted(allowed))}")
        out: dict[str, Any] = {}
        if "Prefix" in inner:
            out["Prefix"] = documents.scalar(inner["Prefix"], "Filter.And.Prefix")
        tags = inner.get("Tags", [])
        if not isinstance(tags, list):
            raise MalformedXML("Filter.And.Tags must be a list")
        if tags:
            out["Tags"] = [_tag(t) for t in tags]
        for size in ("ObjectSizeGreaterThan", "ObjectSizeLessThan"):
            if size in inner:
                out[size] = _size(inner[size], size)
        return {"And": out}
    return {}


@dataclass(frozen=True)
class Scope:
    """What a rule covers: a key prefix, tags every object must carry, and object size bounds."""

    prefix: str = ""
    tags: tuple[tuple[str, str], ...] = ()
    larger_than: int | None = None
    smaller_than: int | None = None

    def matches(self, key: str, size: int, tags: Mapping[str, str]) -> bool:
        if not key.startswith(self.prefix):
            return False
        if self.larger_than is not None and not size > self.larger_than:
            return False
        if self.smaller_than is not None and not size < self.smaller_than:
            return False
        return all(tags.get(k) == v for k, v in self.tags)


def scope(rule: Mapping[str, Any]) -> Scope:
    """The objects a checked rule covers."""
    if "Filter" not in rule:
        return Scope(prefix=rule.get("Prefix", ""))
    found = rule["Filter"]
    inner = found.get("And", found)
    tags = inner.get("Tags", [found["Tag"]] if "Tag" in found else [])
    return Scope(
        prefix=inner.get("Prefix", ""),
        tags=tuple((t["Key"], t["Value"]) for t in tags),
        larger_than=inner.get("ObjectSizeGreaterThan"),
        smaller_than=inner.get("ObjectSizeLessThan"),
    )


async def put_lifecycle(ctx: S3Context, call: Call) -> Response:
    config = check(documents.parse(call.body, "LifecycleConfiguration"))
    await ctx.run(ctx.store.put_config, call.bucket, KIND, json.dumps(config))
    return Response(status_code=200)


async def get_lifecycle(ctx: S3Context, call: Call) -> Response:
    document = await ctx.run(ctx.store.get_config, call.bucket, KIND)
    if document is None:
        raise NoSuchLifecycleConfiguration(
            f"The lifecycle configuration does not exist: {call.bucket!r} has none"
        )
    return xml(documents.configuration("LifecycleConfiguration", json.loads(document)))


async def delete_lifecycle(ctx: S3Context, call: Call) -> Response:
    await ctx.run(ctx.store.delete_config, call.bucket, KIND)
    return Response(status_code=204)
