"""Counted attempts for throttles (sign-in, confirmation codes): per subject and window, over every region."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from bookstore.domain.errors import ConditionFailed, StorageError, TooManyRequests
from bookstore.ports import AttributeEquals, Clock, ItemAbsent, Key, SortRange, Table

# A window that never ends: a confirmation code's wrong tries count for the whole life of the code.
FOREVER = 0
_SLOT_DIGITS = 15
# Each attempt counted removes up to this many expired rows of this region, so expired rows never pile
# up faster than they go, whatever the rate of attempts, and no background task is needed.
SWEEP_PER_ATTEMPT = 2
# The index that finds a region's expired rows: partition `region`, sort `expires` (a zero-padded string,
# as every adapter orders strings, including DynamoDB with its string key attributes).
EXPIRY_INDEX = "expiry-index"
# Rows written before rows carried their expiry are given one this long after their last attempt: the
# longest any limit kept its rows then (a confirmation code's tries, for the code's 24 hours).
LEGACY_KEEP_S = 24 * 3600


@dataclass(frozen=True)
class Limit:
    """At most `most` attempts of one subject per window of `window_s` seconds (FOREVER: one window).

    A row of a window is removed once the window has ended; a row of a FOREVER window `keep_s` seconds
    after its last attempt (it must outlive what it protects, e.g. a confirmation code's lifetime).
    """

    what: str
    most: int
    window_s: int
    keep_s: int = 0

    def __post_init__(self) -> None:
        if self.window_s == FOREVER and self.keep_s <= 0:
            raise ValueError(f"{self.what}: a FOREVER window needs keep_s, how long its rows are kept")


@dataclass(frozen=True)
class Reservation:
    """Attempts counted ahead by `Attempts.reserve`: the keys of this region's rows that were incremented."""

    rows: tuple[Key, ...]


class Attempts:
    """Counts attempts per subject in fixed windows, in a replicated table (tables.ATTEMPTS).

    Each region writes only its own row of a (subject, window), keyed (subject, "<window start>#<region>"),
    so regions' rows never conflict and a count is the sum of the rows that have arrived: attempts made
    in every region count everywhere once replicated. Within the replication lag (or a partition) each
    region can let through at most the limit on its own.

    Expired rows are removed only by the region that wrote them (found through EXPIRY_INDEX), with a
    delete conditional on the expiry it saw: the delete is an ordinary replicated write (a tombstone that
    replication trims), no region ever writes that key again, so no replica can bring the row back.
    Rows of a region that never runs again stay in the others, ignored by counts once expired.
    """

    def __init__(self, table: Table, *, region: str, clock: Clock) -> None:
        self._table = table
        self._region = region
        self._clock = clock
        # Writes of this region's rows are read-modify-write; the lock keeps this process's in order.
        self._lock = threading.Lock()
        self._legacy_adopted = False

    def reserve(self, throttled: Sequence[tuple[str, Limit]]) -> Reservation:
        """Count one attempt of each (subject, limit) BEFORE the work it stands for is done.

        When any subject goes over its limit, every count made here is taken back and TooManyRequests
        is raised with the longest wait: so N concurrent attempts let through at most the limit, not the
        limit plus the number in flight. `release` takes the counts back for an attempt that turned out
        not to be a failure.
        """
        rows: list[Key] = []
        over: list[Limit] = []
        for subject, limit in throttled:
            key, total = self._add(subject, limit)
            rows.append(key)
            if total > limit.most:
                over.append(limit)
        reservation = Reservation(tuple(rows))
        if over:
            self.release(reservation)
            now = self._clock.now_ms()
            worst = max(over, key=lambda limit: self._retry_after_s(limit, now))
            raise TooManyRequests(f"too many {worst.what}; try again later", self._retry_after_s(worst, now))
        return reservation

    def release(self, reservation: Reservation) -> None:
        """Take back the attempts of `reservation` (each row is the one counted, whatever the time now)."""
        for key in reservation.rows:
            self._change(key, -1, expires=None)

    def count(self, subject: str, limit: Limit) -> int:
        """Attempts of `subject` in the current window, summed over every region heard of."""
        return self._count(subject, limit, own=None)

    def _count(self, subject: str, limit: Limit, *, own: int | None) -> int:
        """The count over every region; `own` given: this region's row counts as `own` (its value as
        this attempt wrote it), so that each of concurrent attempts sees its own place in the order."""
        now = self._clock.now_ms()
        window = self._window(limit, now)
        page = self._table.query(subject, sort_range=SortRange(f"{window}#", f"{window}#~"), limit=1000)
        mine = f"{window}#{self._region}"
        # A row past its expiry counts no more, even before the region that wrote it has removed it.
        others = sum(
            int(item.get("count", 0))
            for item in page.items
            if (own is None or item.get("slot") != mine)
            and (not isinstance(item.get("expires"), str) or item["expires"] > _padded(now))
        )
        return others + (own or 0)

    def record(self, subject: str, limit: Limit) -> int:
        """Count one attempt of `subject` (in this region's row); returns the count over every region."""
        return self._add(subject, limit)[1]

    def sweep(self, most: int = 100) -> int:
        """Remove up to `most` expired rows written by this region; returns how many went."""
        if not self._legacy_adopted:
            self._adopt_legacy_rows()
        now = _padded(self._clock.now_ms())
        page = self._table.query(
            self._region, index=EXPIRY_INDEX, sort_range=SortRange(None, now), limit=most
        )
        removed = 0
        for item in page.items:
            key = {"subject": item["subject"], "slot": item["slot"]}
            # ConditionFailed: counted again meanwhile (a FOREVER row's expiry moved on), so it stays.
            with contextlib.suppress(ConditionFailed):
                self._table.delete(key, condition=AttributeEquals("expires", item["expires"]))
                removed += 1
        return removed

    def _adopt_legacy_rows(self) -> None:
        """Give this region's rows of an older version (without `region` and `expires`) an expiry, once
        per process, so that the sweep finds them too; a scan, while the table holds only bounded rows."""
        cursor: str | None = None
        while True:
            page = self._table.scan(limit=500, cursor=cursor)
            for item in page.items:
                if "expires" in item or not str(item.get("slot", "")).endswith(f"#{self._region}"):
                    continue
                last = item.get("lastMs")
                expires = _padded((last if isinstance(last, int) else 0) + LEGACY_KEEP_S * 1000)
                # ConditionFailed: counted again meanwhile, and that write gave it an expiry.
                with contextlib.suppress(ConditionFailed):
                    self._table.update(
                        {"subject": item["subject"], "slot": item["slot"]},
                        {"region": self._region, "expires": expires},
                        condition=AttributeEquals("count", item.get("count")),
                    )
            cursor = page.cursor
            if cursor is None:
                break
        self._legacy_adopted = True

    def _add(self, subject: str, limit: Limit) -> tuple[Key, int]:
        now = self._clock.now_ms()
        key = {"subject": subject, "slot": f"{self._window(limit, now)}#{self._region}"}
        written = self._change(key, +1, expires=self._expiry(limit, now))
        self.sweep(SWEEP_PER_ATTEMPT)
        # Not the row as read again: by then concurrent attempts may have counted too, and each of them
        # would see the others' counts and all be refused, letting fewer than `most` through.
        return key, self._count(subject, limit, own=written)

    def _change(self, key: Key, delta: int, *, expires: str | None) -> int:
        """Add `delta` to this region's row `key` (creating it when adding); `expires` None keeps it.

        Returns the row's count as this change wrote it (0 when there was nothing left to take back)."""
        now = self._clock.now_ms()
        with self._lock:
            for _ in range(5):
                row = self._table.get(key)
                if row is None and delta < 0:
                    return 0  # removed meanwhile (expired): nothing left to take back
                count = max(0, (0 if row is None else int(row.get("count", 0))) + delta)
                item = {**key, "count": count, "lastMs": now, "region": self._region}
                kept = expires if expires is not None else (None if row is None else row.get("expires"))
                if isinstance(kept, str):
                    item["expires"] = kept
                try:
                    self._table.put(
                        item,
                        condition=ItemAbsent() if row is None else AttributeEquals("count", row.get("count")),
                    )
                    return count
                except ConditionFailed:
                    continue  # another process of this region counted (or swept) meanwhile: again
            raise StorageError(f"could not count an attempt of {key['subject']}: the row kept changing")

    @staticmethod
    def _expiry(limit: Limit, now_ms: int) -> str:
        if limit.window_s == FOREVER:
            return _padded(now_ms + limit.keep_s * 1000)
        size = limit.window_s * 1000
        return _padded(now_ms - now_ms % size + size)

    @staticmethod
    def _window(limit: Limit, now_ms: int) -> str:
        if limit.window_s == FOREVER:
            return "0".zfill(_SLOT_DIGITS)
        size = limit.window_s * 1000
        return _padded(now_ms - now_ms % size)

    @staticmethod
    def _retry_after_s(limit: Limit, now_ms: int) -> int:
        if limit.window_s == FOREVER:
            return limit.keep_s
        size = limit.window_s * 1000
        return -(-(size - now_ms % size) // 1000)


def _padded(ms: int) -> str:
    return str(ms).zfill(_SLOT_DIGITS)
