"""The edge's pure parts: routing records, health thresholds and breaker, object keys, SigV4, DNS answers."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from dnslib import QTYPE, RCODE, DNSRecord  # type: ignore[import-untyped]
from starlette.testclient import TestClient

from bookstore.config import HealthCheck, Topology
from bookstore.edge import cdn
from bookstore.edge.dns import DnsServer
from bookstore.edge.health import KINDS, HealthChecker, Probe, Target, judge
from bookstore.edge.requests import shopper_api
from bookstore.edge.routing import Routing, latency_ms
from bookstore.edge.upstream import Answer
from bookstore.kernel.auth import sign
from bookstore.kernel.clock import SystemClock
from bookstore.objectstore.errors import SignatureDoesNotMatch
from bookstore.objectstore.sigv4 import SigV4
from bookstore.region.compose import region_app
from bookstore.region.faults import RegionFaults
from bookstore.region.services import RegionServices
from bookstore.runtime.secret import Credentials
from bookstore.runtime.switches import FAULTS_PATH, OPERATOR

EU, AP, US = "eu-west-1", "ap-southeast-1", "us-east-1"


def targets(topology: Topology) -> dict[str, Target]:
    return {t.id: t for t in (Target(kind, r.id) for r in topology.regions for kind in KINDS)}


def routing(**edge: object) -> tuple[Routing, dict[str, Target]]:
    topology = Topology.model_validate({"edge": edge})
    ts = targets(topology)
    return Routing(topology, ts), ts


def mark(ts: dict[str, Target], target: str, healthy: bool) -> None:
    ts[target].healthy = healthy


# -- routing ------------------------------------------------------------------------------------------


def test_latency_comes_from_the_links_delays_and_a_region_is_nearest_to_itself() -> None:
    topology = Topology()
    assert latency_ms(topology, EU, EU) == 0
    assert latency_ms(topology, EU, AP) == 85
    assert latency_ms(topology, US, EU) == 35
    r, _ = routing()
    assert r.api_order(EU) == [EU, US, AP]
    assert r.api_order(AP) == [AP, EU, US]
    assert r.api_order(US) == [US, EU, AP]


def test_the_client_location_comes_from_the_header_then_the_cookie_then_the_default() -> None:
    r, _ = routing()
    assert r.client_region(b"ap-southeast-1", None) == AP
    assert r.client_region(None, b"theme=dark; client_region=us-east-1") == US
    assert r.client_region(b"ap-southeast-1", b"client_region=us-east-1") == AP
    # Unknown or hostile values are ignored rather than trusted.
    assert r.client_region(b"mars-1\r\nx: y", b"client_region=../../etc") == EU
    assert r.client_region(None, None) == EU
    other, _ = routing(default_client_region=AP)
    assert other.client_region(None, None) == AP


def test_unhealthy_targets_go_last_and_all_unhealthy_answers_as_if_all_were_healthy() -> None:
    r, ts = routing()
    mark(ts, "api:eu-west-1", False)
    assert r.api_order(EU) == [US, AP, EU]
    for region in (US, AP):
        mark(ts, f"api:{region}", False)
    assert r.api_order(EU) == [EU, US, AP]
    closed, cts = routing(all_unhealthy_answers_all=False)
    for region in (EU, US, AP):
        mark(cts, f"api:{region}", False)
    assert closed.api_order(EU) == []
    mark(cts, "api:ap-southeast-1", True)
    assert closed.api_order(EU) == [AP]


def test_an_open_breaker_takes_a_healthy_target_out_of_rotation() -> None:
    r, ts = routing()
    mark(ts, "api:eu-west-1", True)
    ts["api:eu-west-1"].breaker_since = 1.0
    assert r.api_order(EU)[0] == US


def test_the_blog_follows_the_primary_of_the_highest_epoch_and_fails_over_to_a_replica() -> None:
    r, ts = routing()
    assert r.blog_order()[0] == EU
    for region in (EU, AP):
        mark(ts, f"blog:{region}", True)
    ts["blog:eu-west-1"].info = {"role": "primary", "epoch": 1}
    ts["blog:ap-southeast-1"].info = {"role": "primary", "epoch": 2}
    r.refresh()
    assert r.blog_primary == AP
    assert r.blog_order() == [AP, EU, US]
    mark(ts, "blog:ap-southeast-1", False)
    r.refresh()
    # The primary is remembered while it is down; reads go to the nearest healthy replica.
    assert r.blog_primary == AP
    assert r.blog_order()[0] == EU


def test_two_primaries_of_one_epoch_number_resolve_to_the_one_every_region_keeps() -> None:
    # Promoted on both sides of a partition: (2, us-east-1) outranks (2, eu-west-1), whatever the order.
    r, ts = routing()
    for region in (EU, US):
        mark(ts, f"blog:{region}", True)
        ts[f"blog:{region}"].info = {"role": "primary", "epoch": 2}
    r.refresh()
    assert r.blog_primary == US


def test_answer_changes_are_counted_as_record_failovers() -> None:
    r, ts = routing()
    assert r.answers["static"] == EU
    mark(ts, "s3:eu-west-1", False)
    r.refresh()
    assert r.answers["static"] == US
    assert r.record_failovers["static"] == 1
    assert r.changes[-1]["from"] == EU and r.changes[-1]["to"] == US


def test_a_dns_client_is_located_by_the_region_that_holds_its_address() -> None:
    r, _ = routing()
    assert r.region_of_address("127.0.2.77") == AP
    assert r.region_of_address("127.0.1.1") == EU
    assert r.region_of_address("127.0.0.1") is None


# -- health -------------------------------------------------------------------------------------------


def test_thresholds_decide_state_changes_and_every_change_is_kept() -> None:
    target = Target("api", EU)
    checker = HealthChecker([target], {}, HealthCheck(failure_threshold=2, success_threshold=3))
    ok, bad = Probe(True, 200, "answered 200", 1.0), Probe(False, 403, "answered 403", 1.0)
    checker.record(target, ok, 0.0)
    assert target.healthy is True  # the first probe decides at once
    checker.record(target, bad, 1.0)
    assert target.healthy is True
    checker.record(target, bad, 2.0)
    assert target.healthy is False
    for i in range(2):
        checker.record(target, ok, 3.0 + i)
        assert target.healthy is False
    checker.record(target, ok, 5.0)
    assert target.healthy is True
    assert [(c.healthy, c.reason) for c in target.changes] == [
        (True, "answered 200"),
        (False, "answered 403"),
        (True, "answered 200"),
    ]
    assert target.checks == 6 and target.failed_checks == 2


def test_a_change_in_what_a_target_says_of_itself_is_a_change_too() -> None:
    changed: list[str] = []
    target = Target("blog", AP)
    checker = HealthChecker([target], {}, HealthCheck(), on_change=lambda t: changed.append(t.id))
    replica = Probe(True, 200, "blog replica", 1.0, {"role": "replica", "epoch": 1})
    checker.record(target, replica, 0.0)
    checker.record(target, replica, 1.0)
    assert changed == ["blog:ap-southeast-1"]  # healthy once; the same role again is no change
    checker.record(target, Probe(True, 200, "blog primary", 1.0, {"role": "primary", "epoch": 2}), 2.0)
    assert len(changed) == 2 and target.info["role"] == "primary"


def test_the_breaker_closes_only_after_a_probe_that_started_after_it_opened() -> None:
    async def scenario() -> None:
        target = Target("api", EU)
        checker = HealthChecker([target], {}, HealthCheck())
        ok = Probe(True, 200, "answered 200", 1.0)
        checker.record(target, ok, 0.0)
        checker.report_failure(target, "connection lost")
        assert not target.routable and target.breaker_opens == 1 and target.wake.is_set()
        opened = target.breaker_since
        assert opened is not None
        checker.record(target, ok, opened - 0.001)  # in flight when the request failed: proves nothing
        assert not target.routable
        checker.record(target, ok, opened + 0.001)
        assert target.routable
        off = HealthChecker([target], {}, HealthCheck(), breaker=False)
        off.report_failure(target, "connection lost")
        assert target.routable

    asyncio.run(scenario())


def test_the_checker_keeps_its_interval_and_is_woken_by_a_failure() -> None:
    calls: list[float] = []

    async def probe(_: Target) -> Probe:
        calls.append(time.monotonic())
        return Probe(True, 200, "ok", 0.1)

    async def until(count: int) -> None:
        while len(calls) < count:
            await asyncio.sleep(0.01)

    async def scenario(interval_s: float) -> Target:
        target = Target("api", EU)
        checker = HealthChecker([target], {"api": probe}, HealthCheck(interval_s=interval_s, timeout_s=0.1))
        stop = asyncio.Event()
        task = asyncio.create_task(checker.run(stop))
        await asyncio.wait_for(until(len(calls) + 3 if interval_s < 1 else len(calls) + 1), 30)
        if interval_s >= 1:
            # Far from its next probe, a failed request makes the checker probe at once.
            checker.report_failure(target, "reset")
            await asyncio.wait_for(until(len(calls) + 1), interval_s / 2)
        stop.set()
        await asyncio.wait_for(task, 5)
        return target

    asyncio.run(scenario(0.1))
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert min(gaps) >= 0.09  # never sooner than the interval
    calls.clear()
    target = asyncio.run(scenario(60.0))
    assert len(calls) == 2
    assert target.routable  # the probe started after the breaker opened, and passed


def test_a_probe_that_hangs_fails_at_the_timeout() -> None:
    async def hang(_: Target) -> Probe:
        await asyncio.sleep(10)
        raise AssertionError("unreachable")

    async def scenario() -> None:
        target = Target("api", EU)
        checker = HealthChecker([target], {"api": hang}, HealthCheck(interval_s=1, timeout_s=0.05))
        await checker.check_all()
        assert target.healthy is False and "within 0.05 s" in target.changes[-1].reason

    asyncio.run(scenario())


def test_judge_counts_2xx_3xx_and_the_search_string() -> None:
    plain = HealthCheck()
    assert judge(200, b"", plain, 1).ok and judge(302, b"", plain, 1).ok
    assert not judge(403, b"", plain, 1).ok and not judge(503, b"", plain, 1).ok
    search = HealthCheck(search_string="bk-cook-001")
    assert judge(200, b'[{"id":"bk-cook-001"}]', search, 1).ok
    assert not judge(200, b"[]", search, 1).ok
    assert not judge(200, b" " * 5120 + b"bk-cook-001", search, 1).ok


# -- static content -----------------------------------------------------------------------------------


def test_paths_map_to_keys_like_a_website_bucket() -> None:
    assert cdn.object_key("/") == "index.html"
    assert cdn.object_key("/covers/bk-1.svg") == "covers/bk-1.svg"
    assert cdn.object_key("/docs/") == "docs/index.html"
    for bad in ("/../secret", "/a/./b", "/a//b", "/a\\b", "/a\x00b", "/" + "x" * 1025, "relative"):
        with pytest.raises(cdn.BadPath):
            cdn.object_key(bad)


def test_only_paths_without_an_extension_fall_back_to_the_app() -> None:
    assert cdn.spa_fallback("books/bk-cook-001")
    assert cdn.spa_fallback("cart")
    assert not cdn.spa_fallback("app.js")
    assert not cdn.spa_fallback("covers/missing.svg")
    assert not cdn.spa_fallback("index.html")


class FakeBucket:
    """An origin of the group that answers what it is told, counting requests."""

    def __init__(self, region: str, answer: Answer) -> None:
        self.region = region
        self.answer = answer
        self.asked = 0

    async def fetch(self, *_: object) -> Answer:
        self.asked += 1
        return self.answer


def test_a_deleted_object_is_an_answer_of_the_group_not_a_failure() -> None:
    signer = cdn.Signer("AKIAEXAMPLE", "secret")
    deleted = Answer(404, [(b"x-amz-delete-marker", b"true"), (b"x-amz-version-id", b"v2")], b"")
    stale = Answer(200, [(b"content-type", b"text/plain")], b"the copy a replica still holds")
    ireland, singapore = FakeBucket(EU, deleted), FakeBucket(AP, stale)
    fetched = asyncio.run(cdn.fetch_from_group([ireland, singapore], signer, "GET", "gone.txt", [], 1.0))  # type: ignore[list-item]
    assert fetched.answer is deleted and fetched.region == EU and fetched.missing
    assert singapore.asked == 0 and fetched.failed == []
    # A 404 that names no delete marker (the object never reached that bucket) still fails over.
    ireland.answer = Answer(404, [], b"")
    fetched = asyncio.run(cdn.fetch_from_group([ireland, singapore], signer, "GET", "gone.txt", [], 1.0))  # type: ignore[list-item]
    assert fetched.answer is stale and fetched.region == AP
    assert fetched.failed == [(EU, "answered 404")]


def test_only_the_storefronts_own_files_are_served_as_active_content() -> None:
    page = [(b"content-type", b"text/html; charset=utf-8"), (b"etag", b'"1"')]
    own = dict(cdn.guarded(page, own=True))
    assert own[b"content-type"] == b"text/html; charset=utf-8" and own[b"etag"] == b'"1"'
    assert b"script-src 'self'" in own[b"content-security-policy"]
    assert b"unsafe-inline" not in own[b"content-security-policy"]
    assert own[b"x-content-type-options"] == b"nosniff"
    for active in (
        b"text/html",
        b"application/javascript",
        b"text/javascript",
        b"application/xml",
        b"text/css",
        b"",
    ):
        other = dict(cdn.guarded([(b"content-type", active)] if active else [], own=False))
        assert other[b"content-type"] == b"application/octet-stream", active
        assert other[b"content-disposition"] == b"attachment", active
        assert other[b"content-security-policy"].startswith(b"sandbox;"), active
    for inert in (b"image/svg+xml", b"image/png", b"text/plain; charset=utf-8", b"application/json"):
        other = dict(cdn.guarded([(b"content-type", inert)], own=False))
        assert other[b"content-type"] == inert and b"content-disposition" not in other
        assert other[b"content-security-policy"].startswith(b"sandbox;")
        assert other[b"x-content-type-options"] == b"nosniff"


def test_the_edge_forwards_only_the_shops_part_of_the_api() -> None:
    for path in (
        "/api/books",
        "/api/books/bk-cook-001",
        "/api/truth",
        "/api/search",
        "/api/bestsellers",
        "/api/auth/signin",
        "/api/.well-known/jwks.json",
        "/api/cart",
        "/api/cart/bk-cook-001",
        "/api/orders",
    ):
        assert shopper_api(path), path
    for path in (
        "/api",
        "/api/",
        "/api/status",
        "/api/metrics",
        "/api/docs",
        "/api/openapi.json",
        "/api/health",
        "/api/replication/follow",
        "/api/_replication/objects",
        "/api/booksx",
        "/api//books",
    ):
        assert not shopper_api(path), path


def test_the_edge_signs_requests_the_object_stores_sigv4_accepts() -> None:
    access = Credentials.generate().s3
    signer = cdn.Signer(access.access_key_id, access.secret_access_key)
    now = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)
    verifier = SigV4({access.access_key_id: access.secret_access_key}, lambda: now.timestamp())
    path = "/bookstore-web-eu-west-1/" + quote("covers/a b+é.svg", safe="/~")
    headers = {k.decode(): v.decode() for k, v in signer.headers("GET", path, "127.0.1.1:9000", EU, now)}
    headers["host"] = "127.0.1.1:9000"
    granted = verifier.authorize("GET", path, "", headers)
    assert granted.access_key == access.access_key_id
    with pytest.raises(SignatureDoesNotMatch):
        verifier.authorize("GET", path.replace("covers", "secret"), "", headers)


# -- DNS ----------------------------------------------------------------------------------------------


def dns_answer(server: DnsServer, name: str, qtype: str = "A", source: str = "127.0.0.1") -> DNSRecord:
    query = DNSRecord.question(name, qtype)
    raw = server.answer(bytes(query.pack()), source)
    assert raw is not None
    reply = DNSRecord.parse(raw)
    assert reply.header.id == query.header.id
    return reply


def test_dns_answers_the_zones_names_with_the_ttl_and_refuses_others() -> None:
    counted: list[tuple[str, str]] = []
    names = frozenset({"bookstore.test", "api.bookstore.test", "blog.bookstore.test"})
    server = DnsServer(
        "bookstore.test",
        5,
        lambda name, source: "127.0.2.1" if source.startswith("127.0.2.") else "127.0.1.1",
        names,
        lambda name, rcode: counted.append((name, rcode)),
    )
    reply = dns_answer(server, "API.bookstore.test")
    assert [(str(rr.rdata), rr.ttl) for rr in reply.rr] == [("127.0.1.1", 5)]
    assert reply.header.aa == 1
    assert str(dns_answer(server, "api.bookstore.test", source="127.0.2.9").rr[0].rdata) == "127.0.2.1"
    nx = dns_answer(server, "nope.bookstore.test")
    assert nx.header.rcode == RCODE.NXDOMAIN and nx.auth[0].rtype == QTYPE.SOA
    nodata = dns_answer(server, "api.bookstore.test", "AAAA")
    assert nodata.header.rcode == RCODE.NOERROR and not nodata.rr
    assert dns_answer(server, "example.com").header.rcode == RCODE.REFUSED
    assert ("-", "NXDOMAIN") in counted and ("api.bookstore.test", "NOERROR") in counted
    with pytest.raises(Exception):  # noqa: B017 - whatever dnslib raises on garbage, no answer is sent
        server.answer(b"\x00\x01garbage", "127.0.0.1")


def test_dns_has_no_answer_when_no_target_is_healthy_and_the_rule_is_off() -> None:
    server = DnsServer(
        "bookstore.test", 5, lambda name, source: None, frozenset({"api.bookstore.test"}), lambda *_: None
    )
    assert dns_answer(server, "api.bookstore.test").header.rcode == RCODE.SERVFAIL


# -- the region's fault switch ------------------------------------------------------------------------


def operator_headers(secret: str, body: bytes) -> dict[str, str]:
    return sign(secret, "POST", FAULTS_PATH, body, OPERATOR, SystemClock().now_ms(), EU)


def test_a_broken_api_answers_403_without_the_region_header_but_keeps_status_and_blog(
    services: RegionServices, tmp_path: Path
) -> None:
    secret = "the deployment's secret"
    app = RegionFaults(region_app(services), EU, secret, SystemClock(), s3_port=None)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/books").headers["x-bookstore-region"] == EU
        body = b'{"api": "broken"}'
        unsigned = client.post(FAULTS_PATH, content=body)
        assert unsigned.status_code == 401
        forged = client.post(FAULTS_PATH, content=body, headers=operator_headers("another secret", body))
        assert forged.status_code == 403
        as_region = sign(secret, "POST", FAULTS_PATH, body, AP, SystemClock().now_ms(), EU)
        assert client.post(FAULTS_PATH, content=body, headers=as_region).status_code == 403
        switched = client.post(FAULTS_PATH, content=body, headers=operator_headers(secret, body))
        assert switched.json() == {
            "regionId": EU, "api": "broken", "s3": "ok", "clockSkewMs": 0, "replication": "ok", "cut": [],
            "slow": {},
        }  # fmt: skip
        for path in ("/books", "/truth", "/health", "/orders"):
            broken = client.get(path)
            assert broken.status_code == 403, path
            assert broken.json()["error"] == "Forbidden"
            assert "x-bookstore-region" not in broken.headers
        assert client.get("/status").status_code == 200
        assert client.get("/blog/").status_code == 200
        bad = b'{"api": "sideways"}'
        assert client.post(FAULTS_PATH, content=bad, headers=operator_headers(secret, bad)).status_code == 400
        repair = b'{"api": "ok"}'
        client.post(FAULTS_PATH, content=repair, headers=operator_headers(secret, repair))
        assert client.get("/books").status_code == 200
