"""The edge's server facing hostile input: 4xx before any region sees it, and no way to steer it elsewhere.

The edge runs in this process (its uvicorn server with the edge's protocol) over a topology whose
regions are not running, beside a canary listener on another loopback address that must never be
reached, whatever the requests name.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from bookstore.config import Topology
from bookstore.edge.server import build, server_config
from bookstore.runtime.listeners import listening_socket
from bookstore.runtime.operator import login_link, operator_headers
from bookstore.runtime.secret import Credentials
from tests.support.regions import isolated_topology
from tests.support.threaded_server import serving

# The tests share one edge (a module fixture): one worker runs them all.
pytestmark = pytest.mark.xdist_group("edge-server")


@dataclass
class Edge:
    url: str
    host: str
    port: int
    topology: Topology
    token: str

    @property
    def operator(self) -> dict[str, str]:
        return operator_headers(self.token)

    def raw(self, request: bytes, timeout_s: float = 10.0) -> bytes:
        """Send bytes as they are; return what came back until the edge closed or went quiet."""
        with socket.create_connection((self.host, self.port), timeout=timeout_s) as s:
            s.sendall(request)
            chunks = []
            s.settimeout(2.0)
            try:
                while chunk := s.recv(65536):
                    chunks.append(chunk)
                    if b"\r\n\r\n" in b"".join(chunks) and not request.startswith(b"POST"):
                        break
            except (TimeoutError, ConnectionResetError):
                pass
        return b"".join(chunks)

    def status(self, request: bytes) -> int:
        answer = self.raw(request)
        assert answer.startswith(b"HTTP/1.1 "), answer[:200]
        return int(answer.split(b" ", 2)[1])


class Canary:
    """A TCP listener that counts connections: the edge must never open one to it."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.host, self.port = self.sock.getsockname()
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    topology, _ = isolated_topology(tmp_path_factory.mktemp("edge") / "topology.toml", edge="")
    credentials = Credentials.generate()
    app = build(topology, dns=False, credentials=credentials)
    sock = listening_socket(topology.edge.address, topology.edge.port)
    edge = topology.edge
    with serving(server_config(app), sock, wait_s=20):
        yield Edge(edge.url, edge.address, edge.port, topology, credentials.operator_token)


@pytest.fixture(scope="module")
def canary() -> Iterator[Canary]:
    c = Canary("127.0.0.1")
    yield c
    c.close()


def test_hostile_or_missing_host_headers_are_refused(edge: Edge) -> None:
    for host in (
        "evil.example",
        "169.254.169.254",
        f"{edge.host}:1",
        "bookstore.test.evil.example",
        "a" * 300,
    ):
        answer = httpx.get(edge.url + "/", headers={"Host": host})
        assert answer.status_code == 400, host
        assert answer.json()["error"] == "BadRequest"
    assert edge.status(b"GET / HTTP/1.0\r\n\r\n") == 400
    two = f"GET / HTTP/1.1\r\nHost: {edge.host}:{edge.port}\r\nHost: evil.example\r\n\r\n".encode()
    assert edge.status(two) == 400
    # The zone's names and the edge's own address are served (here: no region runs, so 502 or 503).
    for host in (
        "bookstore.test",
        f"api.bookstore.test:{edge.port}",
        f"{edge.host}:{edge.port}",
        "localhost",
    ):
        assert httpx.get(edge.url + "/api/truth", headers={"Host": host}).status_code in (502, 503)


def test_header_injection_and_smuggling_are_refused(edge: Edge) -> None:
    host = f"{edge.host}:{edge.port}".encode()
    cases = [
        b"GET /api/truth HTTP/1.1\r\nHost: "
        + host
        + b"\r\nX-Client-Region: eu-west-1\r\n evil: folded\r\n\r\n",
        b"GET /api/truth HTTP/1.1\r\nHost: " + host + b"\r\nX-Client-Region: eu\x00west\r\n\r\n",
        b"GET /api/truth HTTP/1.1\r\nHost: " + host + b"\r\nBad Header: x\r\n\r\n",
        b"POST /api/orders HTTP/1.1\r\nHost: " + host + b"\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /api/orders HTTP/1.1\r\nHost: "
        + host
        + b"\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
        b"POST /api/orders HTTP/1.1\r\nHost: " + host + b"\r\nContent-Length: -1\r\n\r\n",
    ]
    for request in cases:
        answer = edge.raw(request)
        assert answer.startswith(b"HTTP/1.1 400 "), request
        assert b'{"error":"BadRequest"' in answer  # JSON, like every error of the system


