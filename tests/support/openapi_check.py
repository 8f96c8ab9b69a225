"""Holds every answer of a test client to the app's own /openapi.json: documented status, type and shape.

`CheckedClient` is a TestClient that, after each request, finds the operation the document gives for the
method and path, and fails the test when the status is not one the operation lists, when the content type
is not the listed one, or when a JSON body does not validate against the listed schema (jsonschema, the
document's own components). A path the document does not know must be answered 404 (405 for a method it
does not list) with the error body.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Any

import orjson
from httpx import Response
from jsonschema import Draft202012Validator
from starlette.testclient import TestClient

# Served but left out of the document on purpose: the document itself, its page, Prometheus, a redirect.
UNDOCUMENTED = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/metrics", "/blog"})
ERROR_BODY = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
    "required": ["error", "message"],
    "additionalProperties": False,
}


class Undocumented(AssertionError):
    """An answer /openapi.json does not describe."""


class OpenApiDocument:
    """One OpenAPI document, able to say whether an answer is one it describes."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.components = document.get("components", {})
        # Literal paths first, so /cart wins over a template that could also match it.
        self.templates = sorted(
            ((path, _template_regex(path)) for path in document["paths"]), key=lambda p: "{" in p[0]
        )

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]] | None:
        for template, regex in self.templates:
            if regex.fullmatch(path):
                return template, self.document["paths"][template].get(method.lower(), {})
        return None

    def check(self, method: str, path: str, response: Response) -> None:
        """Raises Undocumented when `response` to `method path` is not an answer the document describes."""
        if path in UNDOCUMENTED:
            return
        found = self.operation(method, path)
        if found is None or not found[1]:
            expected = 404 if found is None else 405
            if response.status_code != expected:
                raise Undocumented(f"{method} {path}: undocumented, answered {response.status_code}")
            self._validate(f"{method} {path}", ERROR_BODY, response)
            return
        template, operation = found
        label = f"{method} {template} ({path})"
        answers = operation.get("responses", {})
        answer = answers.get(str(response.status_code), answers.get("default"))
        if answer is None:
            raise Undocumented(
                f"{label}: answered {response.status_code}, the document lists only {sorted(answers)}: "
                f"{response.text[:200]}"
            )
        content = answer.get("content", {})
        media = response.headers.get("content-type", "").partition(";")[0].strip()
        if not content:
            if response.content:
                raise Undocumented(f"{label}: {response.status_code} has a body the document does not list")
            return
        if media not in content:
            raise Undocumented(
                f"{label}: {response.status_code} is {media!r}, the document lists {sorted(content)}"
            )
        schema = content[media].get("schema")
        if media == "application/json" and schema is not None:
            self._validate(f"{label} {response.status_code}", schema, response)

    def _validate(self, label: str, schema: dict[str, Any], response: Response) -> None:
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise Undocumented(f"{label}: the body is not JSON ({exc}): {response.text[:200]}") from None
        # The document's components ride along so that "#/components/schemas/..." resolves.
        validator = Draft202012Validator({**schema, "components": self.components})
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path) or "(the body)"
            raise Undocumented(f"{label}: at {where}: {errors[0].message}")


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts))


class CheckedClient(TestClient):
    """A TestClient whose every answer is checked against the app's /openapi.json (OpenApiDocument)."""

    checked = 0

    @cached_property
    def openapi(self) -> OpenApiDocument:
        document = super().request("GET", "/openapi.json")
        assert document.status_code == 200, document.text
        return OpenApiDocument(document.json())

    def request(self, method: str, url: Any, *args: Any, **kwargs: Any) -> Response:
        response: Response = super().request(method, url, *args, **kwargs)
        self.openapi.check(method.upper(), response.request.url.path, response)
        self.checked += 1
        return response
