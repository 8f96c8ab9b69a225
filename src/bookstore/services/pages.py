"""Pages of the API's lists: a limit and an opaque cursor that holds the position after the last item.

A cursor is a position in the list's order (after book id X, before order (date, id) Y), not an offset
or a storage cursor: an item that exists from the first page to the last is returned exactly once, while
other items are added or removed meanwhile, and the same cursor works in every region.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Final

import orjson

from bookstore.domain.errors import ValidationError

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
# A cursor this service issues is far shorter; longer ones are refused before decoding.
MAX_CURSOR: Final = 256


def encode(kind: str, position: Any) -> str:
    """An opaque cursor for `position` in a list of `kind` (books, orders)."""
    return base64.urlsafe_b64encode(orjson.dumps([kind, position])).decode("ascii").rstrip("=")


def decode(kind: str, cursor: str) -> Any:
    """The position a cursor of `kind` holds; ValidationError for anything this service did not issue."""
    if len(cursor) > MAX_CURSOR:
        raise ValidationError("cursor: too long; pass the cursor of the previous page as it was")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decoded = orjson.loads(raw)
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        decoded = None
    if not (isinstance(decoded, list) and len(decoded) == 2 and decoded[0] == kind):
        raise ValidationError(f"cursor: not a cursor of this list of {kind}; pass the previous page's cursor")
    return decoded[1]


def check_limit(limit: int) -> int:
    if type(limit) is not int or not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"limit: must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")
    return limit
