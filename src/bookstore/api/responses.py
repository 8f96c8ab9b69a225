"""The Bookstore API's error handlers: domain errors, request validation and HTTP errors as JSON.

The responses and the error-to-status mapping are the kernel's (bookstore.kernel.http).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from bookstore.domain import errors
from bookstore.kernel.http import error_for, error_response

log = logging.getLogger("bookstore.api")

HTTP_CODES = {400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed", 413: "PayloadTooLarge"}


def _describe(exc: RequestValidationError) -> str:
    """One readable sentence from pydantic's errors: where, and what was wrong."""
    parts = []
    for err in exc.errors()[:5]:
        if err.get("type") == "json_invalid":
            return "the body is not valid JSON: " + str(err.get("ctx", {}).get("error", "malformed"))
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def internal_error() -> Response:
    """The answer to an unexpected error (logged by the caller): 500, saying nothing of the cause."""
    return error_response(500, "InternalError", "the server failed; try again")


def install_error_handlers(app: FastAPI) -> None:
    async def bookstore_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, errors.BookstoreError)
        return error_for(exc)

    async def validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(400, "ValidationError", _describe(exc))

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = HTTP_CODES.get(exc.status_code, "HttpError")
        return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    async def unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unexpected error")
        return internal_error()

    app.add_exception_handler(errors.BookstoreError, bookstore_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
