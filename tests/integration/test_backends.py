"""The same region wired to the real-engine adapters: tables on DynamoDB (moto), ranking on Redis (a server,
and a cluster as ElastiCache in cluster mode runs it)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto import mock_aws
from starlette.testclient import TestClient

from bookstore.config import Storage, Topology
from bookstore.region.compose import build_region, region_app
from bookstore.services.catalog import seed_books
from tests.support.aws import fake_credentials
from tests.support.redis_server import redis_cluster, redis_server

PASSWORD = "backend-password"


@pytest.fixture
def aws_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    fake_credentials(tmp_path, monkeypatch)
    with mock_aws():
        yield


def shop(client: TestClient, email: str) -> list[dict[str, object]]:
    """Sign in, fill the cart, check out twice with one idempotency key; returns the best sellers."""
    token = client.post("/auth/signin", json={"email": email, "password": PASSWORD}).json()["accessToken"]
    auth = {"Authorization": f"Bearer {token}"}
    books = client.get("/books", params={"category": "Woodwork"}).json()
    assert len(books) == 4
    client.post("/cart", json={"bookId": books[0]["id"], "quantity": 2}, headers=auth)
    assert client.get("/cart", headers=auth).json()[0]["quantity"] == 2
    order = {"books": [{"bookId": books[0]["id"], "quantity": 2}, {"bookId": books[1]["id"], "quantity": 1}]}
    key = {**auth, "Idempotency-Key": "one"}
    assert client.post("/orders", json=order, headers=key).status_code == 201
    assert client.post("/orders", json=order, headers=key).status_code == 200
    assert client.get("/cart", headers=auth).json() == []
    assert len(client.get("/orders", headers=auth).json()) == 1
    deadline = time.monotonic() + 10
    ranked: list[dict[str, object]]
    while len(ranked := client.get("/bestsellers").json()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ranked == [{"bookId": books[0]["id"], "quantity": 2}, {"bookId": books[1]["id"], "quantity": 1}]
    return ranked


def test_region_on_dynamodb(tmp_path: Path, aws_env: None) -> None:
    topology = Topology(storage=Storage(tables="dynamodb"))
    services = build_region(topology, "eu-west-1", tmp_path)
    try:
        assert services.catalog.load(seed_books()) == 56
        services.identity.add_user("dynamo@example.com", PASSWORD)
        with TestClient(region_app(services)) as client:
            shop(client, "dynamo@example.com")
            assert client.get("/search", params={"q": "woodwork"}).json()
    finally:
        services.close()


def test_region_with_redis_best_sellers(tmp_path: Path) -> None:
    with redis_server() as url:
        topology = Topology(storage=Storage(ranking="redis", redis_url=url))
        services = build_region(topology, "eu-west-1", tmp_path)
        try:
            services.catalog.load(seed_books())
            services.identity.add_user("redis@example.com", PASSWORD)
            with TestClient(region_app(services)) as client:
                shop(client, "redis@example.com")
        finally:
            services.close()


def test_region_with_redis_best_sellers_on_a_cluster(tmp_path: Path) -> None:
    """The region finds the cluster by itself (INFO cluster) and uses the cluster client."""
    with redis_cluster() as url:
        topology = Topology(storage=Storage(ranking="redis", redis_url=url))
        services = build_region(topology, "eu-west-1", tmp_path)
        try:
            services.catalog.load(seed_books())
            services.identity.add_user("cluster@example.com", PASSWORD)
            with TestClient(region_app(services)) as client:
                shop(client, "cluster@example.com")
        finally:
            services.close()
