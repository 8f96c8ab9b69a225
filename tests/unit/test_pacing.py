"""Ticks: every paced follow stream waits for the same moments, woken together by one timer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bookstore.replication.tables.pacing import Ticks

PERIOD_S = 0.02


def test_the_next_tick_is_the_first_multiple_of_the_period_after_a_time() -> None:
    ticks = Ticks(0.004)
    assert ticks.after(0.0) == pytest.approx(0.004)
    assert ticks.after(0.0039) == pytest.approx(0.004)
    assert ticks.after(0.004) == pytest.approx(0.008)
    assert ticks.after(10.0061) == pytest.approx(10.008)
    with pytest.raises(ValueError):
        Ticks(0)


def test_streams_waiting_for_one_tick_wake_together_at_it_on_one_timer() -> None:
    async def run() -> tuple[list[float], float, int]:
        loop = asyncio.get_running_loop()
        timers = 0
        call_at = loop.call_at

        def counted(when: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
            nonlocal timers
            timers += 1
            return call_at(when, callback, *args)

        setattr(loop, "call_at", counted)  # noqa: B010 (mypy refuses assigning a method)
        ticks = Ticks(PERIOD_S)
        tick = ticks.after(loop.time())
        woke: list[float] = []

        async def stream() -> None:
            await ticks.wait(tick)
            woke.append(loop.time())

        await asyncio.gather(*(stream() for _ in range(4)))
        return woke, tick, timers

    woke, tick, timers = asyncio.run(run())
    assert len(woke) == 4 and min(woke) >= tick and max(woke) - min(woke) < PERIOD_S
    assert timers == 1


def test_a_stream_that_goes_away_leaves_the_others_waiting_and_a_past_tick_waits_for_nothing() -> None:
    async def run() -> list[str]:
        loop = asyncio.get_running_loop()
        ticks = Ticks(PERIOD_S)
        tick = ticks.after(loop.time())
        woke: list[str] = []

        async def stream(name: str) -> None:
            await ticks.wait(tick)
            woke.append(name)

        gone = asyncio.create_task(stream("gone"))
        kept = asyncio.create_task(stream("kept"))
        await asyncio.sleep(0)
        gone.cancel()
        await kept
        with pytest.raises(asyncio.CancelledError):
            await gone
        started = loop.time()
        await ticks.wait(tick)  # passed: returns at once
        assert loop.time() - started < PERIOD_S
        return woke

    assert asyncio.run(run()) == ["kept"]
