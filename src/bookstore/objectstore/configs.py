"""Bucket configurations in the S3 shape: replication (rules, filters, destinations) and website hosting.

Each configuration converts to and from the JSON shape that boto3 and the `aws` CLI take
(`to_json` / `from_json`); app.py's documents module converts it to and from S3 XML. A document of the
wrong shape raises MalformedXML; a well-formed one that S3 would refuse raises InvalidArgument or
InvalidRequest from `validate`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

from bookstore.objectstore.errors import InvalidArgument, InvalidRequest, MalformedXML

Status = Literal["Enabled", "Disabled"]
ARN_PREFIX = "arn:aws:s3:::"
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def status_of(value: Any, where: str) -> Status:
    """`value` as a rule status; anything but Enabled/Disabled is MalformedXML."""
    if value not in ("Enabled", "Disabled"):
        raise MalformedXML(f"{where}: Status must be Enabled or Disabled, not {value!r}")
    return cast(Status, value)


@dataclass(frozen=True)
class RuleFilter:
    """The keys a V2 rule covers: a prefix, tags, both (`use_and`), or nothing (Filter {}: every key)."""

    prefix: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    use_and: bool = False

    def matches(self, key: str, tags: Mapping[str, str]) -> bool:
        if self.prefix and not key.startswith(self.prefix):
            return False
        return all(tags.get(k) == v for k, v in self.tags)

    def to_json(self) -> dict[str, Any]:
        if self.use_and:
            inner: dict[str, Any] = {}
            if self.prefix is not None:
                inner["Prefix"] = self.prefix
            if self.tags:
                inner["Tags"] = [{"Key": k, "Value": v} for k, v in self.tags]
            return {"And": inner}
        if self.tags:
            k, v = self.tags[0]
            return {"Tag": {"Key": k, "Value": v}}
        if self.prefix is not None:
            return {"Prefix": self.prefix}
        return {}

    @classmethod
    def from_json(cls, doc: Any) -> RuleFilter:
        if not isinstance(doc, Mapping):
            raise MalformedXML("Filter must be an object")
        unknown = set(doc) - {"Prefix", "Tag", "And"}
        if unknown or len(doc) > 1:
            raise MalformedXML("Filter holds exactly one of Prefix, Tag or And (or nothing)")
        if "Prefix" in doc:
            # An empty prefix filters nothing, the same as an empty Filter (some servers answer either).
            return cls(prefix=_text(doc["Prefix"], "Filter.Prefix") or None)
        if "Tag" in doc:
            return cls(tags=(_tag(doc["Tag"]),))
        if "And" in doc:
            inner = doc["And"]
            if not isinstance(inner, Mapping) or set(inner) - {"Prefix", "Tags"}:
                raise MalformedXML("Filter.And holds Prefix and Tags only")
            tags = inner.get("Tags", [])
            if not isinstance(tags, list):
                raise MalformedXML("Filter.And.Tags must be a list")
            prefix = inner.get("Prefix")
            return cls(
                prefix=None if prefix is None else _text(prefix, "Filter.And.Prefix"),
                tags=tuple(_tag(t) for t in tags),
                use_and=True,
            )
        return cls()


@dataclass(frozen=True)
class ReplicationRule:
    """One replication rule. A rule with `filter` is a V2 rule; one with only `prefix` is the V1 shape."""

    destination_bucket: str
    status: Status = "Enabled"
    id: str = ""
    priority: int | None = None
    filter: RuleFilter | None = None
    prefix: str | None = None
    delete_marker_replication: Status | None = None
    existing_object_replication: Status | None = None
    replica_modifications: Status | None = None
    sse_kms_encrypted_objects: Status | None = None
    destination_storage_class: str | None = None
    destination_account: str | None = None

    @property
    def destination_bucket_name(self) -> str:
        return self.destination_bucket.removeprefix(ARN_PREFIX)

    @property
    def enabled(self) -> bool:
        return self.status == "Enabled"

    @property
    def replicates_delete_markers(self) -> bool:
        # V1 rules (no Filter) always replicated delete markers; V2 rules say so explicitly.
        if self.filter is None:
            return True
        return self.delete_marker_replication == "Enabled"

    def matches(self, key: str, tags: Mapping[str, str]) -> bool:
        if self.filter is not None:
            return self.filter.matches(key, tags)
        return key.startswith(self.prefix or "")

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"ID": self.id}
        if self.priority is not None:
            doc["Priority"] = self.priority
        if self.filter is not None:
            doc["Filter"] = self.filter.to_json()
        if self.prefix is not None:
            doc["Prefix"] = self.prefix
        doc["Status"] = self.status
        criteria: dict[str, Any] = {}
        if self.sse_kms_encrypted_objects is not None:
            criteria["SseKmsEncryptedObjects"] = {"Status": self.sse_kms_encrypted_objects}
        if self.replica_modifications is not None:
            criteria["ReplicaModifications"] = {"Status": self.replica_modifications}
        if criteria:
            doc["SourceSelectionCriteria"] = criteria
        if self.existing_object_replication is not None:
            doc["ExistingObjectReplication"] = {"Status": self.existing_object_replication}
        destination: dict[str, Any] = {"Bucket": self.destination_bucket}
        if self.destination_account is not None:
            destination["Account"] = self.destination_account
        if self.destination_storage_class is not None:
            destination["StorageClass"] = self.destination_storage_class
        doc["Destination"] = destination
        if self.delete_marker_replication is not None:
            doc["DeleteMarkerReplication"] = {"Status": self.delete_marker_replication}
        return doc

    @classmethod
    def from_json(cls, doc: Any) -> ReplicationRule:
        if not isinstance(doc, Mapping):
            raise MalformedXML("each rule must be an object")
        known = {
            "ID",
            "Priority",
            "Prefix",
            "Filter",
            "Status",
            "SourceSelectionCriteria",
            "ExistingObjectReplication",
            "Destination",
            "DeleteMarkerReplication",
        }
        unknown = set(doc) - known
        if unknown:
            raise MalformedXML(f"unknown rule element(s): {', '.join(sorted(unknown))}")
        if "Status" not in doc:
            raise MalformedXML("a rule needs a Status")
        if "Destination" not in doc:
            raise MalformedXML("a rule needs a Destination")
        destination = doc["Destination"]
        if not isinstance(destination, Mapping) or "Bucket" not in destination:
            raise MalformedXML("Destination needs a Bucket")
        if "Filter" in doc and "Prefix" in doc:
            raise MalformedXML("a rule has either Filter or Prefix, not both")
        priority = doc.get("Priority")
        if priority is not None:
            try:
                priority = int(priority)
            except (TypeError, ValueError) as exc:
                raise MalformedXML(f"Priority must be an integer, not {priority!r}") from exc
        criteria = doc.get("SourceSelectionCriteria", {})
        if not isinstance(criteria, Mapping) or set(criteria) - {
            "SseKmsEncryptedObjects",
            "ReplicaModifications",
        }:
            raise MalformedXML(
                "SourceSelectionCriteria holds SseKmsEncryptedObjects and ReplicaModifications"
            )
        prefix = doc.get("Prefix")
        return cls(
            destination_bucket=_text(destination["Bucket"], "Destination.Bucket"),
            status=status_of(doc["Status"], "Rule"),
            id=_text(doc.get("ID", ""), "ID"),
            priority=priority,
            filter=RuleFilter.from_json(doc["Filter"]) if "Filter" in doc else None,
            prefix=None if prefix is None else _text(prefix, "Prefix"),
            delete_marker_replication=_status_block(doc, "DeleteMarkerReplication"),
            existing_object_replication=_status_block(doc, "ExistingObjectReplication"),
            replica_modifications=_status_block(criteria, "ReplicaModifications"),
            sse_kms_encrypted_objects=_status_block(criteria, "SseKmsEncryptedObjects"),
            destination_storage_class=_optional_text(destination, "StorageClass"),
            destination_account=_optional_text(destination, "Account"),
        )


@dataclass(frozen=True)
class ReplicationConfiguration:
    """A bucket's replication configuration: the IAM role (kept, not enforced) and its rules."""

    role: str
    rules: tuple[ReplicationRule, ...]

    def validate(self, source_bucket: str | None = None) -> ReplicationConfiguration:
        """This configuration with generated rule IDs where missing; raises what S3 would refuse."""
        if not self.role:
            raise InvalidArgument("the replication configuration needs a Role")
        if not self.rules:
            raise MalformedXML("the replication configuration needs at least one Rule")
        if len(self.rules) > 1000:
            raise InvalidRequest("a replication configuration holds at most 1000 rules")
        v2 = [r.filter is not None for r in self.rules]
        if any(v2) and not all(v2):
            raise InvalidRequest("rules with Filter and rules with Prefix cannot be mixed")
        rules = tuple(r if r.id else replace(r, id=_rule_id()) for r in self.rules)
        ids = [r.id for r in rules]
        if len(set(ids)) != len(ids):
            raise InvalidArgument("Rule Id must be unique")
        for rule in rules:
            if len(rule.id) > 255:
                raise InvalidArgument("Rule Id is at most 255 characters")
            name = rule.destination_bucket_name
            if not rule.destination_bucket.startswith(ARN_PREFIX) or not _BUCKET_NAME.match(name):
                raise InvalidArgument(
                    f"Invalid bucket ARN {rule.destination_bucket!r}: use arn:aws:s3:::NAME"
                )
            if source_bucket is not None and name == source_bucket:
                raise InvalidRequest("Destination bucket cannot be the same as the source bucket")
            if rule.filter is None:
                continue
            if rule.priority is None:
                raise InvalidRequest("Priority must be specified for this version of the replication schema")
            if rule.priority < 0:
                raise InvalidArgument("Priority must be a non-negative integer")
            if rule.delete_marker_replication is None:
                raise InvalidRequest(
                    "DeleteMarkerReplication must be specified for this version of the replication schema"
                )
            if rule.delete_marker_replication == "Enabled" and rule.filter.tags:
                raise InvalidRequest(
                    "Delete marker replication is not supported if any Tag filter is specified"
                )
        priorities = [r.priority for r in rules if r.filter is not None]
        if len(set(priorities)) != len(priorities):
            raise InvalidRequest("Found duplicate priority: every rule needs its own Priority")
        return replace(self, rules=rules)

    def rule_for(
        self, key: str, tags: Mapping[str, str], *, delete_marker: bool = False
    ) -> ReplicationRule | None:
        """The enabled rule that replicates this version (highest Priority first), or None."""
        best: ReplicationRule | None = None
        for rule in self.rules:
            if not rule.enabled or not rule.matches(key, tags):
                continue
            if delete_marker and not rule.replicates_delete_markers:
                continue
            if best is None or (rule.priority or 0) > (best.priority or 0):
                best = rule
        return best

    def to_json(self) -> dict[str, Any]:
        return {"Role": self.role, "Rules": [r.to_json() for r in self.rules]}

    @classmethod
    def from_json(cls, doc: Any) -> ReplicationConfiguration:
        if not isinstance(doc, Mapping):
            raise MalformedXML("the replication configuration must be an object")
        unknown = set(doc) - {"Role", "Rules"}
        if unknown:
            raise MalformedXML(f"unknown element(s): {', '.join(sorted(unknown))}")
        if "Role" not in doc:
            raise MalformedXML("the replication configuration needs a Role")
        rules = doc.get("Rules")
        if not isinstance(rules, list) or not rules:
            raise MalformedXML("the replication configuration needs at least one Rule")
        return cls(role=_text(doc["Role"], "Role"), rules=tuple(ReplicationRule.from_json(r) for r in rules))


