"""The edge in both layouts (under `bookstore up`, and on a host of its own beside the regions' hosts):
module 4 through it, kill -9, static failover, DNS, the operator API."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import dns.message
import dns.query
import dns.rdatatype
import httpx
import pytest

from bookstore.objectstore.namespace import site_bucket
from bookstore.objectstore.setup import s3_client
from bookstore.runtime.operator import operator_headers
from tests.support import waiting
from tests.support.layouts import (
    LAYOUTS,
    Deployment,
    Layout,
    OnOneMachine,
    layout_for,
    one_machine_only,
    skip_marked,
)

pytestmark = pytest.mark.system

EU, AP = "eu-west-1", "ap-southeast-1"
EMAIL, PASSWORD = "shopper@example.com", "a long shopper password"
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T], ok: Callable[[T], bool], timeout: float = 30.0) -> T:
    return waiting.wait_for(what, probe, ok, timeout)


def edge_client(system: Deployment, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=system.topology.edge.url, timeout=15, headers=headers)


def add_user(system: Deployment) -> None:
    system.cli(
        "users", "add", EMAIL, "--password", PASSWORD, "--data-dir", str(system.data_dir), "--region", EU
    )


def signin(client: httpx.Client) -> dict[str, str]:
    answer = wait_for(
        "sign-in through the edge",
        lambda: client.post("/api/auth/signin", json={"email": EMAIL, "password": PASSWORD}),
        lambda r: r.status_code == 200,
    )
    return {"Authorization": f"Bearer {answer.json()['accessToken']}"}


@dataclass
class Seen:
    at: float
    path: str
    status: int
    origin: str | None
    truth: str | None


@dataclass
class Shopper:
    """Idempotent shopper traffic through the edge (books, truth, the home page, a cover), one at a time."""

    client: httpx.Client
    seen: list[Seen] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    paths: tuple[str, ...] = ("/api/books", "/api/truth", "/", "/covers/bk-cook-001.svg", "/api/truth")

    def run(self) -> None:
        for path in itertools.cycle(self.paths):
            if self.stop.is_set():
                return
            try:
                answer = self.client.get(path)
            except httpx.HTTPError as exc:
                self.seen.append(Seen(time.monotonic(), path, 0, repr(exc), None))
                continue
            truth = (
                answer.json().get("regionId") if path == "/api/truth" and answer.status_code == 200 else None
            )
            self.seen.append(
                Seen(time.monotonic(), path, answer.status_code, answer.headers.get("x-edge-origin"), truth)
            )

    def failed(self) -> list[Seen]:
        return [s for s in self.seen if s.status != 200]

    def truths(self, after: float) -> list[str | None]:
        return [s.truth for s in self.seen if s.path == "/api/truth" and s.at >= after]


@pytest.fixture
def shopper_factory() -> Iterator[Callable[[httpx.Client], Shopper]]:
    threads: list[tuple[Shopper, threading.Thread]] = []

    def start(client: httpx.Client) -> Shopper:
        shopper = Shopper(client)
        thread = threading.Thread(target=shopper.run, daemon=True)
        thread.start()
        threads.append((shopper, thread))
        return shopper

    yield start
    for shopper, thread in threads:
        shopper.stop.set()
        thread.join(20)


def checkout(client: httpx.Client, auth: dict[str, str], key: str) -> httpx.Response:
    return client.post(
        "/api/orders",
        json={"books": [{"bookId": "bk-cook-001", "quantity": 1}]},
        headers={**auth, "Idempotency-Key": key},
    )


def order_ids(client: httpx.Client, auth: dict[str, str]) -> set[str]:
    answer = client.get("/api/orders", headers=auth)
    assert answer.status_code == 200, answer.text
    return {o["orderId"] for o in answer.json()}


def edge_status(system: Deployment) -> dict[str, Any]:
    status: dict[str, Any] = httpx.get(
        system.topology.edge.url + "/edge/status", headers=operator_headers(system.token), timeout=10
    ).json()
    return status


def target(system: Deployment, target_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(t for t in edge_status(system)["targets"] if t["id"] == target_id)
    return found


def test_module_4_the_api_breaks_in_ireland_and_shoppers_move_to_singapore(
    layout: Layout, tmp_path: Any, shopper_factory: Callable[[httpx.Client], Shopper]
) -> None:
    with layout.up(tmp_path, edge="") as system:
        add_user(system)
        # A shopper in Ireland (no location: the edge's default is the home region).
        client = edge_client(system)
        auth = signin(client)
        assert client.get("/api/truth").json()["regionId"] == EU
        before = checkout(client, auth, f"before-{uuid.uuid4()}")
        assert before.status_code == 201 and before.headers["x-bookstore-region"] == EU
        shopper = shopper_factory(edge_client(system))
        wait_for("shopper traffic", lambda: len(shopper.seen), lambda n: n >= 10)

        assert "api broken" in system.cli("api", "break", EU).stdout
        # The edge's 2 s count from the moment the break is in place: the command line's own start-up
        # (a Python process, seconds on a loaded machine) is not the edge's reaction time.
        broke = time.monotonic()
        assert system.api(EU).get("/books").status_code == 403  # the region itself answers 403
        wait_for("truth answers after the break", lambda: len(shopper.truths(broke + 2.0)), lambda n: n >= 5)
        # Within 2 s every /api/truth answer through the edge names Singapore.
        assert set(shopper.truths(broke + 2.0)) == {AP}
        # Static files keep loading throughout.
        statics = [s for s in shopper.seen if s.at >= broke and s.path in ("/", "/covers/bk-cook-001.svg")]
        assert statics and all(s.status == 200 for s in statics)

        # A checkout after the break lands in Singapore...
        key = f"after-{uuid.uuid4()}"
        placed = checkout(client, auth, key)
        assert placed.status_code == 201, placed.text
        assert placed.headers["x-bookstore-region"] == AP and placed.headers["x-edge-origin"] == AP
        order = placed.json()["orderId"]
        unhealthy = target(system, f"api:{EU}")
        assert unhealthy["healthy"] is False and unhealthy["changes"][-1]["reason"].startswith("answered 403")

        # ... and after the repair it is in Ireland too, where traffic returns.
        repaired = time.monotonic()
        assert "api ok" in system.cli("api", "repair", EU).stdout
        wait_for(
            "truth from Ireland again", lambda: client.get("/api/truth").json()["regionId"], lambda r: r == EU
        )
        wait_for("the order in Ireland", lambda: order_ids(client, auth), lambda ids: order in ids)
        assert checkout(client, auth, key).json()["orderId"] == order  # the same key, the same order
        assert time.monotonic() - repaired < 30

        shopper.stop.set()
        # The client saw no failed idempotent request during the switch.
        assert shopper.failed() == []


def test_only_idempotent_requests_are_retried_on_the_next_region(layout: Layout, tmp_path: Any) -> None:
    # Without the breaker and with a health check a minute apart, every request meets the broken
    # API first: what happens next depends on the request alone.
    with layout.up(tmp_path, edge="breaker = false\n[edge.health]\ninterval_s = 60.0") as system:
        add_user(system)
        client = edge_client(system, **{"X-Client-Region": EU})
        auth = signin(client)
        system.cli("api", "break", EU)
        for _ in range(2):
            cart = client.post("/api/cart", json={"bookId": "bk-cook-001", "quantity": 1}, headers=auth)
            # A POST without an Idempotency-Key is sent once and never failed over.
            assert cart.status_code == 403 and cart.headers["x-edge-origin"] == EU
            assert "x-bookstore-region" not in cart.headers
        placed = checkout(client, auth, f"retried-{uuid.uuid4()}")
        assert placed.status_code == 201, placed.text
        assert placed.headers["x-edge-origin"] == AP and placed.headers["x-bookstore-region"] == AP
        truth = client.get("/api/truth")
        assert truth.status_code == 200 and truth.json()["regionId"] == AP
        assert target(system, f"api:{EU}")["healthy"] is True  # no health check has run since the break
        status = edge_status(system)
        assert {"record": "api", "from": EU, "to": AP, "count": 2} in status["counters"]["retriesByPair"]
        metrics = httpx.get(
            system.topology.edge.url + "/edge/metrics", headers=operator_headers(system.token)
        ).text
        assert (
            'bookstore_edge_retries_total{from="eu-west-1",record="api",to="ap-southeast-1"} 2.0' in metrics
        )
        assert 'bookstore_edge_requests_total{record="api",region="eu-west-1",status="403"} 2.0' in metrics


def test_kill_9_of_ireland_then_restart_traffic_returns_and_data_converges(
    layout: Layout, tmp_path: Any, shopper_factory: Callable[[httpx.Client], Shopper]
) -> None:
    with layout.up(tmp_path, edge="") as system:
        add_user(system)
        client = edge_client(system)
        auth = signin(client)
        shopper = shopper_factory(edge_client(system))
        wait_for("shopper traffic", lambda: len(shopper.seen), lambda n: n >= 10)

        system.kill(EU)
        killed = time.monotonic()  # when the process is gone (the command returns after the kill), as above
        wait_for("truth answers after the kill", lambda: len(shopper.truths(killed + 2.0)), lambda n: n >= 5)
        assert set(shopper.truths(killed + 2.0)) == {AP}
        placed = checkout(client, auth, f"during-{uuid.uuid4()}")
        assert placed.status_code == 201 and placed.headers["x-bookstore-region"] == AP
        order = placed.json()["orderId"]
        assert target(system, f"api:{EU}")["healthy"] is False
        # The blog's primary is down: its failover record serves reads from the replica.
        blog = client.get("/blog/")
        assert blog.status_code == 200 and blog.headers["x-edge-origin"] == AP

        restarted = time.monotonic()
        system.start(EU)
        # Traffic returns by latency: the shopper (in Ireland) is served by Ireland again.
        wait_for(
            "truth from Ireland again", lambda: client.get("/api/truth").json()["regionId"], lambda r: r == EU
        )
        assert time.monotonic() - restarted < 30
        wait_for("the order in Ireland", lambda: order_ids(client, auth), lambda ids: order in ids)
        shopper.stop.set()
        assert shopper.failed() == []

        def digests() -> list[str]:
            return [
                system.api(r).get("/status", params={"digest": "true"}).json()["stateDigest"]
                for r in (EU, AP)
            ]

        wait_for("equal state in both regions", digests, lambda d: len(set(d)) == 1, timeout=60)


@pytest.fixture(scope="module", params=LAYOUTS, ids=str)
def deployed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """One system per layout for the tests below, which leave it as they found it."""
    with layout_for(request).up(tmp_path_factory.mktemp("edge-system"), edge="", operate=False) as system:
        yield system


@pytest.fixture
def running(deployed: Deployment, request: pytest.FixtureRequest) -> Iterator[Deployment]:
    skip_marked(request, deployed.layout)
    with deployed.operating():
        yield deployed


@pytest.mark.xdist_group("edge-system")
def test_static_content_fails_over_to_singapore_for_a_missing_object_or_a_503(running: Deployment) -> None:
    system = running
    client = edge_client(system)
    home = client.get("/")
    assert home.status_code == 200 and home.headers["x-edge-origin"] == EU
    assert "text/html" in home.headers["content-type"]
    assert client.get("/books/bk-cook-001").headers["x-edge-origin"] == EU  # an app page: index.html
    # A file only Singapore's bucket holds (it never reached Ireland's): the origin group serves it
    # from Singapore. (A file deleted in Ireland is not served on: tests/security/test_edge_exposure.py.)
    access = system.s3_access
    ap_s3 = s3_client(system.topology, AP, access)
    key = "covers/only-in-singapore.svg"
    ap_s3.put_object(Bucket=site_bucket(AP), Key=key, Body=b"<svg/>", ContentType="image/svg+xml")
    served = client.get("/" + key)
    assert served.status_code == 200 and served.headers["x-edge-origin"] == AP
    assert served.headers["content-type"].startswith("image/svg+xml")
    assert "eu-west-1: answered 404" in served.headers["x-edge-failover"]
    # A file in neither bucket is a 404, a page path the app's index.
    assert client.get("/nowhere.js").status_code == 404
    # Ireland's S3 answering 503: everything static comes from Singapore; an app page too.
    assert "s3 unavailable" in system.cli("s3", "break", EU).stdout
    try:
        for path in ("/", "/covers/bk-cook-001.svg", "/books/bk-cook-001"):
            answer = client.get(path)
            assert answer.status_code == 200 and answer.headers["x-edge-origin"] == AP, path
        head = client.head("/covers/bk-cook-001.svg")
        assert head.status_code == 200 and int(head.headers["content-length"]) > 0 and head.content == b""
        assert client.post("/covers/bk-cook-001.svg").status_code == 405
        wait_for(
            "the bucket check sees Ireland unhealthy",
            lambda: target(system, f"s3:{EU}")["healthy"],
            lambda h: h is False,
        )
    finally:
        system.cli("s3", "repair", EU)
    wait_for(
        "Ireland's bucket serves again", lambda: client.get("/").headers["x-edge-origin"], lambda o: o == EU
    )


def resolve(system: Deployment, name: str) -> str:
    edge = system.topology.edge
    query = dns.message.make_query(f"{name}.{edge.zone}" if name else edge.zone, dns.rdatatype.A)
    answer = dns.query.udp(query, edge.dns_address, port=edge.dns_port, timeout=2)
    records = [rr for rrset in answer.answer for rr in rrset]
    assert len(records) == 1 and answer.answer[0].ttl == edge.dns_ttl_s
    return str(records[0].address)


def switch_time(system: Deployment, name: str, to: str, limit_s: float) -> float:
    started = time.monotonic()
    wait_for(
        f"{name or 'the zone'} resolving to {to}",
        lambda: resolve(system, name),
        lambda a: a == to,
        limit_s + 2,
    )
    return time.monotonic() - started


@pytest.mark.xdist_group("edge-system")
def test_dns_answers_follow_health_within_interval_times_threshold_plus_one_second(
    running: Deployment,
) -> None:
    system = running
    eu, ap = system.topology.region(EU).address, system.topology.region(AP).address
    check = system.topology.edge.health_check
    limit = check.interval_s * check.failure_threshold + 1.0
    assert resolve(system, "api") == eu and resolve(system, "blog") == eu and resolve(system, "") == eu
    # No HTTP traffic crosses the edge here: the health checks alone move the answers.
    system.cli("api", "break", EU)
    try:
        assert switch_time(system, "api", ap, limit) <= limit
        assert resolve(system, "blog") == eu  # the blog is not behind the API mapping
    finally:
        system.cli("api", "repair", EU)
    assert switch_time(system, "api", eu, check.interval_s * check.success_threshold + 1) <= limit
    system.kill(EU)
    try:
        for name in ("blog", "api", ""):
            assert switch_time(system, name, ap, limit) <= limit
    finally:
        system.start(EU)
    assert switch_time(system, "api", eu, limit) <= limit
    wait_for("the zone back on Ireland", lambda: resolve(system, ""), lambda a: a == eu)
    wait_for("the blog back on Ireland", lambda: resolve(system, "blog"), lambda a: a == eu)
    changes = target(system, f"api:{EU}")["changes"]
    assert [c["healthy"] for c in changes][-4:] == [False, True, False, True]


@pytest.mark.xdist_group("edge-system")
@one_machine_only("the edge's control endpoints act through the supervisor and the link simulator")
def test_operator_endpoints_report_and_act_through_the_supervisor(running: Deployment) -> None:
    system = running
    assert isinstance(system, OnOneMachine)
    client = edge_client(system, **operator_headers(system.token))
    overview = client.get("/edge/overview").json()
    assert {r["regionId"] for r in overview["regions"] if r["healthy"]} >= {EU, AP}
    assert overview["blog"]["primary"] == EU and overview["edge"]["edge"]["ready"] is True
    assert any(p["source"] == EU and p["destination"] == AP for p in overview["replication"])
    moved = client.post(f"/edge/control/links/{EU}/{AP}", json={"delayMs": 90, "both": True})
    assert moved.status_code == 200, moved.text
    assert {(link["src"], link["delayMs"]) for link in moved.json()["links"]} >= {(EU, 90), (AP, 90)}
    client.post(f"/edge/control/links/{EU}/{AP}", json={"delayMs": 85, "both": True})
    broke = client.post(f"/edge/control/api/{AP}/break", json={})
    assert broke.status_code == 200 and broke.json()["api"] == "broken"
    assert system.control("GET", "/faults")["faults"][AP]["api"] == "broken"
    assert client.post(f"/edge/control/api/{AP}/repair", json={}).json()["api"] == "ok"
    status = system.cli("status").stdout
    assert "Edge records" in status and "api:eu-west-1" in status
    # Promoting Singapore's blog moves the blog's failover record there (its primary).
    promoted = client.post(f"/edge/control/blog/promote/{AP}", json={})
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["role"] == "primary" and promoted.json()["epoch"] >= 2
    ap_address = system.topology.region(AP).address
    wait_for("the blog record on Singapore", lambda: resolve(system, "blog"), lambda a: a == ap_address)
    assert client.get("/blog/").headers["x-edge-origin"] == AP
    assert edge_status(system)["routing"]["blogPrimary"] == AP
