"""What power-loss durability costs: POST /orders and S3 PUT (4 KiB, 1 MiB) under each setting, one run.

A region process is started twice on a fresh data directory, once with `[storage] durability =
"process"` and once with "power", and driven the same way each time; the figures are the throughput
under each and their ratio power/process (the anchor is the same server with the default setting).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.loadgen import cores
from bench.objects import Target, one_region_topology, s3_client
from bench.report import BenchError, Figure, Section
from bench.servers import running
from bookstore.config import Topology

BIN = Path(sys.executable).parent
REGION = "eu-west-1"
ACCESS_KEY, SECRET_KEY = "durability-bench", "durability-bench-secret"
EMAIL, PASSWORD = "durable@bench.example", "bench-password-42"
SETTINGS = ("process", "power")
CLIENTS = 8
ROUNDS = 2
KIB, MIB = 1024, 1024 * 1024


@dataclass(frozen=True)
class Rate:
    """Operations completed by CLIENTS threads in a window, and their median latency."""

    ops: int
    seconds: float
    median_ms: float

    @property
    def per_s(self) -> float:
        return self.ops / self.seconds


def _drive(step: Callable[[int, int], None], seconds: float) -> Rate:
    """Run `step(client, n)` in CLIENTS threads for `seconds`; any failure fails the figure."""
    latencies: list[list[float]] = [[] for _ in range(CLIENTS)]
    errors: list[str] = []
    deadline = time.monotonic() + seconds

    def loop(client: int) -> None:
        n = 0
        while time.monotonic() < deadline and not errors:
            started = time.monotonic()
            try:
                step(client, n)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            latencies[client].append((time.monotonic() - started) * 1000)
            n += 1

    started = time.monotonic()
    threads = [threading.Thread(target=loop, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    if errors:
        raise BenchError(errors[0])
    flat = [x for per in latencies for x in per]
    return Rate(len(flat), elapsed, statistics.median(flat) if flat else float("nan"))


@contextmanager
def region(work: Path, durability: str, core: int | None) -> Iterator[Topology]:
    """One region process with `durability`, seeded, with one confirmed user; stopped afterwards."""
    home = work / durability
    home.mkdir()
    address = "127.0.0.1"
    topology_file = one_region_topology(
        home / "topology.toml",
        REGION,
        address,
        ACCESS_KEY,
        SECRET_KEY,
        ["[storage]", f'durability = "{durability}"'],
    )
    common = ["--data-dir", str(home / "data"), "--topology", str(topology_file)]
    for argv in (["seed"], ["users", "add", EMAIL, "--password", PASSWORD]):
        subprocess.run([str(BIN / "bookstore"), *argv, *common], check=True, capture_output=True)
    topology = Topology.load(topology_file)
    argv = [str(BIN / "bookstore"), "region", "serve", "--region", REGION, *common]
    with running(argv, f"{topology.home.api_url}/health", home / "region.log", core=core):
        yield topology


def orders(topology: Topology, seconds: float) -> Rate:
    base = topology.home.api_url
    token = httpx.post(f"{base}/auth/signin", json={"email": EMAIL, "password": PASSWORD}, timeout=30)
    auth = {"Authorization": f"Bearer {token.raise_for_status().json()['accessToken']}"}
    book = httpx.get(f"{base}/books", timeout=30).raise_for_status().json()[0]["id"]
    clients = [httpx.Client(base_url=base, headers=auth, timeout=30) for _ in range(CLIENTS)]
    body = {"books": [{"bookId": book, "quantity": 1}]}

    def place(client: int, _: int) -> None:
        answer = clients[client].post("/orders", json=body)
        if answer.status_code != 201:
            raise BenchError(f"POST /orders answered {answer.status_code}: {answer.text[:200]}")

    try:
        return _drive(place, seconds)
    finally:
        for c in clients:
            c.close()


def puts(topology: Topology, size: int, seconds: float) -> Rate:
    target = Target("region", topology.home.s3_url, REGION, ACCESS_KEY, SECRET_KEY)
    s3 = s3_client(target, CLIENTS)
    bucket = f"durability-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    payload = os.urandom(size)

    def put(client: int, n: int) -> None:
        s3.put_object(Bucket=bucket, Key=f"{client}/{n}", Body=payload)

    return _drive(put, seconds)


def run_bench() -> Section:
    seconds = float(os.environ.get("BENCH_DURABILITY_SECONDS", "5"))
    server_core, _ = cores()
    measured: dict[str, dict[str, Rate]] = {d: {} for d in SETTINGS}
    with tempfile.TemporaryDirectory(prefix="bookstore-bench-durability-") as tmp:
        # The settings alternate, ROUNDS times each, and each keeps its best window: a busy moment of a
        # shared machine then lowers one window, not the ratio.
        for round_ in range(ROUNDS):
            for durability in SETTINGS:
                work = Path(tmp) / f"round-{round_}"
                work.mkdir(exist_ok=True)
                with region(work, durability, server_core) as topology:
                    for op, rate in (
                        ("POST /orders", orders(topology, seconds)),
                        ("S3 PUT 4 KiB", puts(topology, 4 * KIB, seconds)),
                        ("S3 PUT 1 MiB", puts(topology, MIB, seconds)),
                    ):
                        best = measured[durability].get(op)
                        if best is None or rate.per_s > best.per_s:
                            measured[durability][op] = rate
    figures: list[Figure] = []
    for op in measured["process"]:
        process, power = measured["process"][op], measured["power"][op]
        for durability, rate in (("process", process), ("power", power)):
            figures.append(
                Figure(
                    f"{op}, durability {durability}",
                    rate.per_s,
                    "op/s",
                    note=f"{rate.ops} in {rate.seconds:.1f} s, median {rate.median_ms:.1f} ms",
                )
            )
        figures.append(Figure(f"{op}, power / process", power.per_s / process.per_s, "ratio"))
    return Section(
        module="durability",
        title="Durability: process (kill -9) against power (power loss)",
        figures=figures,
        method=" ".join(
            (
                "One region process (`bookstore region serve`) on a fresh data directory, once with",
                '`[storage] durability = "process"` and once with "power", in the same run; each driven',
                f"by {CLIENTS} client threads for {seconds:.0f} s per operation, the two settings",
                f"alternating {ROUNDS} times each, each keeping its best window: POST /orders (a new order",
                "each, no Idempotency-Key) through the API, then S3 PUTs of 4 KiB (stored inline in",
                "SQLite) and 1 MiB (a blob file) with boto3. Concurrent orders and concurrent S3 PUTs",
                "share group commits, so under power one fsync of the WAL serves several (under power",
                "the object store runs in worker threads, where PUTs join one commit; each blob file",
                "still has its own fsync). The ratio power/process is the cost.",
                "Any failed request fails the figure.",
            )
        ),
        context={"Disk": _disk(Path(tempfile.gettempdir()))},
    )


def _disk(path: Path) -> str:
    done = subprocess.run(["df", "-T", str(path)], capture_output=True, text=True, check=False)
    lines = done.stdout.splitlines()
    if len(lines) < 2:
        return "unknown"
    fields = lines[1].split()
    return f"{fields[1]} on {fields[0]} (temporary directory {path})"