@dataclass(frozen=True)
class RoutingRule:
    """A website routing rule: Condition and Redirect fields, as (name, value) pairs in document order."""

    redirect: tuple[tuple[str, str], ...]
    condition: tuple[tuple[str, str], ...] = ()


_CONDITION_FIELDS = ("KeyPrefixEquals", "HttpErrorCodeReturnedEquals")
_REDIRECT_FIELDS = ("HostName", "HttpRedirectCode", "Protocol", "ReplaceKeyPrefixWith", "ReplaceKeyWith")


@dataclass(frozen=True)
class WebsiteConfiguration:
    """Static website hosting: index and error documents, or a redirect of every request; routing rules."""

    index_document: str | None = None
    error_document: str | None = None
    redirect_all_host: str | None = None
    redirect_all_protocol: str | None = None
    routing_rules: tuple[RoutingRule, ...] = ()

    def validate(self) -> WebsiteConfiguration:
        if self.redirect_all_host is not None:
            if self.index_document is not None or self.error_document is not None or self.routing_rules:
                raise InvalidArgument("RedirectAllRequestsTo cannot be combined with other website settings")
            if self.redirect_all_protocol not in (None, "http", "https"):
                raise InvalidArgument("Protocol must be http or https")
            return self
        if not self.index_document:
            raise InvalidArgument(
                "A value for IndexDocument Suffix must be provided if RedirectAllRequestsTo is empty"
            )
        if "/" in self.index_document:
            raise InvalidArgument("The IndexDocument Suffix is not well formed: it cannot contain '/'")
        for rule in self.routing_rules:
            if not rule.redirect:
                raise InvalidArgument("a routing rule needs a Redirect")
        return self

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.redirect_all_host is not None:
            target = {"HostName": self.redirect_all_host}
            if self.redirect_all_protocol:
                target["Protocol"] = self.redirect_all_protocol
            doc["RedirectAllRequestsTo"] = target
        if self.index_document is not None:
            doc["IndexDocument"] = {"Suffix": self.index_document}
        if self.error_document is not None:
            doc["ErrorDocument"] = {"Key": self.error_document}
        if self.routing_rules:
            rules = []
            for rule in self.routing_rules:
                one: dict[str, Any] = {"Redirect": dict(rule.redirect)}
                if rule.condition:
                    one["Condition"] = dict(rule.condition)
                rules.append(one)
            doc["RoutingRules"] = rules
        return doc

    @classmethod
    def from_json(cls, doc: Any) -> WebsiteConfiguration:
        if not isinstance(doc, Mapping):
            raise MalformedXML("the website configuration must be an object")
        unknown = set(doc) - {"IndexDocument", "ErrorDocument", "RedirectAllRequestsTo", "RoutingRules"}
        if unknown:
            raise MalformedXML(f"unknown element(s): {', '.join(sorted(unknown))}")
        index = doc.get("IndexDocument")
        error = doc.get("ErrorDocument")
        redirect = doc.get("RedirectAllRequestsTo")
        if index is not None and (not isinstance(index, Mapping) or "Suffix" not in index):
            raise MalformedXML("IndexDocument needs a Suffix")
        if error is not None and (not isinstance(error, Mapping) or "Key" not in error):
            raise MalformedXML("ErrorDocument needs a Key")
        if redirect is not None and (not isinstance(redirect, Mapping) or "HostName" not in redirect):
            raise MalformedXML("RedirectAllRequestsTo needs a HostName")
        rules_doc = doc.get("RoutingRules", [])
        if not isinstance(rules_doc, list):
            raise MalformedXML("RoutingRules must be a list")
        rules = []
        for rule in rules_doc:
            if (
                not isinstance(rule, Mapping)
                or set(rule) - {"Condition", "Redirect"}
                or "Redirect" not in rule
            ):
                raise MalformedXML("a routing rule holds a Redirect and an optional Condition")
            rules.append(
                RoutingRule(
                    redirect=_fields(rule["Redirect"], _REDIRECT_FIELDS, "Redirect"),
                    condition=_fields(rule.get("Condition", {}), _CONDITION_FIELDS, "Condition"),
                )
            )
        return cls(
            index_document=None if index is None else _text(index["Suffix"], "IndexDocument.Suffix"),
            error_document=None if error is None else _text(error["Key"], "ErrorDocument.Key"),
            redirect_all_host=None if redirect is None else _text(redirect["HostName"], "HostName"),
            redirect_all_protocol=None if redirect is None else _optional_text(redirect, "Protocol"),
            routing_rules=tuple(rules),
        )


def _rule_id() -> str:
    # S3 invents an ID for a rule that has none; any unique text up to 255 characters will do.
    return secrets.token_urlsafe(24)


def _text(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise MalformedXML(f"{where} must be text")
    return str(value)


def _optional_text(doc: Mapping[str, Any], name: str) -> str | None:
    return None if doc.get(name) is None else _text(doc[name], name)


def _tag(doc: Any) -> tuple[str, str]:
    if not isinstance(doc, Mapping) or set(doc) != {"Key", "Value"}:
        raise MalformedXML("a Tag holds a Key and a Value")
    return _text(doc["Key"], "Tag.Key"), _text(doc["Value"], "Tag.Value")


def _status_block(doc: Mapping[str, Any], name: str) -> Status | None:
    block = doc.get(name)
    if block is None:
        return None
    if not isinstance(block, Mapping) or set(block) != {"Status"}:
        raise MalformedXML(f"{name} holds a Status")
    return status_of(block["Status"], name)


def _fields(doc: Any, names: tuple[str, ...], where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(doc, Mapping) or set(doc) - set(names):
        raise MalformedXML(f"{where} holds only {', '.join(names)}")
    return tuple((n, _text(doc[n], f"{where}.{n}")) for n in names if n in doc)
