"""Rules every object-store adapter shares: common prefixes of a listing, its continuation tokens, and
which bytes a range asks for.
"""

from __future__ import annotations

import base64

from bookstore.objectstore.errors import InvalidArgument, InvalidRange
from bookstore.objectstore.port import ByteRange


def common_prefix(key: str, prefix: str, delimiter: str) -> str | None:
    """The common prefix `key` rolls up into (up to its first delimiter after `prefix`), else None."""
    if not delimiter:
        return None
    at = key.find(delimiter, len(prefix))
    return None if at < 0 else key[: at + len(delimiter)]


def page_token(position: str) -> str:
    """The continuation token that resumes a listing after `position` (a key or common prefix)."""
    return base64.urlsafe_b64encode(position.encode()).decode()


def token_position(token: str) -> str:
    """The position a continuation token resumes after; InvalidArgument when it is not one of ours."""
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeError) as exc:
        raise InvalidArgument("The continuation token provided is incorrect") from exc


def resolve_range(size: int, byte_range: ByteRange | None) -> tuple[int, int, bool]:
    """(first, last, partial) of `byte_range` over `size` bytes; InvalidRange when unsatisfiable."""
    if byte_range is None:
        return 0, size - 1, False
    first, last = byte_range
    if first is None:
        if last is None or last <= 0 or size == 0:
            raise InvalidRange("The requested range is not satisfiable", size=size)
        return max(0, size - last), size - 1, True
    if first >= size or (last is not None and last < first):
        raise InvalidRange("The requested range is not satisfiable", size=size)
    return first, size - 1 if last is None else min(last, size - 1), True
