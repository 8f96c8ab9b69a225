"""Errors the domain and services raise; each carries the HTTP status it answers with (`status`).

The domain knows no HTTP: `status` is a number the HTTP layer (bookstore.kernel.http) reads, so the
mapping lives with the error and every endpoint answers an error with the same status.
"""

from __future__ import annotations


class BookstoreError(Exception):
    """Base of every error this project raises on purpose; `code` names it in error responses."""

    code = "InternalError"
    # 500: no client can act on it; an endpoint logs it and answers without its message.
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationError(BookstoreError):
    """The request or item is malformed or out of range (400)."""

    code = "ValidationError"
    status = 400


class NotFound(BookstoreError):
    """The thing asked for does not exist (404)."""

    code = "NotFound"
    status = 404


class Conflict(BookstoreError):
    """The request clashes with the current state, e.g. an email already signed up (409)."""

    code = "Conflict"
    status = 409


class Unauthorized(BookstoreError):
    """No valid credentials: missing, expired, forged token or wrong password (401)."""

    code = "Unauthorized"
    status = 401


class Forbidden(BookstoreError):
    """Valid credentials that do not allow this (403)."""

    code = "Forbidden"
    status = 403


class TooManyRequests(BookstoreError):
    """Too many attempts (sign-in, confirmation codes) for now: try again after `retry_after_s` (429)."""

    code = "TooManyRequests"
    status = 429

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, retry_after_s)


class Unavailable(BookstoreError):
    """This region cannot serve the request now, e.g. a read-only replica asked to write (503)."""

    code = "Unavailable"
    status = 503


class ConditionFailed(BookstoreError):
    """A storage write's condition did not hold; nothing was changed."""

    code = "ConditionFailed"


class StorageError(BookstoreError):
    """The storage engine failed; the adapter chains the engine's own exception."""

    code = "StorageError"


class StaleCursor(StorageError):
    """A stream cursor no longer leads on exactly: the stream was trimmed past it, or the store that kept
    it (and what it counted) was emptied. Its holder rebuilds from a scan of the table, then follows."""

    code = "StaleCursor"
