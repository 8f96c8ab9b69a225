"""A region rebuilt on the same data directory: best sellers stay exact, old tokens expire as they should."""

from __future__ import annotations

import time
from pathlib import Path

from starlette.testclient import TestClient

from bookstore.config import Topology
from bookstore.kernel.clock import SkewedClock, SystemClock
from bookstore.region.compose import build_region, region_app
from bookstore.services.catalog import seed_books

PASSWORD = "restart-password"


def wait_for(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_best_sellers_exact_across_consumer_restarts(tmp_path: Path) -> None:
    topology = Topology()
    services = build_region(topology, "eu-west-1", tmp_path)
    services.catalog.load(seed_books())
    services.identity.add_user("shopper@example.com", PASSWORD)
    books = [b["id"] for b in services.catalog.list("Cars")]
    expected = {books[0]: 0, books[1]: 0}
    with TestClient(region_app(services)) as client:
        token = client.post(
            "/auth/signin", json={"email": "shopper@example.com", "password": PASSWORD}
        ).json()
        auth = {"Authorization": f"Bearer {token['accessToken']}"}
        for i in range(5):
            line = {"bookId": books[i % 2], "quantity": i + 1}
            assert client.post("/orders", json={"books": [line]}, headers=auth).status_code == 201
            expected[books[i % 2]] += i + 1
        wait_for(lambda: len(client.get("/bestsellers").json()) == 2)
    services.close()

    # Restart twice, with more orders in between: nothing counted twice, nothing missed.
    for _ in range(2):
        services = build_region(topology, "eu-west-1", tmp_path)
        with TestClient(region_app(services)) as client:
            r = client.post("/auth/signin", json={"email": "shopper@example.com", "password": PASSWORD})
            auth = {"Authorization": f"Bearer {r.json()['accessToken']}"}
            line = {"bookId": books[0], "quantity": 7}
            assert client.post("/orders", json={"books": [line]}, headers=auth).status_code == 201
            expected[books[0]] += 7
            want = sorted(
                ({"bookId": b, "quantity": q} for b, q in expected.items()), key=lambda x: -x["quantity"]
            )
            wait_for(lambda want=want: client.get("/bestsellers").json() == want)
        services.close()


def test_an_expired_token_is_refused(tmp_path: Path) -> None:
    topology = Topology()
    past = build_region(topology, "eu-west-1", tmp_path, clock=SkewedClock(SystemClock(), -2 * 3600 * 1000))
    past.identity.add_user("late@example.com", PASSWORD)
    stale = past.identity.signin("late@example.com", PASSWORD)["accessToken"]
    past.close()
    services = build_region(topology, "eu-west-1", tmp_path)
    with TestClient(region_app(services)) as client:
        r = client.get("/cart", headers={"Authorization": f"Bearer {stale}"})
        assert r.status_code == 401 and "expired" in r.json()["message"].lower()
    services.close()
