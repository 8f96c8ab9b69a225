"""The ticks on which the follow streams caught up send their lines: the same moments for every stream."""

from __future__ import annotations

import math


class Ticks:
    """Moments `period_s` apart on the event loop's clock; a stream that sent a line waits for the next.

    Each stream waiting `period_s` after its own line ran a timer of its own per line, and the streams
    of one region's followers woke apart, each to read and send alone. Waiting for the next tick (the
    feed's `ChangeFeed.wait(..., not_before=tick)`: one timer a tick) wakes every paced stream with
    something to send at once, at one log position (so they share a read: SharedReads). A stream still
    sends at most one line a tick, and never waits longer than `period_s` after a line.
    """

    def __init__(self, period_s: float) -> None:
        if not period_s > 0:
            raise ValueError(f"period_s must be positive, got {period_s!r}")
        self.period_s = period_s

    def after(self, t: float) -> float:
        """The first tick after the loop time `t`."""
        return (math.floor(t / self.period_s) + 1) * self.period_s
