"""The edge's counters: requests, retries, failovers, refusals, DNS queries; as JSON and as Prometheus text.

Counting is a dictionary increment on the request path (cheaper than prometheus_client's labelled
children); a collector turns the counts into Prometheus metrics when /edge/metrics is read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from bookstore.edge.health import HealthChecker
from bookstore.edge.routing import Routing
from bookstore.kernel.tallies import Latency, counter_family

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class EdgeCounters:
    """Everything the edge counts."""

    def __init__(self) -> None:
        # (record, region or "-", status)
        self.requests: Counter[tuple[str, str, int]] = Counter()
        # (record, from region, to region)
        self.retries: Counter[tuple[str, str, str]] = Counter()
        # (record, from region, to region): served by another origin than the first choice
        self.failovers: Counter[tuple[str, str, str]] = Counter()
        # (record, reason): requests the edge could not serve from any region
        self.failed: Counter[tuple[str, str]] = Counter()
        # reason: bad input refused with a 4xx before any region saw it
        self.refused: Counter[str] = Counter()
        # (name, rcode)
        self.dns: Counter[tuple[str, str]] = Counter()
        self.latency: dict[str, Latency] = {}

    def served(self, record: str, region: str | None, status: int, seconds: float) -> None:
        self.requests[(record, region or "-", status)] += 1
        latency = self.latency.get(record)
        if latency is None:
            latency = self.latency[record] = Latency(LATENCY_BUCKETS_S)
        latency.observe(seconds)

    def json(self) -> dict[str, Any]:
        return {
            "requests": sum(self.requests.values()),
            "retries": sum(self.retries.values()),
            "failovers": sum(self.failovers.values()),
            "failed": sum(self.failed.values()),
            "refused": sum(self.refused.values()),
            "dnsQueries": sum(self.dns.values()),
            "byRecord": _by_record(self.requests),
            "retriesByPair": [
                {"record": r, "from": a, "to": b, "count": n} for (r, a, b), n in sorted(self.retries.items())
            ],
            "failoversByPair": [
                {"record": r, "from": a, "to": b, "count": n}
                for (r, a, b), n in sorted(self.failovers.items())
            ],
            "failedByReason": [
                {"record": r, "reason": why, "count": n} for (r, why), n in self.failed.items()
            ],
            "refusedByReason": dict(self.refused),
        }


def _by_record(requests: Counter[tuple[str, str, int]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (record, region, _), n in requests.items():
        per = out.setdefault(record, {})
        per[region] = per.get(region, 0) + n
    return out


class EdgeCollector(Collector):
    """Prometheus metrics from the counters, the targets' health and the records' answers."""

    def __init__(self, counters: EdgeCounters, checker: HealthChecker, routing: Routing) -> None:
        self.counters = counters
        self.checker = checker
        self.routing = routing

    def collect(self) -> Iterator[Any]:
        c = self.counters
        yield counter_family(
            "bookstore_edge_requests",
            "Requests served by the edge",
            ["record", "region", "status"],
            c.requests,
        )
        yield counter_family(
            "bookstore_edge_retries",
            "Requests retried on another region",
            ["record", "from", "to"],
            c.retries,
        )
        yield counter_family(
            "bookstore_edge_failovers",
            "Requests served by another region than the record's first choice after it failed",
            ["record", "from", "to"],
            c.failovers,
        )
        yield counter_family(
            "bookstore_edge_failed", "Requests no region could serve", ["record", "reason"], c.failed
        )
        refused = CounterMetricFamily("bookstore_edge_refused", "Bad requests refused", labels=["reason"])
        for why, n in c.refused.items():
            refused.add_metric([why], n)
        yield refused
        yield counter_family("bookstore_edge_dns_queries", "DNS queries", ["name", "rcode"], c.dns)
        latency = HistogramMetricFamily(
            "bookstore_edge_request_duration_seconds",
            "Time from request to answer at the edge",
            labels=["record"],
        )
        for record, h in c.latency.items():
            latency.add_metric([record], h.buckets(), h.total)
        yield latency
        healthy = GaugeMetricFamily(
            "bookstore_edge_target_healthy",
            "1 when the target's health check passes",
            labels=["target", "region"],
        )
        routable = GaugeMetricFamily(
            "bookstore_edge_target_routable",
            "1 when requests go to the target (healthy and breaker closed)",
            labels=["target", "region"],
        )
        changes = CounterMetricFamily(
            "bookstore_edge_target_changes", "Health state changes", labels=["target", "region"]
        )
        breaker = CounterMetricFamily(
            "bookstore_edge_breaker_opens", "Times the target's breaker opened", labels=["target", "region"]
        )
        for t in self.checker.targets.values():
            healthy.add_metric([t.id, t.region], 1.0 if t.healthy else 0.0)
            routable.add_metric([t.id, t.region], 1.0 if t.routable else 0.0)
            changes.add_metric([t.id, t.region], len(t.changes))
            breaker.add_metric([t.id, t.region], t.breaker_opens)
        yield from (healthy, routable, changes, breaker)
        answers = GaugeMetricFamily(
            "bookstore_edge_answer", "1 for the region each record answers now", labels=["record", "region"]
        )
        for record, answer in self.routing.answers.items():
            if answer is not None:
                answers.add_metric([record, answer], 1.0)
        yield answers
        record_failovers = CounterMetricFamily(
            "bookstore_edge_record_failovers", "Times a record's answer changed", labels=["record"]
        )
        for record, n in self.routing.record_failovers.items():
            record_failovers.add_metric([record], n)
        yield record_failovers


def prometheus_text(collector: EdgeCollector) -> bytes:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry)
