"""Every request a region serves is counted under its route's template, the peers' ones included."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from bookstore.config import Topology
from bookstore.kernel.auth import PeerAuth
from bookstore.kernel.clock import SystemClock
from bookstore.region.compose import build_region, region_app

EU, AP = "eu-west-1", "ap-southeast-1"
SECRET = "the deployment's secret for the route metrics test"


def test_replication_and_blog_requests_are_counted_under_their_routes_not_unmatched(tmp_path: Path) -> None:
    services = build_region(Topology(), EU, tmp_path)
    try:
        with TestClient(region_app(services, SECRET)) as client:
            signed = PeerAuth(SECRET, AP, SystemClock(), destination=EU)
            assert client.get("/replication/status", auth=signed).status_code == 200
            assert client.get("/replication/blog/state", auth=signed).status_code == 200
            assert client.get("/no/such/route").status_code == 404
            families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    finally:
        services.close()
    counted = {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for s in families["bookstore_http_requests"].samples
        if s.name.endswith("_total")
    }
    assert counted[("GET", "/replication/status", "200")] == 1
    assert counted[("GET", "/replication/blog/state", "200")] == 1
    # A request no route takes is still counted, under one label for all (not its path: unbounded).
    assert counted[("GET", "unmatched", "404")] == 1
