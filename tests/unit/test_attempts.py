"""Attempts: reservations, expiry and the removal of expired rows (services/attempts.py)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from bookstore.domain.errors import TooManyRequests
from bookstore.services.attempts import FOREVER, Attempts, Limit
from bookstore.storage.memory.tables import MemoryTable
from bookstore.tables import ATTEMPTS

WINDOWED = Limit("tries", 3, 60)
KEPT = Limit("codes", 3, FOREVER, keep_s=100)


@dataclass
class ManualClock:
    ms: int = 1_000_000

    def now_ms(self) -> int:
        return self.ms


def test_a_reservation_over_any_limit_is_taken_back_whole() -> None:
    clock = ManualClock()
    attempts = Attempts(MemoryTable(ATTEMPTS), region="eu", clock=clock)
    loose = Limit("loose", 10, 60)
    for _ in range(WINDOWED.most):
        attempts.reserve([("a", WINDOWED), ("b", loose)])
    with pytest.raises(TooManyRequests) as refused:
        attempts.reserve([("a", WINDOWED), ("b", loose)])
    assert refused.value.retry_after_s == 60 - (clock.ms % 60_000) // 1000
    # The refused attempt counts under neither subject.
    assert attempts.count("a", WINDOWED) == WINDOWED.most and attempts.count("b", loose) == WINDOWED.most
    released = attempts.reserve([("b", loose)])
    attempts.release(released)
    assert attempts.count("b", loose) == WINDOWED.most


class CountsTogether(MemoryTable):
    """A table on which two attempts count only once both have written their row, and neither takes its
    attempt back before both have counted."""

    def __init__(self) -> None:
        super().__init__(ATTEMPTS)
        self.both_written: threading.Barrier | None = None

    def query(self, partition: Any, **kwargs: Any) -> Any:
        barrier = self.both_written if kwargs.get("index") is None else None  # a count, not a sweep
        if barrier is not None:
            barrier.wait()
        page = super().query(partition, **kwargs)
        if barrier is not None:
            barrier.wait()
        return page


def test_two_attempts_for_the_last_place_let_exactly_one_through() -> None:
    """Regression: each read the row after both had counted, saw the limit passed, and both were refused,
    so concurrent wrong codes voided a code after fewer than CODE_TRIES.most tries."""
    table = CountsTogether()
    attempts = Attempts(table, region="eu", clock=ManualClock())
    for _ in range(WINDOWED.most - 1):
        attempts.record("a", WINDOWED)
    table.both_written = threading.Barrier(2, timeout=10)

    def attempt(_: int) -> str:
        try:
            attempts.reserve([("a", WINDOWED)])
            return "through"
        except TooManyRequests:
            return "refused"

    with ThreadPoolExecutor(max_workers=2) as pool:
        assert sorted(pool.map(attempt, range(2))) == ["refused", "through"]
    table.both_written = None
    assert attempts.count("a", WINDOWED) == WINDOWED.most


def test_a_region_removes_only_its_own_expired_rows_and_expired_rows_count_nowhere() -> None:
    clock, table = ManualClock(), MemoryTable(ATTEMPTS)
    # One table seen by two regions: as when each one's rows have replicated to the other.
    eu, ap = Attempts(table, region="eu", clock=clock), Attempts(table, region="ap", clock=clock)
    eu.record("x", WINDOWED)
    ap.record("x", WINDOWED)
    assert eu.count("x", WINDOWED) == 2
    clock.ms += 60_000
    assert eu.count("x", WINDOWED) == 0
    assert eu.sweep() == 1
    assert [item["slot"].split("#")[1] for item in table.scan().items] == ["ap"]
    assert ap.sweep() == 1 and table.scan().items == []


def test_a_kept_row_counted_again_lives_on_from_its_last_attempt() -> None:
    clock, table = ManualClock(), MemoryTable(ATTEMPTS)
    attempts = Attempts(table, region="eu", clock=clock)
    attempts.record("code", KEPT)
    clock.ms += 90_000
    assert attempts.record("code", KEPT) == 2
    clock.ms += 90_000  # past the first attempt's keep, not the second's
    assert attempts.sweep() == 0 and attempts.count("code", KEPT) == 2
    clock.ms += 10_000
    assert attempts.count("code", KEPT) == 0
    assert attempts.sweep() == 1 and table.scan().items == []


def test_a_forever_window_needs_to_say_how_long_its_rows_are_kept() -> None:
    with pytest.raises(ValueError, match="keep_s"):
        Limit("codes", 5, FOREVER)


def test_rows_of_the_older_version_are_given_an_expiry_and_removed_in_time() -> None:
    clock, table = ManualClock(), MemoryTable(ATTEMPTS)
    # As the version before expiries wrote them: no `region`, no `expires`.
    for subject, region in (("signin:old@example.com", "eu"), ("signin:old@example.com", "ap")):
        table.put({"subject": subject, "slot": f"{'0' * 15}#{region}", "count": 4, "lastMs": clock.ms})
    attempts = Attempts(table, region="eu", clock=clock)
    attempts.record("new", WINDOWED)
    clock.ms += 24 * 3600 * 1000
    assert attempts.sweep() == 2  # the old row of this region, and the new one
    # Another region's old row is that region's to remove.
    assert [item["slot"] for item in table.scan().items] == [f"{'0' * 15}#ap"]
