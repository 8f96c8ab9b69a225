"""Version ids of the local object store: 26 Crockford base-32 characters of (ms, counter, random).

They sort by time, so the newest version of a key is the one with the greatest id, and a version id
read back from S3 (or from another region) serves as its sort position when it is one of ours.
"""

from __future__ import annotations

import os
import secrets
import threading

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CROCKFORD_VALUE = {c: i for i, c in enumerate(_CROCKFORD)}


class VersionIds:
    """Issues version ids that rise with the clock, and within one millisecond with a counter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ms = 0
        self._counter = 0

    def new(self, now_ms: int) -> str:
        with self._lock:
            if now_ms > self._ms:
                self._ms, self._counter = now_ms, 0
            else:
                self._counter += 1
                if self._counter > 0xFFFF:
                    self._ms, self._counter = self._ms + 1, 0
            value = (self._ms << 80) | (self._counter << 64) | int.from_bytes(os.urandom(8))
        return _encode(value)

    @staticmethod
    def after(sort_id: str) -> str:
        """A fresh id that sorts right after `sort_id` (same time, next counter)."""
        value = _decode(sort_id)
        return _encode(((value >> 64) + 1) << 64 | secrets.randbits(64))

    @staticmethod
    def at(ms: int) -> str:
        return _encode((ms << 80) | secrets.randbits(64))

    @staticmethod
    def parse(version_id: str) -> str | None:
        """`version_id` when it is one of ours (usable as a sort id), else None."""
        if len(version_id) == 26 and all(c in _CROCKFORD_VALUE for c in version_id):
            return version_id
        return None


# Every pair of characters, so that an id is encoded ten bits at a time: 13 look-ups, not 26 (each PUT
# makes an id).
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
_SHIFTS = tuple(range(120, -1, -10))


def _encode(value: int) -> str:
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])


def _decode(text: str) -> int:
    value = 0
    for c in text:
        value = value * 32 + _CROCKFORD_VALUE[c]
    return value
