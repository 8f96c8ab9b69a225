"""The shipped Prometheus scrape file and Grafana dashboard name metrics the processes really export."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"\bbookstore_[a-z_]+")


def exported() -> set[str]:
    """Every metric name the sources declare, as Prometheus shows it (counters get `_total`)."""
    names = set()
    for path in (ROOT / "src" / "bookstore").rglob("*.py"):
        text = path.read_text()
        # kernel/tallies.counter_family(name, ...) makes a CounterMetricFamily too.
        for match in re.finditer(
            r"(Counter|Gauge|Histogram|counter_family)(MetricFamily)?\(\s*\"(bookstore_[a-z_]+)\"", text
        ):
            kind, name = match.group(1), match.group(3)
            kind = "Counter" if kind == "counter_family" else kind
            names.add(f"{name}_total" if kind == "Counter" else name)
            if kind == "Histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def test_the_dashboard_reads_only_exported_metrics() -> None:
    dashboard = json.loads((ROOT / "ops" / "grafana" / "bookstore.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {name for q in queries for name in NAME.findall(q)}
    assert used, "the dashboard queries no metric"
    assert used <= exported(), sorted(used - exported())
    titles = " ".join(p["title"] for p in dashboard["panels"] if p["type"] == "row")
    for row in ("Regions", "Replication", "Edge health", "Drills"):
        assert row in titles


def test_the_scrape_file_scrapes_every_default_region_and_the_edge() -> None:
    config = yaml.safe_load((ROOT / "ops" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    regions = [t for c in jobs["bookstore-region"]["static_configs"] for t in c["targets"]]
    assert regions == ["127.0.1.1:8000", "127.0.2.1:8000", "127.0.3.1:8000"]
    assert jobs["bookstore-edge"]["metrics_path"] == "/edge/metrics"


def test_the_blogs_diverged_writes_are_a_counter() -> None:
    """Diverged records are kept for good: their number only goes up, so it is a Counter (issue 18)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from bookstore.replication.blog.metrics import BlogMetrics

    registry = CollectorRegistry()
    BlogMetrics(registry, "eu-west-1").diverged.set_function(lambda: 3)
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    diverged = families["bookstore_blog_diverged_writes"]
    assert diverged.type == "counter"
    assert [(s.name, s.value) for s in diverged.samples] == [("bookstore_blog_diverged_writes_total", 3)]
