"""Issue 13, items 2 (the authentication side) and 7: requests between regions, attacked.

Item 2: a large body sent without a signature, to the S3 port's internal object path and to the API
port's replication path, is refused with 401 before the region reads it (the answer comes back while
the attacker has sent nothing but headers) and the region's memory (VmRSS) does not grow while the
attacker streams hundreds of MiB at it; a signed request declaring a body over the route's limit gets
413 at once, before any of it is read.
Item 7: a captured signed request (an operator's fault switch, a table replication call, a blog call,
an object-store call) is refused when replayed to the region it was meant for, and refused by any other
region; the edge drops the signing headers from shoppers' requests.
"""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from bookstore.edge.requests import inspect
from bookstore.edge.server import build
from bookstore.kernel.auth import SIGNING_HEADERS, sign
from bookstore.replication.objects.wire import (
    CUSTOMER_KEY_HEADER,
    OBJECTS_PATH,
    PING_PATH,
    digest,
    encode_fields,
)
from bookstore.runtime.secret import Credentials
from bookstore.runtime.switches import FAULTS_PATH, OPERATOR
from tests.support.regions import System, isolated_topology, system_up

pytestmark = [pytest.mark.system, pytest.mark.xdist_group("security-peers")]

EU, AP = "eu-west-1", "ap-southeast-1"
MiB = 1 << 20


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with system_up(tmp_path_factory.mktemp("peers")) as running:
        yield running


def secret(system: System) -> str:
    return (system.data_dir / "secret").read_text().strip()


def now_ms() -> int:
    return int(time.time() * 1000)


def rss_kib(system: System, region: str) -> int:
    """The region process's resident memory, from /proc."""
    pids = {r["regionId"]: r["pid"] for r in system.control("GET", "/regions")["regions"]}
    for line in Path(f"/proc/{pids[region]}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def head(method: str, target: str, host: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def answer_to_headers_alone(address: tuple[str, int], request_head: bytes) -> int:
    """Send only the request's headers (none of its declared body) and return the status answered."""
    with socket.create_connection(address, timeout=10) as s:
        s.sendall(request_head)
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            pytest.fail("no answer while the body was held back: the server waits to read it first")
    assert data.startswith(b"HTTP/1.1 "), data[:200]
    return int(data.split(b" ", 2)[1])


def stream_at(address: tuple[str, int], request_head: bytes, total: int) -> int:
    """Send the headers, then up to `total` bytes of body, 1 MiB at a time made as needed; bytes sent."""
    chunk = b"x" * MiB
    sent = 0
    with socket.create_connection(address, timeout=10) as s:
        s.sendall(request_head)
        try:
            while sent < total:
                s.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
    return sent


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    return host, int(port)


def test_an_unsigned_large_body_is_refused_before_it_is_read(system: System) -> None:
    ap = system.topology.region(AP)
    targets = [
        (address(ap.s3_url), "PUT", f"{OBJECTS_PATH}?version=x", 512 * MiB),
        (address(ap.api_url), "POST", "/replication/push", 256 * MiB),
    ]
    for where, method, target, size in targets:
        host = f"{where[0]}:{where[1]}"
        request = head(method, target, host, {"Content-Length": str(size)})
        assert answer_to_headers_alone(where, request) == 401, target
        before = rss_kib(system, AP)
        sent = stream_at(where, request, size)
        grown = rss_kib(system, AP) - before
        # Refused and closed at once: the attacker could not even send it all, and nothing was held.
        assert sent < size, target
        assert grown < 32 * 1024, (target, grown)
        # Nor did a body without a declared length get further.
        chunked = head(method, target, host, {"Transfer-Encoding": "chunked"})
        assert answer_to_headers_alone(where, chunked) == 401, target
    with system.api(AP) as api:
        assert api.get("/health").status_code == 200


def test_a_signed_request_over_the_route_limit_gets_413_before_it_is_read(system: System) -> None:
    ap, key = system.topology.region(AP), secret(system)
    for url, method, target, size in (
        (ap.api_url, "POST", "/replication/push", 65 * MiB),
        (ap.s3_url, "PUT", f"{OBJECTS_PATH}?version=x", 6 * 1024 * MiB),
    ):
        where = address(url)
        signed = sign(key, method, target, b"", EU, now_ms(), AP)
        request = head(method, target, f"{where[0]}:{where[1]}", {**signed, "Content-Length": str(size)})
        assert answer_to_headers_alone(where, request) == 413, target


def test_a_captured_fault_switch_is_refused_when_replayed_or_sent_to_another_region(system: System) -> None:
    body = orjson.dumps({"api": "ok"})
    captured = sign(secret(system), "POST", FAULTS_PATH, body, OPERATOR, now_ms(), EU)
    with system.api(EU) as eu, system.api(AP) as ap:
        first = eu.post(FAULTS_PATH, content=body, headers=captured)
        assert first.status_code == 200, first.text
        replayed = eu.post(FAULTS_PATH, content=body, headers=captured)
        assert replayed.status_code == 401, replayed.text
        assert "accepted before" in replayed.json()["message"]
        elsewhere = ap.post(FAULTS_PATH, content=body, headers=captured)
        assert elsewhere.status_code == 403, elsewhere.text
        assert "signed for eu-west-1" in elsewhere.json()["message"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/replication/follow", orjson.dumps({"peer": EU, "after": 0, "streamMs": 0})),
        ("GET", "/replication/blog/state", b""),
    ],
    ids=["tables", "blog"],
)
def test_a_captured_replication_call_is_accepted_once_and_only_where_it_was_sent(
    system: System, method: str, path: str, body: bytes
) -> None:
    captured = sign(secret(system), method, path, body, EU, now_ms(), AP)
    with system.api(AP) as ap, system.api(EU) as eu:
        first = ap.request(method, path, content=body, headers=captured)
        assert first.status_code == 200, first.text
        replayed = ap.request(method, path, content=body, headers=captured)
        assert replayed.status_code == 401, replayed.text
        elsewhere = eu.request(method, path, content=body, headers=captured)
        assert elsewhere.status_code == 403, elsewhere.text


