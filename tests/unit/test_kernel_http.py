"""The kernel's error responses: every error answers the status its class carries, one map for all."""

from __future__ import annotations

import orjson
import pytest

from bookstore.domain import errors
from bookstore.kernel.http import error_for, status_of

# The statuses the Bookstore API answered before the errors carried them (api/responses.STATUS).
EXPECTED = {
    errors.ValidationError: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.TooManyRequests: 429,
    errors.Unavailable: 503,
    errors.BookstoreError: 500,
    errors.ConditionFailed: 500,
    errors.StorageError: 500,
    errors.StaleCursor: 500,
}


@pytest.mark.parametrize("cls", list(EXPECTED), ids=lambda c: c.__name__)
def test_each_domain_error_answers_the_status_it_carries(cls: type[errors.BookstoreError]) -> None:
    exc = cls("no", 3) if cls is errors.TooManyRequests else cls("no")
    assert status_of(exc) == EXPECTED[cls]
    answer = error_for(exc)
    assert answer.status_code == EXPECTED[cls]
    body = orjson.loads(answer.body)
    if EXPECTED[cls] == 500:
        # Internal errors are logged, not explained: their message may name paths and engines.
        assert body == {"error": "InternalError", "message": "the server failed; try again"}
    else:
        assert body == {"error": exc.code, "message": "no"}


def test_the_answers_carry_the_headers_a_client_needs() -> None:
    assert error_for(errors.Unauthorized("who?")).headers["www-authenticate"] == "Bearer"
    assert error_for(errors.TooManyRequests("slow down", 7)).headers["retry-after"] == "7"
