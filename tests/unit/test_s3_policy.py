"""Bucket policy checks and the anonymous reads a policy grants (objectstore.policy), without a server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bookstore.objectstore.errors import MalformedPolicy
from bookstore.objectstore.policy import allows_anonymous, check

OBJECT = "arn:aws:s3:::site/docs/a.html"


def policy(*statements: dict[str, Any]) -> str:
    return check(json.dumps({"Version": "2012-10-17", "Statement": list(statements)}).encode(), "site")


def allow(**fields: Any) -> dict[str, Any]:
    return {
        "Effect": "Allow",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::site/*",
        **fields,
    }


def test_no_policy_grants_nothing() -> None:
    assert not allows_anonymous(None, "s3:GetObject", OBJECT)


def test_actions_match_by_wildcard_and_case_insensitively() -> None:
    assert allows_anonymous(policy(allow(Action="s3:get*")), "s3:GetObject", OBJECT)
    assert allows_anonymous(policy(allow(Action="*")), "s3:GetObject", OBJECT)
    assert not allows_anonymous(policy(allow(Action="s3:GetObjectVersion")), "s3:GetObject", OBJECT)
    assert not allows_anonymous(policy(allow(Action="s3:GetObjec?s")), "s3:GetObject", OBJECT)


def test_resources_match_by_wildcard_case_sensitively() -> None:
    assert allows_anonymous(policy(allow(Resource="arn:aws:s3:::site/docs/?.html")), "s3:GetObject", OBJECT)
    assert not allows_anonymous(policy(allow(Resource="arn:aws:s3:::site/DOCS/*")), "s3:GetObject", OBJECT)
    assert not allows_anonymous(policy(allow(Resource="arn:aws:s3:::site")), "s3:GetObject", OBJECT)
    # "[" is an ordinary character in a policy, not a character class.
    assert not allows_anonymous(
        policy(allow(Resource="arn:aws:s3:::site/docs/[a].html")), "s3:GetObject", OBJECT
    )


def without(statement: dict[str, Any], field: str) -> dict[str, Any]:
    return {k: v for k, v in statement.items() if k != field}


def test_not_action_and_not_resource_invert_the_match() -> None:
    not_put = without(allow(NotAction="s3:PutObject"), "Action")
    assert allows_anonymous(policy(not_put), "s3:GetObject", OBJECT)
    not_get = without(allow(NotAction="s3:Get*"), "Action")
    assert not allows_anonymous(policy(not_get), "s3:GetObject", OBJECT)
    outside = without(allow(NotResource="arn:aws:s3:::site/private/*"), "Resource")
    assert allows_anonymous(policy(outside), "s3:GetObject", OBJECT)
    assert not allows_anonymous(policy(outside), "s3:GetObject", "arn:aws:s3:::site/private/k")


def test_a_deny_wins_and_a_conditional_deny_always_applies() -> None:
    deny = {"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": "arn:aws:s3:::site/docs/*"}
    assert not allows_anonymous(policy(allow(), deny), "s3:GetObject", OBJECT)
    conditional = deny | {"Condition": {"Bool": {"aws:SecureTransport": "false"}}}
    assert not allows_anonymous(policy(allow(), conditional), "s3:GetObject", OBJECT)
    assert allows_anonymous(policy(allow(), conditional), "s3:GetObject", "arn:aws:s3:::site/other")


def test_named_principals_and_not_principal_grant_nothing_anonymous() -> None:
    named = allow(Principal={"AWS": "arn:aws:iam::123456789012:root"})
    assert not allows_anonymous(policy(named), "s3:GetObject", OBJECT)
    service = allow(Principal={"Service": "cloudfront.amazonaws.com"})
    assert not allows_anonymous(policy(service), "s3:GetObject", OBJECT)
    everyone_but = {
        k: v for k, v in allow(NotPrincipal={"AWS": "arn:aws:iam::1:root"}).items() if k != "Principal"
    }
    assert not allows_anonymous(policy(everyone_but), "s3:GetObject", OBJECT)
    assert allows_anonymous(
        policy(allow(Principal={"AWS": ["arn:aws:iam::1:root", "*"]})), "s3:GetObject", OBJECT
    )


@pytest.mark.parametrize(
    "statement",
    [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject"},
        {"Effect": "Allow", "Principal": "*", "Resource": "arn:aws:s3:::site/*"},
        {
            "Effect": "Allow",
            "Principal": "*",
            "Action": "s3:GetObject",
            "NotAction": "s3:PutObject",
            "Resource": "arn:aws:s3:::site/*",
        },
        {"Effect": "Allow", "Principal": 7, "Action": "s3:GetObject", "Resource": "arn:aws:s3:::site/*"},
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "site/*"},
        {
            "Effect": "Allow",
            "Principal": "*",
            "Action": "s3:GetObject",
            "Resource": "arn:aws:s3:::site/*",
            "Condition": "yes",
        },
        {
            "Effect": "Allow",
            "Principal": "*",
            "Action": "s3:GetObject",
            "Resource": "arn:aws:s3:::site/*",
            "Extra": 1,
        },
    ],
    ids=[
        "no-resource",
        "no-action",
        "action-and-not-action",
        "bad-principal",
        "not-an-arn",
        "bad-condition",
        "unknown-field",
    ],
)
def test_malformed_statements_are_refused(statement: dict[str, Any]) -> None:
    with pytest.raises(MalformedPolicy):
        policy(statement)


def test_a_policy_over_20_kib_is_refused() -> None:
    big = [allow(Sid=f"s{n}", Resource=f"arn:aws:s3:::site/{'x' * 100}{n}") for n in range(200)]
    with pytest.raises(MalformedPolicy):
        policy(*big)
