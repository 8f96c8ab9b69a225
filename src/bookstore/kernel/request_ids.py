"""Request ids: the client's X-Request-Id when it is short and plain, else a new random one."""

from __future__ import annotations

import re
from random import getrandbits

HEADER = b"x-request-id"
MAX_LENGTH = 64
# Letters, digits and a few separators: an id goes into log lines and headers as it is.
_SAFE = re.compile(rb"[A-Za-z0-9._:-]{1,%d}" % MAX_LENGTH).fullmatch


def new() -> bytes:
    """A fresh id: 64 random bits in 16 hex digits.

    An id must be unique, not secret: the process's Mersenne Twister (seeded from os.urandom) gives that
    for a third of os.urandom's cost, which is a system call per request.
    """
    return b"%016x" % getrandbits(64)


def accepted(value: bytes | None) -> bytes:
    """`value` when it is a usable id (at most MAX_LENGTH safe characters), else a fresh one."""
    if value is not None and _SAFE(value) is not None:
        return value
    return b"%016x" % getrandbits(64)
