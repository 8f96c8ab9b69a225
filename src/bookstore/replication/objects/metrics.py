"""Prometheus figures of one region's object replication (the replicator's pending, latency, failures)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class ObjectReplicationMetrics:
    """Prometheus figures of one region's object replication; registered into the region's registry."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.pending = Gauge(
            "bookstore_object_replication_pending_operations",
            "Versions waiting to be replicated (PENDING at this source)",
            registry=None,
        )
        self.pending_bytes = Gauge(
            "bookstore_object_replication_pending_bytes",
            "Bytes of the versions waiting to be replicated",
            registry=None,
        )
        self.latency = Histogram(
            "bookstore_object_replication_latency_seconds",
            "Time from a version's write at the source to its copy acknowledged by the destination",
            ["source", "destination"],
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self.completed = Counter(
            "bookstore_object_replication_completed",
            "Versions copied to a destination",
            ["destination"],
            registry=None,
        )
        self.bytes = Counter(
            "bookstore_object_replication_bytes",
            "Bytes copied to a destination",
            ["destination"],
            registry=None,
        )
        self.attempt_failures = Counter(
            "bookstore_object_replication_attempt_failures",
            "Copy attempts that failed, by destination and reason (unreachable, refused:<S3 code> ...)",
            ["destination", "reason"],
            registry=None,
        )
        self.failed = Counter(
            "bookstore_object_replication_failed",
            "Versions marked FAILED, by destination and reason",
            ["destination", "reason"],
            registry=None,
        )

    def register(self, registry: CollectorRegistry) -> None:
        for metric in (
            self.pending,
            self.pending_bytes,
            self.latency,
            self.completed,
            self.bytes,
            self.attempt_failures,
            self.failed,
        ):
            registry.register(metric)
