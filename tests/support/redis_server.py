"""A real redis-server for tests: started from the installed binary on a free loopback port, then stopped."""

from __future__ import annotations

import random
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import pytest
import redis

from tests.support.prerequisites import find_binary, require_binary

HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0


def redis_binary() -> str | None:
    return find_binary("redis-server")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _wait_until_ready(proc: subprocess.Popen[bytes], url: str) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                if client.ping():
                    return True
            except redis.RedisError:
                time.sleep(0.05)
        return False
    finally:
        client.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextmanager
def redis_server(port: int | None = None) -> Iterator[str]:
    """Start redis-server (no persistence, its own temporary dir); yields `redis://127.0.0.1:PORT/0`.

    Without the binary: skips the calling test, or fails it in CI (`CI=true`).
    """
    binary = require_binary("redis-server")
    with tempfile.TemporaryDirectory(prefix="bookstore-redis-") as tmp:
        # Another process may take the port between our probe and redis binding it: try a few ports.
        for _attempt in range(5):
            # A given port lets a test restart "the same" Redis, empty, under its clients.
            chosen = port or free_port()
            url = f"redis://{HOST}:{chosen}/0"
            proc = subprocess.Popen(
                [
                    binary,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--port",
                    str(chosen),
                    "--bind",
                    HOST,
                    "--dir",
                    tmp,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if _wait_until_ready(proc, url):
                try:
                    yield url
                finally:
                    _stop(proc)
                return
            _stop(proc)
        raise RuntimeError(f"redis-server ({binary}) did not answer PING on {HOST} after 5 attempts")


def redis_server_fixture(
    scope: Literal["session", "package", "module", "class", "function"] = "session",
) -> Any:
    """A pytest fixture (default session-scoped) yielding the URL of a real redis-server.

    Use as `redis_url = redis_server_fixture()` at module level of a test file or a conftest.py.
    """

    @pytest.fixture(scope=scope)
    def _fixture() -> Iterator[str]:
        with redis_server() as url:
            yield url

    return _fixture


def _cluster_port() -> int:
    """A free port whose cluster bus port (10,000 higher, so at most 55535) is free too."""
    for _ in range(100):
        port = random.randint(20000, 45000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.bind((HOST, candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


@contextmanager
def redis_cluster(nodes: int = 3) -> Iterator[str]:
    """A Redis Cluster of `nodes` primaries (slots spread by `redis-cli --cluster create`), as ElastiCache
    in cluster mode; yields the URL of one node (redis.cluster.RedisCluster finds the others)."""
    binary = require_binary("redis-server")
    cli = require_binary("redis-cli")
    with tempfile.TemporaryDirectory(prefix="bookstore-redis-cluster-") as tmp:
        procs: list[subprocess.Popen[bytes]] = []
        try:
            ports = [_cluster_port() for _ in range(nodes)]
            for port in ports:
                proc = subprocess.Popen(
                    [
                        binary,
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--port",
                        str(port),
                        "--bind",
                        HOST,
                        "--dir",
                        tmp,
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        f"nodes-{port}.conf",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                procs.append(proc)
                if not _wait_until_ready(proc, f"redis://{HOST}:{port}/0"):
                    raise RuntimeError(f"redis-server in cluster mode did not answer on {HOST}:{port}")
            subprocess.run(
                [
                    cli,
                    "--cluster",
                    "create",
                    *(f"{HOST}:{p}" for p in ports),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )
            # Every node must see the cluster whole: a command routed to a node that has not yet heard of
            # the others' slots answers "The cluster is down" (a CI flake when only the first node was asked).
            deadline = time.monotonic() + START_TIMEOUT_S
            for port in ports:
                client = redis.Redis(host=HOST, port=port)
                while client.cluster("info").get("cluster_state") != "ok":
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"Redis Cluster node {HOST}:{port} did not reach cluster_state:ok")
                    time.sleep(0.1)
                client.close()
            yield f"redis://{HOST}:{ports[0]}/0"
        finally:
            for proc in procs:
                _stop(proc)
