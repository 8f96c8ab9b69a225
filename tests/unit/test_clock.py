"""Properties of the hybrid logical clock, and the wall and skewed clocks it reads."""

from __future__ import annotations

import itertools
import threading
import time

from hypothesis import given
from hypothesis import strategies as st

from bookstore.kernel.clock import COUNTER_MASK, HybridLogicalClock, SkewedClock, SystemClock

# Wall-clock readings around now, free to jump backwards and forwards like a badly synced machine.
READINGS = st.lists(st.integers(1_700_000_000_000, 1_700_000_100_000), min_size=1, max_size=200)


class ScriptedClock:
    """A clock that returns the given readings in turn (then keeps the last)."""

    def __init__(self, readings: list[int]) -> None:
        self.readings = list(readings)
        self.current = self.readings[0]

    def now_ms(self) -> int:
        if self.readings:
            self.current = self.readings.pop(0)
        return self.current


@given(READINGS)
def test_now_strictly_increases_whatever_the_wall_clock_does(readings: list[int]) -> None:
    hlc = HybridLogicalClock(ScriptedClock(readings))
    versions = [hlc.now() for _ in readings]
    assert all(a < b for a, b in itertools.pairwise(versions))
    # The physical part is the latest wall-clock time seen: never behind it, never invented.
    for i, version in enumerate(versions):
        assert HybridLogicalClock.physical_ms(version) == max(readings[: i + 1])


@given(READINGS, st.lists(st.integers(0, 2**60), max_size=50))
def test_observe_returns_a_version_after_the_remote_and_everything_before(
    readings: list[int], remotes: list[int]
) -> None:
    hlc = HybridLogicalClock(ScriptedClock(readings))
    issued = [hlc.now()]
    for remote in remotes:
        observed = hlc.observe(remote)
        assert observed > remote and observed > max(issued)
        issued.append(observed)
        following = hlc.now()
        assert following > observed
        issued.append(following)


@given(st.integers(0, 2**47), st.integers(0, COUNTER_MASK))
def test_physical_ms_and_counter_round_trip(ms: int, counter: int) -> None:
    version = HybridLogicalClock.pack(ms, counter)
    assert HybridLogicalClock.physical_ms(version) == ms
    assert HybridLogicalClock.counter(version) == counter
    assert HybridLogicalClock.pack(ms + 1, 0) > version


def test_the_physical_part_follows_the_wall_clock_forward() -> None:
    clock = ScriptedClock([1000, 1000, 1000, 2000])
    hlc = HybridLogicalClock(clock)
    assert [hlc.now() for _ in range(4)] == [
        HybridLogicalClock.pack(1000, 0),
        HybridLogicalClock.pack(1000, 1),
        HybridLogicalClock.pack(1000, 2),
        HybridLogicalClock.pack(2000, 0),
    ]


def test_advance_moves_the_clock_past_a_version_issued_elsewhere() -> None:
    hlc = HybridLogicalClock(ScriptedClock([1000]))
    elsewhere = HybridLogicalClock.pack(5000, 7)
    hlc.advance(elsewhere)
    assert hlc.last == elsewhere
    assert hlc.now() == elsewhere + 1
    hlc.advance(HybridLogicalClock.pack(10, 0))
    assert hlc.last == elsewhere + 1


def test_versions_are_unique_across_threads() -> None:
    hlc = HybridLogicalClock(ScriptedClock([1000]))
    results: list[list[int]] = [[] for _ in range(4)]

    def issue(out: list[int]) -> None:
        for _ in range(2000):
            out.append(hlc.now())

    threads = [threading.Thread(target=issue, args=(out,)) for out in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [v for out in results for v in out]
    assert len(set(everything)) == 8000
    assert all(out == sorted(out) for out in results)


def test_system_and_skewed_clocks() -> None:
    before = int(time.time() * 1000)
    now = SystemClock().now_ms()
    assert before <= now <= int(time.time() * 1000)
    fixed = ScriptedClock([5000])
    skewed = SkewedClock(fixed, -1500)
    assert skewed.now_ms() == 3500
    skewed.offset_ms = 250
    assert skewed.now_ms() == 5250


def test_a_ceiling_holds_the_physical_part_back_and_versions_still_go_forward() -> None:
    wall = SkewedClock(ScriptedClock([10_000] * 6))
    hlc = HybridLogicalClock(wall)
    hlc.ceiling = lambda: 4_000  # the others' clocks: this one runs 6 s ahead of them
    first = hlc.now()
    assert HybridLogicalClock.physical_ms(first) == 4_000
    assert hlc.observe(HybridLogicalClock.pack(3_000)) > first
    assert HybridLogicalClock.physical_ms(hlc.now()) == 4_000
    hlc.ceiling = lambda: None  # nothing to correct: the wall clock again
    assert HybridLogicalClock.physical_ms(hlc.now()) == 10_000
