"""A region's shutdown ends the replication streams it serves (tables and blog) instead of cancelling them."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from bookstore.region.compose import compose
from bookstore.runtime.listeners import listening_socket
from bookstore.runtime.listeners import server_config as region_config
from tests.support.link_simulator import links
from tests.support.regions import isolated_topology
from tests.support.threaded_server import serving
from tests.support.waiting import wait_for

EU, AP = "eu-west-1", "ap-southeast-1"


def _follows_eu(status: dict[str, Any]) -> bool:
    """Whether Singapore follows Ireland's tables and blog: two streams Ireland serves."""
    blog = (status.get("blog") or {}).get("peers", {}).get(EU, {})
    tables = (status.get("replication") or {}).get("peers", {}).get(EU, {})
    return bool(blog.get("connected") and tables.get("followed"))


def test_stopping_a_region_ends_the_blog_and_table_streams_it_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    topology, _ = isolated_topology(tmp_path / "topology.toml", edge="")
    data = tmp_path / "data"
    with ExitStack() as stack:
        stack.enter_context(links(topology))
        served = {}
        for region_id in (EU, AP):
            composed = compose(topology, region_id, data)
            stack.callback(composed.services.close)
            region = topology.region(region_id)
            config = region_config(
                composed.app, lifespan="on", proxy_headers=False, timeout_graceful_shutdown=3
            )
            served[region_id] = (composed, config, listening_socket(region.address, region.api_port))
        composed_ap, config_ap, sock_ap = served[AP]
        stack.enter_context(serving(config_ap, sock_ap, 20))
        composed_eu, config_eu, sock_eu = served[EU]
        with serving(config_eu, sock_eu, 20):
            # Singapore follows Ireland's blog (Ireland is the primary) and its tables: two streams served.
            wait_for(
                "Singapore follows Ireland's blog and tables",
                lambda: httpx.get(topology.region(AP).api_url + "/status", timeout=5).json(),
                _follows_eu,
                timeout=60,
            )
            caplog.set_level(logging.INFO, logger="uvicorn.error")
            caplog.clear()
            # As the region process does when shutdown begins (region.process._RegionServer.handle_exit).
            composed_eu.end_streams()
        cancelled = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert cancelled == [], f"streams were cancelled at shutdown, not ended: {cancelled}"
        composed_ap.end_streams()
