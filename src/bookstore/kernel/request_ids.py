"""Request ids: the client's X-Request-Id when it is short and plain, else a new random one."""

from __future__ import annotations

import os
import re

HEADER = b"x-request-id"
MAX_LENGTH = 64
# Letters, digits and a few separators: an id goes into log lines and headers as it is.
_SAFE = re.compile(rb"[A-Za-z0-9._:-]{1,%d}" % MAX_LENGTH).fullmatch


def new() -> bytes:
    """A fresh id: 16 hex digits (os.urandom is cheaper than uuid4 and as unique for this purpose)."""
    return os.urandom(8).hex().encode()


def accepted(value: bytes | None) -> bytes:
    """`value` when it is a usable id (at most MAX_LENGTH safe characters), else a fresh one."""
    if value is not None and _SAFE(value) is not None:
        return value
    return new()
