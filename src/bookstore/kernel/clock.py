"""Clocks: the wall clock, a skewed clock for tests, and the hybrid logical clock that versions writes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from bookstore.ports import Clock

COUNTER_BITS = 16
COUNTER_MASK = (1 << COUNTER_BITS) - 1


class SystemClock:
    """The machine's wall clock in epoch milliseconds."""

    def now_ms(self) -> int:
        return int(time.time() * 1000)


class SkewedClock:
    """`base` shifted by `offset_ms`; the offset may be changed while in use to move the clock."""

    def __init__(self, base: Clock, offset_ms: int = 0) -> None:
        self.base = base
        self.offset_ms = offset_ms

    def now_ms(self) -> int:
        return self.base.now_ms() + self.offset_ms


class HybridLogicalClock:
    """Versions `(ms << 16) | counter` that never go backwards and order causally related writes.

    `now()` issues a version for a local write; `observe(v)` issues one that is later than a version
    received from elsewhere. Both are strictly greater than every version this clock issued or saw,
    whatever the wall clock does; the physical part follows the wall clock when it moves forward.

    `ceiling`, when set, may return a time (epoch ms) the physical part must not pass: replication sets it
    when this region's wall clock runs ahead of the other regions' (see Replicator.clock_ceiling), so that
    a fast clock does not stamp versions the others would hold back and that would beat later writes.
    """

    def __init__(self, clock: Clock | None = None, last: int = 0) -> None:
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.ceiling: Callable[[], int | None] | None = None
        self._last = last
        self._lock = threading.Lock()

    def _wall(self) -> int:
        wall = self.clock.now_ms()
        ceiling = self.ceiling() if self.ceiling is not None else None
        if ceiling is not None and ceiling < wall:
            wall = ceiling
        return wall << COUNTER_BITS

    @property
    def last(self) -> int:
        """The latest version issued or seen."""
        return self._last

    def now(self) -> int:
        """A new version for a local write."""
        wall = self._wall()
        with self._lock:
            # When the wall clock stalls or goes back, the counter (then the ms part) carries the order.
            version = max(self._last + 1, wall)
            self._last = version
            return version

    def observe(self, remote: int) -> int:
        """A new version later than both `remote` and everything this clock issued."""
        wall = self._wall()
        with self._lock:
            version = max(self._last + 1, remote + 1, wall)
            self._last = version
            return version

    def advance(self, version: int) -> None:
        """Record that `version` was issued elsewhere (another process on the same data) without ticking."""
        with self._lock:
            if version > self._last:
                self._last = version

    @staticmethod
    def physical_ms(version: int) -> int:
        """The wall-clock milliseconds part of a version."""
        return version >> COUNTER_BITS

    @staticmethod
    def counter(version: int) -> int:
        """The logical counter part of a version."""
        return version & COUNTER_MASK

    @staticmethod
    def pack(ms: int, counter: int = 0) -> int:
        """The version made of `ms` and `counter` (0 <= counter < 65536)."""
        if not 0 <= counter <= COUNTER_MASK:
            raise ValueError(f"HLC counter {counter} out of range 0..{COUNTER_MASK}")
        return (ms << COUNTER_BITS) | counter
