"""Prometheus figures of one region's blog replication."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from bookstore.replication.tables.replicator import LAG_BUCKETS


class BlogMetrics:
    """Prometheus figures of one region's blog replication."""

    def __init__(self, registry: CollectorRegistry | None, region: str) -> None:
        self.region = region
        self.lag = Histogram(
            "bookstore_blog_replication_lag_seconds",
            "Apply time on the replica minus the write's time on the primary",
            ["source", "destination"],
            registry=registry,
            buckets=LAG_BUCKETS,
        )
        self.applied = Counter(
            "bookstore_blog_replication_applied", "Change records applied from the primary", registry=registry
        )
        self.epoch_changes = Counter(
            "bookstore_blog_epoch_changes",
            "Epoch changes of this region: promoted, adopted (met a higher epoch), resynced",
            ["kind"],
            registry=registry,
        )
        self.behind = Gauge(
            "bookstore_blog_replica_lag_entries",
            "Records of the primary's log not yet applied here (lsn difference)",
            registry=registry,
        )
        self.behind_seconds = Gauge(
            "bookstore_blog_replica_behind_seconds",
            "Age of the oldest write of the primary not yet applied here (0 when caught up)",
            registry=registry,
        )
        self.epoch = Gauge("bookstore_blog_epoch", "The epoch this region knows", registry=registry)
        self.read_only = Gauge(
            "bookstore_blog_read_only", "1 when this region refuses writes", registry=registry
        )
        self.position = Gauge(
            "bookstore_blog_applied_lsn", "The replica's position in the log", registry=registry
        )
        # A Counter: diverged records are kept for good, so their number only goes up.
        self.diverged = FunctionCounter(
            "bookstore_blog_diverged_writes",
            "Records kept aside as diverged in this region",
            registry=registry,
        )


class FunctionCounter(Collector):
    """A Counter whose value a function gives when scraped (a prometheus_client Counter has none)."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry | None) -> None:
        self.name = name
        self.documentation = documentation
        self._function: Callable[[], float] | None = None
        if registry is not None:
            registry.register(self)

    def set_function(self, function: Callable[[], float]) -> None:
        self._function = function

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation)
        if self._function is not None:
            family.add_metric([], self._function())
        yield family
