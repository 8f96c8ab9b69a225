"""Ticks: every paced follow stream waits for the same moments (the feed wakes them, kernel/stream.py)."""

from __future__ import annotations

import pytest

from bookstore.replication.tables.pacing import Ticks

def test_the_next_tick_is_the_first_multiple_of_the_period_after_a_time() -> None:
    ticks = Ticks(0.004)
    assert ticks.after(0.0) == pytest.approx(0.004)
    assert ticks.after(0.0039) == pytest.approx(0.004)
    assert ticks.after(0.004) == pytest.approx(0.008)
    assert ticks.after(10.0061) == pytest.approx(10.008)
    with pytest.raises(ValueError):
        Ticks(0)
