"""JSON responses and the one place that maps errors to HTTP status codes."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from bookstore.domain import errors

log = logging.getLogger("bookstore.api")

STATUS: dict[type[errors.BookstoreError], int] = {
    errors.ValidationError: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.TooManyRequests: 429,
    errors.Unavailable: 503,
}
HTTP_CODES = {400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed", 413: "PayloadTooLarge"}


class JSON(Response):
    """JSON rendered by orjson: the hot paths return these directly."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSON:
    return JSON({"error": code, "message": message}, status_code=status, headers=headers)


def error_for(exc: errors.BookstoreError) -> JSON:
    """The response for a domain error: its status from STATUS, 500 (logged, not explained) otherwise."""
    status = next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 500)
    if status == 500:
        log.error("internal error: %s: %s", type(exc).__name__, exc.message)
        return error(500, "InternalError", "the server failed; try again")
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if isinstance(exc, errors.TooManyRequests):
        headers = {"Retry-After": str(exc.retry_after_s)}
    return error(status, exc.code, exc.message, headers)


def _describe(exc: RequestValidationError) -> str:
    """One readable sentence from pydantic's errors: where, and what was wrong."""
    parts = []
    for err in exc.errors()[:5]:
        if err.get("type") == "json_invalid":
            return "the body is not valid JSON: " + str(err.get("ctx", {}).get("error", "malformed"))
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    async def bookstore_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, errors.BookstoreError)
        return error_for(exc)

    async def validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error(400, "ValidationError", _describe(exc))

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = HTTP_CODES.get(exc.status_code, "HttpError")
        return error(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    async def unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unexpected error")
        return error(500, "InternalError", "the server failed; try again")

    app.add_exception_handler(errors.BookstoreError, bookstore_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