def test_absurd_paths_are_refused(edge: Edge) -> None:
    host = f"{edge.host}:{edge.port}".encode()
    for target in (
        b"/../../etc/passwd",
        b"/covers/%2e%2e/%2e%2e/secret",
        b"/api/books/%00",
        b"/a%0d%0aSet-Cookie:%20x=1",
        b"/covers\\..\\x",
        b"/covers/./x.svg",
        b"/" + b"x" * 1100,
    ):
        assert edge.status(b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n") == 400, target
    assert edge.status(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n") == 414
    # The regions' internal endpoints are not reachable through the edge.
    assert httpx.get(edge.url + "/api/replication/blog/state").status_code == 404
    assert httpx.post(edge.url + "/api/replication/faults", json={"api": "ok"}).status_code == 404


def test_oversized_headers_and_bodies_are_refused(edge: Edge) -> None:
    assert httpx.get(edge.url + "/", headers={"X-Big": "x" * 40_000}).status_code == 431
    many = {f"X-H{i}": "1" for i in range(150)}
    assert httpx.get(edge.url + "/", headers=many).status_code == 431
    host = f"{edge.host}:{edge.port}".encode()
    declared = b"POST /api/orders HTTP/1.1\r\nHost: " + host + b"\r\nContent-Length: 2000000\r\n\r\n"
    assert edge.status(declared) == 413
    big = httpx.post(edge.url + "/api/orders", content=iter([b"x" * 65536] * 20))  # chunked, 1.25 MiB
    assert big.status_code == 413
    assert big.json()["error"] == "PayloadTooLarge"


def test_methods_outside_the_records_are_refused(edge: Edge) -> None:
    assert httpx.request("TRACE", edge.url + "/api/truth").status_code == 405
    static = httpx.post(edge.url + "/index.html", content=b"x")
    assert static.status_code == 405 and static.headers["allow"] == "GET, HEAD, OPTIONS"
    assert httpx.request("OPTIONS", edge.url + "/index.html").status_code == 204


def test_the_edge_forwards_only_to_the_topology(edge: Edge, canary: Canary) -> None:
    target = f"{canary.host}:{canary.port}"
    host = f"{edge.host}:{edge.port}".encode()
    attempts = [
        b"GET http://" + target.encode() + b"/api/truth HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
        b"GET http://" + target.encode() + b"/api/truth HTTP/1.1\r\nHost: " + target.encode() + b"\r\n\r\n",
        b"GET /api/truth HTTP/1.1\r\nHost: " + host + b"\r\nX-Forwarded-Host: " + target.encode() + b"\r\n"
        b"Forwarded: host=" + target.encode() + b"\r\nX-Client-Region: " + target.encode() + b"\r\n\r\n",
        b"GET //" + target.encode() + b"/x HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
        b"GET /api//" + target.encode() + b"/truth HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
        b"CONNECT " + target.encode() + b" HTTP/1.1\r\nHost: " + target.encode() + b"\r\n\r\n",
    ]
    for request in attempts:
        answer = edge.raw(request)
        assert answer.startswith(b"HTTP/1.1 4") or answer.startswith(b"HTTP/1.1 5"), answer[:100]
        # Whatever answered, it was the edge or a region of the topology, never the canary.
        for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
            if line.lower().startswith(b"x-edge-origin:"):
                assert line.split(b":", 1)[1].strip().decode() in {r.id for r in edge.topology.regions}
    assert canary.connections == 0


def test_a_region_that_does_not_answer_gives_a_json_502_naming_it(edge: Edge) -> None:
    answer = httpx.get(edge.url + "/api/truth")
    assert answer.status_code == 502
    assert answer.json()["error"] == "BadGateway"
    assert answer.headers["x-edge-origin"] in {r.id for r in edge.topology.regions}
    static = httpx.get(edge.url + "/covers/x.svg")
    assert static.status_code == 502


def test_control_actions_refuse_cross_site_requests_and_callers_without_the_token(edge: Edge) -> None:
    url = edge.url + "/edge/control/regions/eu-west-1/kill"
    assert httpx.post(url, json={}).status_code == 401  # no token, no session
    assert httpx.post(url, json={}, headers={"Authorization": "Bearer a-guess"}).status_code == 401
    # A form post or a bare fetch: no JSON content type.
    assert httpx.post(url, headers=edge.operator).status_code == 415
    evil = httpx.post(url, json={}, headers={**edge.operator, "Origin": "http://evil.example"})
    assert evil.status_code == 403
    sibling = httpx.post(url, json={}, headers={**edge.operator, "Sec-Fetch-Site": "same-site"})
    assert sibling.status_code == 403
    assert httpx.post(edge.url + "/edge/control/regions/mars-1/kill", json={}).status_code == 404
    assert httpx.post(edge.url + "/edge/control/regions/eu-west-1/explode", json={}).status_code == 404
    # No supervisor runs here: a well-formed action says so.
    assert httpx.post(url, json={}, headers={**edge.operator, "Origin": edge.url}).status_code == 503
    assert httpx.get(edge.url + "/edge/nothing").json()["error"] == "NotFound"
    # What the edge serves of the regions' APIs is the shop's part: the rest is refused here.
    for path in (
        "/api/status?digest=true",
        "/api/metrics",
        "/api/docs",
        "/api/openapi.json",
        "/api/%73tatus",
    ):
        assert httpx.get(edge.url + path).status_code == 404, path


def test_the_operator_page_signs_in_once_per_link_and_its_session_opens_the_operator_endpoints(
    edge: Edge,
) -> None:
    page = httpx.get(edge.url + "/edge/ui/")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    for path in ("/edge/status", "/edge/metrics", "/edge/overview"):
        assert httpx.get(edge.url + path).status_code == 401, path
    code = login_link(edge.url, edge.token).split("#login=", 1)[1]
    assert httpx.post(edge.url + "/edge/login", content=f'{{"code": "{code}"}}').status_code == 415
    foreign = httpx.post(
        edge.url + "/edge/login", json={"code": code}, headers={"Origin": "http://evil.example"}
    )
    assert foreign.status_code == 403
    signed_in = httpx.post(edge.url + "/edge/login", json={"code": code}, headers={"Origin": edge.url})
    assert signed_in.status_code == 200, signed_in.text
    session = signed_in.json()["session"]
    assert httpx.post(edge.url + "/edge/login", json={"code": code}).status_code == 401  # once
    assert httpx.post(edge.url + "/edge/login", json={"code": "login.1.2.3"}).status_code == 401
    assert httpx.post(edge.url + "/edge/login", json=["not", "an", "object"]).status_code == 400
    status = httpx.get(edge.url + "/edge/status", headers={"Authorization": f"Bearer {session}"})
    assert status.status_code == 200 and status.json()["targets"]


def test_status_and_metrics_describe_targets_records_and_refusals(edge: Edge) -> None:
    # A refusal of its own, so the count below does not depend on which tests ran before on this edge.
    assert httpx.get(edge.url + "/api/openapi.json").status_code == 404
    status = httpx.get(edge.url + "/edge/status", headers=edge.operator).json()
    ids = {t["id"] for t in status["targets"]}
    assert {"api:eu-west-1", "blog:eu-west-1", "s3:ap-southeast-1"} <= ids
    for t in status["targets"]:
        assert t["healthy"] is False and t["changes"] and t["changes"][0]["atMs"] > 0
    # Every target is down: the records answer as if all were healthy (Route 53's rule).
    assert status["routing"]["answers"]["static"] == "eu-west-1"
    assert status["counters"]["refused"] > 0
    metrics = httpx.get(edge.url + "/edge/metrics", headers=edge.operator).text
    assert 'bookstore_edge_target_healthy{region="eu-west-1",target="api:eu-west-1"} 0.0' in metrics
    assert "bookstore_edge_refused_total" in metrics


def test_the_edge_answers_with_the_request_id_the_clients_when_usable(edge: Edge) -> None:
    answer = httpx.get(edge.url + "/api/truth", headers={"X-Request-Id": "from-the-client"})
    assert answer.headers["x-request-id"] == "from-the-client"
    replaced = httpx.get(edge.url + "/api/truth", headers={"X-Request-Id": "x" * 65})
    assert len(replaced.headers["x-request-id"]) == 16
    refused = httpx.get(edge.url + "/api/replication/follow")
    assert refused.status_code == 404 and len(refused.headers["x-request-id"]) == 16
