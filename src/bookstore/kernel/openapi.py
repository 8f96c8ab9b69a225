"""What the OpenAPI documents of our FastAPI apps share: the error body, error answers, bearer auth.

Every error answer is kernel.http's `{"error": code, "message": text}`; routes list the statuses they
really send with `error_answers(...)`. FastAPI's own 422 never happens here (request validation answers
400, api/responses.py), so `without_422` takes it out of a generated document.
"""

from __future__ import annotations

from typing import Any

from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field

# The one security scheme: "Authorize" in /docs and generated clients send `Authorization: Bearer <token>`.
# auto_error=False: the route's own check answers a missing or malformed header with our 401 body.
BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    bearerFormat="JWT",
    description="The accessToken of POST /auth/signin (or /auth/refresh), sent as 'Bearer <accessToken>'.",
)


class ErrorBody(BaseModel):
    """Every error answer: a code a program can test and a message a person can act on."""

    error: str = Field(description="the error's code, e.g. ValidationError, NotFound, Unauthorized")
    message: str = Field(description="what was wrong and, where it helps, what to do")


WHY = {
    400: "The request is malformed: a parameter or body field of the wrong type, length or value",
    401: "No valid bearer token (missing, malformed, expired, forged, signed out) or wrong credentials",
    403: "The credentials are valid but do not allow this",
    404: "No such thing",
    409: "The request clashes with the current state",
    412: "A precondition of the request does not hold",
    413: "The body is larger than the server accepts",
    429: "Too many attempts for now; retry after Retry-After seconds",
    503: "This region cannot serve the request now",
}
HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}}},
}


def error_answers(*statuses: int, why: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses=` for the error statuses a route sends, each with the error body's schema."""
    answers: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        answer: dict[str, Any] = {"model": ErrorBody, "description": (why or {}).get(status, WHY[status])}
        if status in HEADERS:
            answer["headers"] = HEADERS[status]
        answers[status] = answer
    return answers


def page_error_answers(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """error_answers for a route that answers HTML: its errors are still JSON, which `model` would hide.

    The schema is a reference to ErrorBody (one model for generated clients), which the app's JSON routes
    with error_answers put in the document's components.
    """
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    answers = error_answers(*statuses)
    for answer in answers.values():
        del answer["model"]
        answer["content"] = content
    return answers


def without_422(document: dict[str, Any]) -> dict[str, Any]:
    """The document without FastAPI's 422 answers and their schemas, which our apps never send."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict):
                operation.get("responses", {}).pop("422", None)
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return document
