"""Counts and durations kept in plain Python objects, made into Prometheus families when scraped."""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import TypeVar

from prometheus_client.core import CounterMetricFamily

# A counter's key: its label values, in the order of its labels.
Labels = TypeVar("Labels", bound=tuple[object, ...])


class Latency:
    """Durations (seconds) in fixed buckets: an increment per observation, no lock, no value objects.

    prometheus_client's Histogram takes a lock and walks its buckets per observation; a process that
    observes on one thread (its event loop) and is scraped on the same one needs neither.
    """

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def buckets(self) -> list[tuple[str, float]]:
        """(le, cumulative count) pairs, the last one "+Inf", as HistogramMetricFamily.add_metric takes."""
        cumulative, out = 0, []
        for bound, n in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            cumulative += n
            out.append((bound, float(cumulative)))
        return out


def counter_family(
    name: str, documentation: str, labels: Sequence[str], counts: Mapping[Labels, int]
) -> CounterMetricFamily:
    """The Counter `name` (exposed as name_total) with one sample per key of `counts`, its label values."""
    family = CounterMetricFamily(name, documentation, labels=list(labels))
    for key, n in counts.items():
        family.add_metric([str(part) for part in key], n)
    return family
