"""The ticks on which the follow streams caught up send their lines: one timer a tick for every stream."""

from __future__ import annotations

import asyncio
import math


class Ticks:
    """Moments `period_s` apart on the event loop's clock; a stream that sent a line waits for the next.

    Each stream waiting `period_s` after its own line ran a timer of its own per line, and the streams
    of one region's followers woke apart, each to read and send alone. Waiting for the next tick wakes
    every paced stream at once, on one timer, at one log position (so they share a read: SharedReads).
    A stream still sends at most one line a tick, and never waits longer than `period_s` after a line.
    """

    def __init__(self, period_s: float) -> None:
        if not period_s > 0:
            raise ValueError(f"period_s must be positive, got {period_s!r}")
        self.period_s = period_s
        # The streams waiting for each tick (by its number), woken by one timer.
        self._waiting: dict[int, list[asyncio.Future[None]]] = {}

    def after(self, t: float) -> float:
        """The first tick after the loop time `t`."""
        return (math.floor(t / self.period_s) + 1) * self.period_s

    async def wait(self, tick: float) -> None:
        """Until the loop's clock reaches `tick` (one `after` returned): at once when it did."""
        loop = asyncio.get_running_loop()
        if loop.time() >= tick:
            return
        number = round(tick / self.period_s)
        waiting = self._waiting.get(number)
        if waiting is None:
            waiting = self._waiting[number] = []
            loop.call_at(tick, self._fire, number)
        # A future each: a stream that goes away (cancelled) cancels its own, not the others'.
        waiter = loop.create_future()
        waiting.append(waiter)
        await waiter

    def _fire(self, number: int) -> None:
        for waiter in self._waiting.pop(number, ()):
            if not waiter.done():
                waiter.set_result(None)