def test_a_captured_object_store_call_is_accepted_once_and_only_where_it_was_sent(system: System) -> None:
    captured = sign(secret(system), "GET", PING_PATH, b"", EU, now_ms(), AP)
    ap_s3, eu_s3 = system.topology.region(AP).s3_url, system.topology.region(EU).s3_url
    first = httpx.get(ap_s3 + PING_PATH, headers=captured)
    assert first.status_code == 200, first.text
    assert httpx.get(ap_s3 + PING_PATH, headers=captured).status_code == 401
    assert httpx.get(eu_s3 + PING_PATH, headers=captured).status_code == 403


def test_the_edge_drops_the_signing_headers_of_shoppers(tmp_path: Path) -> None:
    topology, _ = isolated_topology(tmp_path / "topology.toml", edge="")
    edge = build(topology, dns=False, credentials=Credentials.generate())
    host = f"{topology.edge.address}:{topology.edge.port}".encode()
    sent = [(b"host", host)] + [(name.lower().encode(), b"forged") for name in SIGNING_HEADERS]
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/books",
        "raw_path": b"/api/books",
        "query_string": b"",
        "headers": sent,
    }
    forwarded = {name for name, _ in inspect(scope, edge.allowed_hosts, edge.settings.url).forward}
    assert not forwarded & {name.lower().encode() for name in SIGNING_HEADERS}


def test_a_copy_source_key_between_regions_is_bound_to_the_signed_request(system: System) -> None:
    # The SSE-C key of a copy source read from another region travels in a header; the signed query
    # holds its digest, so one swapped on the way is refused before the store is asked anything.
    sent = encode_fields({"key": base64.b64encode(b"k" * 32).decode(), "md5": "x"})
    swapped = encode_fields({"key": base64.b64encode(b"o" * 32).decode(), "md5": "y"})
    target = f"{OBJECTS_PATH}?bucket=any-bucket&key=k&sseKey={digest(sent)}"
    signed = sign(secret(system), "GET", target, b"", EU, now_ms(), AP)
    answer = httpx.get(
        system.topology.region(AP).s3_url + target, headers={**signed, CUSTOMER_KEY_HEADER: swapped}
    )
    assert answer.status_code == 400, answer.text
    assert "does not match the signed request" in answer.text
