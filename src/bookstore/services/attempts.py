"""Counted attempts for throttles (sign-in, confirmation codes): per subject and window, over every region."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from bookstore.domain.errors import ConditionFailed, StorageError, TooManyRequests
from bookstore.ports import AttributeEquals, Clock, ItemAbsent, SortRange, Table

# A window that never ends: a confirmation code's wrong tries count for the whole life of the code.
FOREVER = 0
_SLOT_DIGITS = 15


@dataclass(frozen=True)
class Limit:
    """At most `most` attempts of one subject per window of `window_s` seconds (FOREVER: one window)."""

    what: str
    most: int
    window_s: int


class Attempts:
    """Counts attempts per subject in fixed windows, in a replicated table (tables.ATTEMPTS).

    Each region writes only its own row of a (subject, window), keyed (subject, "<window start>#<region>"),
    so regions' rows never conflict and a count is the sum of the rows that have arrived: attempts made
    in every region count everywhere once replicated. Within the replication lag (or a partition) each
    region can let through at most the limit on its own.
    """

    def __init__(self, table: Table, *, region: str, clock: Clock) -> None:
        self._table = table
        self._region = region
        self._clock = clock
        # Writes of this region's rows are read-modify-write; the lock keeps this process's in order.
        self._lock = threading.Lock()

    def check(self, subject: str, limit: Limit) -> None:
        """Raise TooManyRequests, with the seconds until the window ends, when `subject` is at its limit."""
        if self.count(subject, limit) >= limit.most:
            raise TooManyRequests(
                f"too many {limit.what}; try again later", self._retry_after_s(limit, self._clock.now_ms())
            )

    def count(self, subject: str, limit: Limit) -> int:
        """Attempts of `subject` in the current window, summed over every region heard of."""
        window = self._window(limit, self._clock.now_ms())
        page = self._table.query(subject, sort_range=SortRange(f"{window}#", f"{window}#~"), limit=1000)
        return sum(int(item.get("count", 0)) for item in page.items)

    def record(self, subject: str, limit: Limit) -> int:
        """Count one attempt of `subject` (in this region's row); returns the count over every region."""
        now = self._clock.now_ms()
        key = {"subject": subject, "slot": f"{self._window(limit, now)}#{self._region}"}
        with self._lock:
            for _ in range(5):
                row = self._table.get(key)
                count = 1 if row is None else int(row.get("count", 0)) + 1
                try:
                    self._table.put(
                        {**key, "count": count, "lastMs": now},
                        condition=ItemAbsent() if row is None else AttributeEquals("count", count - 1),
                    )
                    break
                except ConditionFailed:
                    continue  # another process of this region counted meanwhile: count again
            else:
                raise StorageError(f"could not count an attempt of {subject}: the row kept changing")
        return self.count(subject, limit)

    @staticmethod
    def _window(limit: Limit, now_ms: int) -> str:
        if limit.window_s == FOREVER:
            return "0".zfill(_SLOT_DIGITS)
        size = limit.window_s * 1000
        return str(now_ms - now_ms % size).zfill(_SLOT_DIGITS)

    @staticmethod
    def _retry_after_s(limit: Limit, now_ms: int) -> int:
        if limit.window_s == FOREVER:
            return 86_400
        size = limit.window_s * 1000
        return -(-(size - now_ms % size) // 1000)
