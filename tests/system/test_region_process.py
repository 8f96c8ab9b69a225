"""A real region process: served on its loopback address; an acknowledged order survives kill -9."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from bookstore.config import Region
from tests.support.pages import every_page
from tests.support.regions import bookstore, isolated_topology, region_process, start_region

pytestmark = pytest.mark.system


def seeded_region(tmp_path: Path, email: str, password: str) -> tuple[Region, Path, Path]:
    """One region's topology and data dir, the catalog seeded and a confirmed user added (no process yet)."""
    topology, topo_file = isolated_topology(tmp_path / "topology.toml", ("eu-west-1",))
    data = tmp_path / "data"
    common = ["--data-dir", str(data), "--topology", str(topo_file)]
    bookstore("seed", *common)
    bookstore("users", "add", email, "--password", password, *common)
    return topology.home, data, topo_file


def test_order_acknowledged_before_kill_9_survives_restart(tmp_path: Path) -> None:
    region, data, topo_file = seeded_region(tmp_path, "kill@example.com", "kill-9-password")

    process = start_region(region, data, topo_file)
    try:
        api = httpx.Client(base_url=region.api_url, timeout=10)
        token = api.post("/auth/signin", json={"email": "kill@example.com", "password": "kill-9-password"})
        auth = {"Authorization": f"Bearer {token.json()['accessToken']}"}
        book = api.get("/books").json()[0]["id"]
        placed = api.post("/orders", json={"books": [{"bookId": book, "quantity": 2}]}, headers=auth)
        assert placed.status_code == 201
        process.send_signal(signal.SIGKILL)  # straight after the 201: no chance to flush anything more
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()

    with region_process(region, data, topo_file):
        api = httpx.Client(base_url=region.api_url, timeout=10)
        again = api.post("/auth/signin", json={"email": "kill@example.com", "password": "kill-9-password"})
        auth = {"Authorization": f"Bearer {again.json()['accessToken']}"}
        orders = every_page(api, "/orders", auth)
        assert [o["orderId"] for o in orders] == [placed.json()["orderId"]]


def test_seed_is_idempotent_and_the_region_serves_it(tmp_path: Path) -> None:
    topology, topo_file = isolated_topology(tmp_path / "topology.toml", ("eu-west-1",))
    common = ["--data-dir", str(tmp_path / "data"), "--topology", str(topo_file)]
    assert "56 book(s) written" in bookstore("seed", *common).stdout
    assert "0 book(s) written" in bookstore("seed", *common).stdout
    with region_process(topology.home, tmp_path / "data", topo_file):
        r = httpx.get(f"{topology.home.api_url}/books")
        assert r.status_code == 200 and len(r.json()) == 56
        assert r.headers["x-bookstore-region"] == "eu-west-1"
        log = (tmp_path / "data" / "eu-west-1.log").read_text()
        assert "region=eu-west-1" in log


def test_concurrent_orders_acknowledged_before_kill_9_survive_restart(tmp_path: Path) -> None:
    """Concurrent checkouts share group commits (services/writes.py): each 201 still follows its commit."""
    region, data, topo_file = seeded_region(tmp_path, "group@example.com", "group-password")
    credentials = {"email": "group@example.com", "password": "group-password"}
    acknowledged: list[str] = []

    async def place_until_killed(process: subprocess.Popen[bytes]) -> None:
        async with httpx.AsyncClient(base_url=region.api_url, timeout=10) as api:
            token = (await api.post("/auth/signin", json=credentials)).json()["accessToken"]
            auth = {"Authorization": f"Bearer {token}"}
            order = {"books": [{"bookId": "bk-cook-001", "quantity": 1}]}

            async def customer() -> None:
                while process.poll() is None:
                    try:
                        placed = await api.post("/orders", json=order, headers=auth)
                    except httpx.TransportError:
                        return  # the process is gone: this order was never acknowledged
                    assert placed.status_code == 201, placed.text
                    acknowledged.append(placed.json()["orderId"])
                    if len(acknowledged) >= 300 and process.poll() is None:
                        process.send_signal(signal.SIGKILL)

            await asyncio.gather(*(customer() for _ in range(24)))

    process = start_region(region, data, topo_file)
    try:
        asyncio.run(place_until_killed(process))
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()

    with region_process(region, data, topo_file):
        api = httpx.Client(base_url=region.api_url, timeout=10)
        token = api.post("/auth/signin", json=credentials).json()["accessToken"]
        stored = {o["orderId"] for o in every_page(api, "/orders", {"Authorization": f"Bearer {token}"})}
    assert len(acknowledged) >= 300
    assert set(acknowledged) <= stored
