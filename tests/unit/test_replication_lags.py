"""Replication lags of a whole batch at once: the histogram and the window see what one at a time gives."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Histogram

from bookstore.kernel.clock import COUNTER_BITS, HybridLogicalClock
from bookstore.replication.tables.model import LogEntry, within_bound
from bookstore.replication.tables.replicator import LAG_BUCKETS, LagWindow, observe_all


def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels.get("le", "")): sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if not sample.name.endswith("_created")
    }


def test_a_batch_observed_at_once_counts_as_each_observed_alone() -> None:
    rng = random.Random(16)
    # Lags on and around every bound (where one comparison decides the bucket), and far past them.
    values = [b for b in LAG_BUCKETS] + [b + 0.001 for b in LAG_BUCKETS] + [0.0, 0.0, 31.5, 600.0]
    values += [rng.randrange(0, 40_000) / 1000 for _ in range(500)]
    one, many = CollectorRegistry(), CollectorRegistry()
    alone = Histogram("lag_seconds", "lag", ["source"], registry=one, buckets=LAG_BUCKETS)
    batched = Histogram("lag_seconds", "lag", ["source"], registry=many, buckets=LAG_BUCKETS)
    for value in values:
        alone.labels("eu-west-1").observe(value)
    observe_all(batched.labels("eu-west-1"), sorted(values[:300]))
    observe_all(batched.labels("eu-west-1"), sorted(values[300:]))
    observe_all(batched.labels("eu-west-1"), [])
    expected, got = samples(one), samples(many)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value), name


def test_the_window_keeps_batches_and_names_the_newest_lag_of_the_last() -> None:
    window = LagWindow(window_ms=60_000)
    window.add_all("eu-west-1", 1_000_000, [900, 500, 100])
    window.add("eu-west-1", 1_000_100, 40)
    window.add_all("eu-west-1", 1_000_200, [])  # nothing applied: nothing changes
    summary = window.summary(1_000_200)["eu-west-1"]
    assert summary == {"p50Ms": 100.0, "p99Ms": 900.0, "count": 4.0, "lastMs": 40.0}
    # A minute later the first batch is out of the window, and then the second.
    assert window.summary(1_060_050)["eu-west-1"]["count"] == 1.0
    window.add_all("eu-west-1", 1_060_150, [7, 3])
    assert list(window.samples["eu-west-1"]) == [(1_060_150, [7, 3])]


def test_a_batch_is_held_back_from_its_first_change_too_far_ahead() -> None:
    now, bound = 1_700_000_000_000, 500

    def at(ms: int, counter: int = 0) -> LogEntry:
        version = (HybridLogicalClock.pack(ms) + counter, "eu-west-1")
        return LogEntry(1, "books", "INSERT", {"id": "b"}, None, {"id": "b"}, ms, "eu-west-1", version, None)

    on_bound = [at(now - 60_000), at(now + bound, counter=(1 << COUNTER_BITS) - 1), at(now)]
    assert within_bound(on_bound, now, bound) == (on_bound, None)
    ahead = at(now + bound + 1)
    assert within_bound([*on_bound, ahead, at(now)], now, bound) == (on_bound, ahead)
    assert within_bound([ahead, *on_bound], now, bound) == ([], ahead)
    assert within_bound([], now, bound) == ([], None)
