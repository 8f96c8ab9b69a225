"""CloudFormation's intrinsic functions and the template skeleton, as plain dicts (no library needed:
a template is JSON, and cfn-lint checks every generated one in the tests)."""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]


def ref(name: str) -> Json:
    return {"Ref": name}


def att(resource: str, attribute: str) -> Json:
    return {"Fn::GetAtt": [resource, attribute]}


def sub(text: str) -> Json:
    return {"Fn::Sub": text}


def iff(condition: str, yes: Any, no: Any) -> Json:
    return {"Fn::If": [condition, yes, no]}


NO_VALUE = ref("AWS::NoValue")


def resource(kind: str, properties: Json, **extra: Any) -> Json:
    """A resource of type `kind`; `extra` adds DependsOn, Condition, DeletionPolicy and the like."""
    return {"Type": kind, "Properties": properties, **extra}


def template(
    description: str,
    resources: Json,
    *,
    parameters: Json | None = None,
    conditions: Json | None = None,
    outputs: Json | None = None,
) -> Json:
    """A whole template; empty sections are left out (cfn-lint refuses an empty Parameters)."""
    doc: Json = {"AWSTemplateFormatVersion": "2010-09-09", "Description": description}
    if parameters:
        doc["Parameters"] = parameters
    if conditions:
        doc["Conditions"] = conditions
    doc["Resources"] = resources
    if outputs:
        doc["Outputs"] = {name: {"Value": value} for name, value in outputs.items()}
    return doc


def string_parameter(description: str, default: str | None = None) -> Json:
    param: Json = {"Type": "String", "Description": description}
    if default is not None:
        param["Default"] = default
    return param


def logical_id(text: str) -> str:
    """A logical resource id from free text (`eu-west-1` -> `EuWest1`): alphanumeric only."""
    return "".join(part[:1].upper() + part[1:] for part in text.replace("_", "-").split("-") if part)
