"""The region switches the drills flip: a skewed clock, the test-only replication pause, cut or slow links."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from starlette.testclient import TestClient

from bookstore.config import Topology
from bookstore.domain.orders import OrderLine
from bookstore.kernel.auth import PeerAuth, sign
from bookstore.kernel.clock import HybridLogicalClock, SkewedClock, SystemClock
from bookstore.kernel.link_faults import LinkFaults
from bookstore.region.compose import build_region, region_app
from bookstore.region.faults import RegionFaults
from bookstore.region.services import RegionServices
from bookstore.replication.tables.replicator import Replicator
from bookstore.replication.tables.wire import entry_json
from bookstore.runtime.listeners import listening_socket, server_config
from bookstore.runtime.switches import FAULTS_PATH, OPERATOR
from bookstore.services.catalog import seed_books
from tests.support.threaded_server import serving

EU = "eu-west-1"
SECRET = "the deployment's secret"


@pytest.fixture
def skewable(tmp_path: Path) -> Iterator[tuple[RegionServices, SkewedClock]]:
    clock = SkewedClock(SystemClock())
    # A data directory of its own: the `services` fixture may own tmp_path/eu-west-1 in the same test.
    services = build_region(Topology(), EU, tmp_path / "skewed", clock)
    services.catalog.load(seed_books())
    yield services, clock
    services.close()


def switch(client: TestClient, body: bytes) -> tuple[int, dict[str, object]]:
    headers = sign(SECRET, "POST", FAULTS_PATH, body, OPERATOR, SystemClock().now_ms(), EU)
    answer = client.post(FAULTS_PATH, content=body, headers=headers)
    return answer.status_code, answer.json()


def test_a_skewed_clock_moves_the_region_s_writes_and_versions_at_run_time(
    skewable: tuple[RegionServices, SkewedClock],
) -> None:
    services, clock = skewable
    app = RegionFaults(region_app(services), EU, SECRET, clock, s3_port=None)
    with TestClient(app) as client:
        status, state = switch(client, b'{"clockSkewMs": 2000}')
        assert (status, state["clockSkewMs"]) == (200, 2000)
        order, _ = services.checkout.place("c1", [OrderLine("bk-cook-001", 1)], "drill-key")
        wall_ms = time.time() * 1000
        assert order["orderDate"] - wall_ms > 1500
        # The hybrid logical clock of the tables reads the same clock: the write's version is ahead too.
        assert services.replica is not None
        entries = services.replica.read_log(0, limit=100, tables=["orders"]).entries
        assert [e.key["orderId"] for e in entries] == [order["orderId"]]
        assert HybridLogicalClock.physical_ms(entries[0].version[0]) - wall_ms > 1500
        status, state = switch(client, b'{"clockSkewMs": 0}')
        assert (status, state["clockSkewMs"]) == (200, 0)
        assert abs(services.clock.now_ms() - time.time() * 1000) < 500


def test_a_one_hour_skew_is_set_and_undone_through_the_switch(
    skewable: tuple[RegionServices, SkewedClock],
) -> None:
    services, clock = skewable
    with TestClient(RegionFaults(region_app(services), EU, SECRET, clock, s3_port=None)) as client:
        assert switch(client, b'{"clockSkewMs": 3600000}')[0] == 200
        assert services.clock.now_ms() - time.time() * 1000 > 3_590_000
        # The switch checks its signature against the machine's clock, so the skew can be undone.
        status, state = switch(client, b'{"clockSkewMs": 0}')
        assert (status, state["clockSkewMs"]) == (200, 0)


def test_bad_or_impossible_skews_are_refused_with_4xx(
    services: RegionServices, skewable: tuple[RegionServices, SkewedClock]
) -> None:
    skewed, clock = skewable
    with TestClient(RegionFaults(region_app(skewed), EU, SECRET, clock, s3_port=None)) as client:
        for body in (b'{"clockSkewMs": "2s"}', b'{"clockSkewMs": true}', b'{"clockSkewMs": 100000000}'):
            status, answer = switch(client, body)
            assert (status, answer["error"]) == (400, "BadRequest"), body
    fixed = RegionFaults(region_app(services), EU, SECRET, SystemClock(), s3_port=None)
    with TestClient(fixed) as client:
        status, answer = switch(client, b'{"clockSkewMs": 5}')
        assert (status, answer["error"]) == (409, "Conflict")


def replicated_app(services: RegionServices, test_faults: bool) -> tuple[RegionFaults, Replicator]:
    held: list[Replicator] = []
    # One set of faulty links for the switch and the region's signer and verifier, as region.compose wires it.
    links = LinkFaults()
    api = region_app(services, SECRET, on_replicator=held.append, links=links)
    app = RegionFaults(
        api,
        EU,
        SECRET,
        services.clock,
        s3_port=None,
        replicator=held[0],
        test_faults=test_faults,
        links=links,
    )
    return app, held[0]


def test_pausing_replication_is_refused_without_the_test_opt_in(services: RegionServices) -> None:
    app, replicator = replicated_app(services, test_faults=False)
    with TestClient(app) as client:
        status, answer = switch(client, b'{"replication": "paused"}')
        assert status == 403 and "BOOKSTORE_TEST_FAULTS=1" in str(answer["message"])
        assert not replicator.apply_paused
        # Lifting it is harmless everywhere: the supervisor re-sends every switch when a region starts.
        assert switch(client, b'{"replication": "ok"}')[0] == 200


def test_with_the_opt_in_replication_pauses_and_resumes(services: RegionServices) -> None:
    app, replicator = replicated_app(services, test_faults=True)
    with TestClient(app) as client:
        status, state = switch(client, b'{"replication": "paused"}')
        assert (status, state["replication"], replicator.apply_paused) == (200, "paused", True)
        assert client.get("/status").json()["replication"]["applyPaused"] is True
        assert switch(client, b'{"replication": "sideways"}')[0] == 400
        status, state = switch(client, b'{"replication": "ok"}')
        assert (status, state["replication"], replicator.apply_paused) == (200, "ok", False)


AP = "ap-southeast-1"


def test_a_cut_peer_s_push_is_refused_until_the_link_heals(services: RegionServices, tmp_path: Path) -> None:
    # Singapore's real change, pushed to Ireland as Singapore (signed with the deployment's secret).
    singapore = build_region(Topology(), AP, tmp_path / "singapore")
    try:
        singapore.catalog.load(seed_books())
        order, _ = singapore.checkout.place("c1", [OrderLine("bk-cook-001", 1)], "partition-key")
        assert singapore.replica is not None
        entries = singapore.replica.read_log(0, limit=100, tables=["orders"]).entries
    finally:
        singapore.close()
    batch = orjson.dumps({"source": AP, "entries": [entry_json(e) for e in entries]})
    app, _ = replicated_app(services, test_faults=False)

    def push(client: TestClient) -> httpx.Response:
        headers = sign(SECRET, "POST", "/replication/push", batch, AP, SystemClock().now_ms(), EU)
        answer: httpx.Response = client.post("/replication/push", content=batch, headers=headers)
        return answer

    with TestClient(app) as client:
        status, state = switch(client, orjson.dumps({"cut": [AP]}))
        assert (status, state["cut"]) == (200, [AP])
        refused = push(client)
        assert refused.status_code == 503 and refused.json()["error"] == "Unavailable", refused.text
        assert "cut" in refused.json()["message"]
        assert not services.checkout.history("c1")
        # Ireland's own clients do not cross the cut either (kernel.link_faults, through the signer).
        assert app.links.cut == {AP}
        status, state = switch(client, b'{"cut": []}')
        assert (status, state["cut"]) == (200, [])
        accepted = push(client)
        assert accepted.status_code == 200 and accepted.json()["applied"] == len(entries), accepted.text
        assert [o["orderId"] for o in services.checkout.history("c1")] == [order["orderId"]]


def test_a_cut_naming_no_peer_is_refused_with_400(services: RegionServices) -> None:
    app, _ = replicated_app(services, test_faults=False)
    with TestClient(app) as client:
        for body in (b'{"cut": "ap"}', b'{"cut": [1]}', b'{"cut": ["eu-west-1"]}', b'{"cut": ["operator"]}'):
            status, answer = switch(client, body)
            assert (status, answer["error"]) == (400, "BadRequest"), body
        assert app.links.cut == frozenset()


def test_a_stream_served_to_a_peer_ends_when_the_peer_is_cut_off(services: RegionServices) -> None:
    app, _ = replicated_app(services, test_faults=False)
    config = server_config(app, lifespan="on")
    follow = orjson.dumps({"peer": AP, "after": 0})
    with serving(config, listening_socket("127.0.0.1", 0)) as (host, port):
        url = f"http://{host}:{port}"
        peer = PeerAuth(SECRET, AP, SystemClock(), destination=EU)
        operator = PeerAuth(SECRET, OPERATOR, SystemClock(), destination=EU)
        with httpx.Client(base_url=url, auth=peer, timeout=10) as client:
            with client.stream("POST", "/replication/follow", content=follow) as stream:
                assert stream.status_code == 200
                lines = stream.iter_lines()
                assert next(lines)  # connected: the leader's first line
                cut = httpx.post(url + FAULTS_PATH, content=orjson.dumps({"cut": [AP]}), auth=operator)
                assert cut.json()["cut"] == [AP]
                # A heartbeat a second would keep it open for an hour: it ends at its next line instead.
                after = sum(1 for _ in itertools.islice(lines, 30))
                assert after < 30
            again = client.post("/replication/follow", content=follow)
            assert again.status_code == 503 and again.json()["error"] == "Unavailable"


def test_a_slow_switch_naming_no_peer_or_no_bounded_delay_is_refused_with_400(
    services: RegionServices,
) -> None:
    app, _ = replicated_app(services, test_faults=False)
    with TestClient(app) as client:
        for body in (
            b'{"slow": ["ap-southeast-1"]}',
            b'{"slow": {"ap-southeast-1": "250"}}',
            b'{"slow": {"ap-southeast-1": 2.5}}',
            b'{"slow": {"ap-southeast-1": true}}',
            b'{"slow": {"ap-southeast-1": -1}}',
            b'{"slow": {"ap-southeast-1": 60001}}',
            b'{"slow": {"eu-west-1": 250}}',
            b'{"slow": {"operator": 250}}',
            b'{"slow": {"not a region!": 250}}',
        ):
            status, answer = switch(client, body)
            assert (status, answer["error"]) == (400, "BadRequest"), body
        assert app.links.slow == {}
        # 0 is no delay: the peer is not listed as slowed.
        status, state = switch(client, orjson.dumps({"slow": {AP: 0}}))
        assert (status, state["slow"]) == (200, {})


def test_a_stream_served_to_a_slowed_peer_is_late_by_the_delay_until_lifted(services: RegionServices) -> None:
    app, _ = replicated_app(services, test_faults=False)
    config = server_config(app, lifespan="on")
    follow = orjson.dumps({"peer": AP, "after": 0})
    operator = PeerAuth(SECRET, OPERATOR, SystemClock(), destination=EU)
    with serving(config, listening_socket("127.0.0.1", 0)) as (host, port):
        url = f"http://{host}:{port}"
        slowed = httpx.post(url + FAULTS_PATH, content=orjson.dumps({"slow": {AP: 400}}), auth=operator)
        assert (slowed.status_code, slowed.json()["slow"]) == (200, {AP: 400})
        peer = PeerAuth(SECRET, AP, SystemClock(), destination=EU)
        with (
            httpx.Client(base_url=url, auth=peer, timeout=10) as client,
            client.stream("POST", "/replication/follow", content=follow) as stream,
        ):
            assert stream.status_code == 200
            # The first line (made at once) and a heartbeat (a second later): each reaches the peer at
            # least the delay after the leader stamped it with its clock.
            for line in itertools.islice(stream.iter_lines(), 2):
                assert time.time() * 1000 - orjson.loads(line)["nowMs"] >= 400
        lifted = httpx.post(url + FAULTS_PATH, content=b'{"slow": {}}', auth=operator)
        assert (lifted.status_code, lifted.json()["slow"]) == (200, {})
        assert app.links.slow == {}
