"""Issue 13 item 8: the edge refuses the regions' internal endpoints however their path is spelled.

The block is checked on the decoded path, as the region routes it: `/api/%72eplication/...` is
`/replication/...` to the region. A recording server stands in for each region's API, so the test sees
what reached a region, not only what the edge answered.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from bookstore.edge.app import EdgeApp
from tests.support.regions import isolated_topology


@pytest.fixture
def reached(tmp_path: Path) -> Iterator[tuple[TestClient, list[str]]]:
    """An edge (in process, no health checks) over recording region APIs; the paths they received."""
    topology, _ = isolated_topology(tmp_path / "topology.toml")
    paths: list[str] = []

    class Recorder(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
            body = b'{"books": []}'
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *_: object) -> None:
            pass

    servers = [ThreadingHTTPServer((r.address, r.api_port), Recorder) for r in topology.regions]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    try:
        yield TestClient(EdgeApp(topology, dns=False), base_url=topology.edge.url), paths
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_percent_encoded_internal_paths_do_not_reach_a_region(reached: tuple[TestClient, list[str]]) -> None:
    edge, paths = reached
    for path in (
        "/api/replication/tables/follow",
        "/api/%72eplication/tables/follow",
        "/api/%72%65%70%6c%69%63%61%74%69%6f%6e/tables/follow",
        "/api/_replication/objects",
        "/api/%5Freplication/objects",
        "/api/%5freplication/objects",
        "/api/%5F%72eplication/objects",
    ):
        for method in ("GET", "POST"):
            answer = edge.request(method, path)
            assert answer.status_code == 404, (method, path, answer.status_code, answer.text)
            assert answer.json()["error"] == "NotFound"
    assert paths == []
    # The recorders do see what the edge forwards.
    assert edge.get("/api/books").status_code == 200
    assert paths == ["/books"]
