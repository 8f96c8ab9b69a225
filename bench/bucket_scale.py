"""Objects at scale: ListObjectsV2 pages in a bucket of 10k, 100k and 1M objects, a region's memory at
each size, and how fast a burst of small objects replicates to another region."""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx

from bench.loadgen import cores
from bench.objects import (
    ACCESS_KEY,
    BIN,
    SECRET_KEY,
    Target,
    cpu_seconds,
    one_region_topology,
    replicate_every_version,
    s3_client,
)
from bench.procstat import memory_mib
from bench.report import BenchError, Figure, Goal, PartialResult, Section, format_number
from bench.servers import control, end_process, pin_threads, running, set_link_delay
from bookstore.config import Topology
from bookstore.kernel.clock import SystemClock
from bookstore.runtime.secret import operator_token, s3_credentials
from bookstore.storage.local.objects import LocalObjectStore
from bookstore.supervisor.launch import LaunchError, launched, loopback_topology

SOURCE, DEST = "eu-west-1", "ap-southeast-1"
QUICK = os.environ.get("BENCH") == "quick"
# BENCH=quick stops at 100k objects in the bucket and a burst of 10k.
SIZES = (10_000, 100_000) if QUICK else (10_000, 100_000, 1_000_000)
# BENCH_BURST=<n> sets the burst's size; BENCH_BUCKET_SCALE=burst runs the burst alone (no listing), so
# that replication can be measured before and after a change in a few minutes.
BURST = int(os.environ.get("BENCH_BURST", 10_000 if QUICK else 100_000))
BURST_ONLY = os.environ.get("BENCH_BUCKET_SCALE") == "burst"
BODY = b"b" * 100
BUCKET = "bigbucket"
# Keys spread over ten prefixes, p0/ .. p9/ (i % 10), each key numbered: listing order is not write order.
PREFIXES = 10
PAGE = 1000
REQUESTS = 100
WARMUP = 5
# The intent is costs that stay flat: a page's p99 at the largest bucket within 2 x its p99 at 10k.
FLAT_GOAL = 2.0
# Objects put through the store per group commit while filling (SqliteEngine.run_group).
FILL_GROUP = 5_000
# The bench waits this long for a burst (a slow replicator must not hold the whole run).
BURST_TIMEOUT_S = 300.0 if QUICK else 600.0
POLL_S = 0.1
# A region just started catches up on its own work (stream consumers, sweeps) for a moment.
SETTLE_S = 3.0


def key_of(i: int) -> str:
    return f"p{i % PREFIXES}/{i:07d}"


def fill(root: Path, bucket: str, start: int, stop: int, *, create: bool) -> float:
    """Put objects start..stop-1 (BODY each) into `bucket` of the store at `root`; seconds taken.

    Through the store's own write path, `LocalObjectStore.put_object` (the call a PUT makes: key check,
    encryption at rest, MD5, the version row, PENDING when a replication rule covers it), its calls run
    FILL_GROUP at a time in one transaction of the store's engine (`engine.run_group`, each call a
    savepoint), so the fill pays one commit per group instead of one per object.
    """
    started = time.perf_counter()
    store = LocalObjectStore(root, SOURCE, SystemClock())
    try:
        if create:
            store.create_bucket(bucket)
        for first in range(start, stop, FILL_GROUP):
            units = [
                partial(store.put_object, bucket, key_of(i), BODY)
                for i in range(first, min(stop, first + FILL_GROUP))
            ]
            for outcome in store.engine.run_group(units):
                if outcome.error is not None:
                    raise outcome.error
    finally:
        store.close()
    return time.perf_counter() - started


def count_objects(db_path: Path, bucket: str) -> int:
    """Versions of `bucket` in a store's metadata, read from a read-only connection (the owner runs)."""
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)) as conn:
        row = conn.execute("SELECT count(*) FROM versions WHERE bucket = ?", (bucket,)).fetchone()
    return int(row[0])


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of the values at or below it."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# -- listing pages --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """One kind of ListObjectsV2 request: its label, its parameters, and how many entries it must hold."""

    label: str
    params: dict[str, object]
    entries: int


def pages(client: object, bucket: str) -> list[Page]:
    """The requests measured: first page, a middle page (by continuation token), a prefix's page and a
    delimiter page (the ten prefixes rolled up)."""
    start_after = {"Bucket": bucket, "MaxKeys": 1, "StartAfter": f"p{PREFIXES // 2}/"}
    token = client.list_objects_v2(**start_after)["NextContinuationToken"]  # type: ignore[attr-defined]
    return [
        Page("first page", {"Bucket": bucket, "MaxKeys": PAGE}, PAGE),
        Page(
            "middle page (continuation token)",
            {"Bucket": bucket, "MaxKeys": PAGE, "ContinuationToken": token},
            PAGE,
        ),
        Page("prefix page (Prefix p7/)", {"Bucket": bucket, "MaxKeys": PAGE, "Prefix": "p7/"}, PAGE),
        Page(
            "delimiter page (Delimiter /)",
            {"Bucket": bucket, "MaxKeys": PAGE, "Delimiter": "/"},
            PREFIXES,
        ),
    ]


def time_page(http: httpx.Client, url: str, page: Page, pid: int) -> tuple[list[float], float]:
    """Milliseconds of REQUESTS GETs of one presigned ListObjectsV2 URL, each to the last byte read, and
    the region's CPU milliseconds per request over them (all its threads, from /proc)."""
    latencies = []
    cpu_before = 0.0
    for n in range(WARMUP + REQUESTS):
        sent = time.perf_counter()
        answer = http.get(url)
        body = answer.content
        elapsed = (time.perf_counter() - sent) * 1000
        if answer.status_code != 200:
            raise BenchError(f"{page.label}: ListObjectsV2 answered {answer.status_code}: {body[:300]!r}")
        if n == 0:
            entries = body.count(b"<Key>") + body.count(b"<CommonPrefixes>")
            if entries != page.entries:
                raise BenchError(f"{page.label}: {entries} entries in the page, {page.entries} expected")
        if n >= WARMUP:
            latencies.append(elapsed)
        if n == WARMUP - 1:
            cpu_before = cpu_seconds(pid)
    return latencies, (cpu_seconds(pid) - cpu_before) * 1000 / REQUESTS


@dataclass(frozen=True)
class SizeRun:
    """What one bucket size gave: latencies per page kind, the region's memory, the fill's seconds."""

    size: int
    latencies: dict[str, list[float]]
    cpu_ms: dict[str, float]
    rss_mib: float
    hwm_mib: float
    fill_s: float
    db_mib: float


def measure_size(work: Path, topology: Path, size: int, fill_s: float, server: int | None) -> SizeRun:
    """Start the region on the filled data directory and time each kind of page through its S3 API."""
    region = Topology.load(topology).region(SOURCE)
    argv = [str(BIN / "bookstore"), "region", "serve", "--region", SOURCE]
    argv += ["--data-dir", str(work / "region-data"), "--topology", str(topology)]
    with running(argv, f"{region.api_url}/health", work / f"region-{size}.log", core=server) as proc:
        target = Target("region", region.s3_url, SOURCE, ACCESS_KEY, SECRET_KEY, proc.pid)
        time.sleep(SETTLE_S)
        client = s3_client(target, 1)
        latencies: dict[str, list[float]] = {}
        cpu_ms: dict[str, float] = {}
        with httpx.Client(timeout=60) as http:
            for page in pages(client, BUCKET):
                url = client.generate_presigned_url("list_objects_v2", Params=page.params, ExpiresIn=3600)
                latencies[page.label], cpu_ms[page.label] = time_page(http, url, page, proc.pid)
        rss, hwm = memory_mib(proc.pid)
    db = work / "region-data" / SOURCE / "objects" / "objects.sqlite3"
    return SizeRun(size, latencies, cpu_ms, rss, hwm, fill_s, db.stat().st_size / 2**20)


def listing_runs(work: Path, server: int | None) -> list[SizeRun]:
    work.mkdir(parents=True, exist_ok=True)
    topology = one_region_topology(work / "region.toml", SOURCE, "127.0.0.1", ACCESS_KEY, SECRET_KEY)
    root = work / "region-data" / SOURCE / "objects"
    runs: list[SizeRun] = []
    filled = 0
    for size in SIZES:
        fill_s = fill(root, BUCKET, filled, size, create=filled == 0)
        filled = size
        runs.append(measure_size(work, topology, size, fill_s, server))
    return runs


def _size(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"


def listing_figures(runs: Sequence[SizeRun]) -> list[Figure]:
    figures: list[Figure] = []
    for run in runs:
        for label, values in run.latencies.items():
            figures.append(
                Figure(
                    f"ListObjectsV2 {label}, {_size(run.size)} objects: p50",
                    percentile(values, 0.5),
                    "ms",
                )
            )
            figures.append(
                Figure(
                    f"ListObjectsV2 {label}, {_size(run.size)} objects: p99",
                    percentile(values, 0.99),
                    "ms",
                    note=f"max {max(values):.1f} ms over {len(values)} requests",
                )
            )
            figures.append(
                Figure(
                    f"ListObjectsV2 {label}, {_size(run.size)} objects: region CPU per request",
                    run.cpu_ms[label],
                    "ms",
                )
            )
    small, large = runs[0], runs[-1]
    for label in small.latencies:
        before, after = percentile(small.latencies[label], 0.99), percentile(large.latencies[label], 0.99)
        figures.append(
            Figure(
                f"ListObjectsV2 {label}: p99 at {_size(large.size)} / p99 at {_size(small.size)}",
                after / before,
                "x",
                Goal.maximum(FLAT_GOAL),
                note=(
                    f"{before:.1f} ms at {_size(small.size)}, {after:.1f} ms at {_size(large.size)}; the "
                    f"region's CPU per request {small.cpu_ms[label]:.1f} ms at {_size(small.size)}, "
                    f"{large.cpu_ms[label]:.1f} ms at {_size(large.size)} "
                    f"({large.cpu_ms[label] / small.cpu_ms[label]:.2f} x)"
                ),
            )
        )
    for run in runs:
        figures.append(
            Figure(
                f"Region process RSS with {_size(run.size)} objects in a bucket",
                run.rss_mib,
                "MiB",
                note=(
                    f"VmRSS after the {sum(len(v) for v in run.latencies.values()):,} listing requests; "
                    f"peak (VmHWM) {run.hwm_mib:.0f} MiB; objects.sqlite3 {run.db_mib:.0f} MiB; the fill "
                    f"up to this size took {run.fill_s:.0f} s"
                ),
            )
        )
    return figures


# -- replication of a burst -------------------------------------------------------------------------------


@contextlib.contextmanager
def system_up(work: Path, source_core: int | None, dest_core: int | None) -> Iterator[tuple[Topology, Path]]:
    """`bookstore up` of two regions on an isolated loopback topology (no edge): the source region on one
    core, the destination and the supervisor (link simulator) on the other."""
    base = 1 + (os.getpid() % 100) * 2
    addresses = {SOURCE: f"127.206.{base}.1", DEST: f"127.206.{base + 1}.1"}
    topology_file = work / "up.toml"
    topology = loopback_topology(topology_file, f"127.206.{base}.250", addresses)
    data = work / "up-data"
    pids: set[int] = set()
    try:
        with launched(data, work / "up.log", topology_file) as proc:
            pin_threads(proc.pid, dest_core)
            _pin_regions(topology, data, {SOURCE: source_core, DEST: dest_core}, pids)
            yield topology, data
    except LaunchError as exc:
        raise BenchError(str(exc)) from None
    finally:
        for pid in pids:
            end_process(pid, data)


def _regions(topology: Topology, data: Path) -> dict[str, int]:
    """The pid of each running region, from the control API."""
    answer = control(topology.control_url, operator_token(data), "GET", "/regions")
    return {r["regionId"]: r["pid"] for r in answer["regions"] if r["running"]}


def _pin_regions(topology: Topology, data: Path, where: dict[str, int | None], pids: set[int]) -> None:
    for region_id, pid in _regions(topology, data).items():
        pids.add(pid)
        pin_threads(pid, where[region_id])


def _replicating_buckets(topology: Topology, data: Path) -> tuple[str, str]:
    """A versioned bucket in each region and a rule copying everything from the source's to the dest's."""
    access = s3_credentials(data, create=False)
    clients = {
        region: s3_client(
            Target(
                region, topology.region(region).s3_url, region, access.access_key_id, access.secret_access_key
            ),
            2,
        )
        for region in (SOURCE, DEST)
    }
    run = uuid.uuid4().hex[:6]
    buckets = {SOURCE: f"burst-src-{run}", DEST: f"burst-dst-{run}"}
    for region, bucket in buckets.items():
        client = clients[region]
        client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    replicate_every_version(clients[SOURCE], buckets[SOURCE], buckets[DEST])
    return buckets[SOURCE], buckets[DEST]


@dataclass(frozen=True)
class Burst:
    """One burst: how many were written and arrived, and when (seconds from the start call to the source
    region, monotonic): healthy again, first object seen at the destination, the last poll counted."""

    count: int
    arrived: int
    fill_s: float
    start_s: float
    first_s: float
    last_s: float
    # The longest time between two polls that found no new object at the destination (after the first).
    longest_stall_s: float
    source_cpu_s: float
    rss_mib: dict[str, tuple[float, float]]

    @property
    def complete(self) -> bool:
        return self.arrived >= self.count

    @property
    def drain_rate(self) -> float:
        span = self.last_s - self.first_s
        return self.arrived / span if span > 0 else math.nan

    @property
    def end_to_end_rate(self) -> float:
        return self.arrived / self.last_s if self.last_s > 0 else math.nan


def burst(work: Path, source_core: int | None, dest_core: int | None) -> Burst:
    with system_up(work, source_core, dest_core) as (topology, data):
        token = operator_token(data)
        set_link_delay(topology.control_url, token, SOURCE, DEST, 0.0)
        src_bucket, dst_bucket = _replicating_buckets(topology, data)
        dest_db = data / DEST / "objects" / "objects.sqlite3"
        control(topology.control_url, token, "POST", f"/regions/{SOURCE}/stop")
        fill_s = fill(data / SOURCE / "objects", src_bucket, 0, BURST, create=False)
        started = time.monotonic()
        control(topology.control_url, token, "POST", f"/regions/{SOURCE}/start")
        start_s = time.monotonic() - started
        _pin_regions(topology, data, {SOURCE: source_core, DEST: dest_core}, set())
        source_pid = _regions(topology, data)[SOURCE]
        cpu_before = cpu_seconds(source_pid)
        first_s = math.nan
        held, last_change, stall = 0, 0.0, 0.0
        while True:
            now = time.monotonic() - started
            count = count_objects(dest_db, dst_bucket)
            if count and math.isnan(first_s):
                first_s, last_change = now, now
            if count > held:
                if held:
                    stall = max(stall, now - last_change)
                held, last_change = count, now
            if held >= BURST or now > BURST_TIMEOUT_S:
                break
            time.sleep(POLL_S)
        cpu = cpu_seconds(source_pid) - cpu_before
        rss = {region: memory_mib(pid) for region, pid in _regions(topology, data).items()}
    if not held:
        raise BenchError(f"{DEST} held none of the {BURST:,} objects after {BURST_TIMEOUT_S:.0f} s")
    return Burst(BURST, held, fill_s, start_s, first_s, last_change, stall, cpu, rss)


def burst_figures(result: Burst) -> list[Figure]:
    label = (
        f"Object replication {SOURCE} -> {DEST}, a burst of {_size(result.count)} objects of {len(BODY)} B"
    )
    memory = "; ".join(
        f"{region} VmRSS {rss:.0f} MiB (peak {hwm:.0f} MiB)" for region, (rss, hwm) in result.rss_mib.items()
    )
    incomplete = (
        ""
        if result.complete
        else f"INCOMPLETE: {result.arrived:,} of {result.count:,} had arrived when the bench stopped waiting "
        f"({BURST_TIMEOUT_S:.0f} s after the start call); "
    )
    r = result
    parts = [
        f"{r.arrived:,} objects / {r.last_s - r.first_s:.1f} s from the first seen at {DEST} to the last",
        f"from the start call to the source region: healthy after {r.start_s:.1f} s, first object at {DEST} "
        f"after {r.first_s:.1f} s, last after {r.last_s:.1f} s "
        f"({format_number(r.end_to_end_rate)} objects/s end to end)",
        f"longest time with no new object at {DEST}: {r.longest_stall_s:.1f} s",
        f"the source region used {r.source_cpu_s:.0f} CPU-s meanwhile "
        f"({r.source_cpu_s * 1000 / max(r.arrived, 1):.1f} ms per object)",
        f"the burst was put into the stopped source's store in {r.fill_s:.0f} s",
        f"memory after the burst: {memory}",
    ]
    return [
        Figure(
            f"{label}: throughput",
            result.drain_rate,
            "objects/s",
            note=incomplete + "; ".join(parts),
        ),
    ]


METHOD = f"""
Listing: one region process alone (`bookstore region serve`, its S3 API on loopback, pinned to one
core; the client on the other). Its data directory is filled before it starts, while no process owns
it, through the store's own write path: `LocalObjectStore.put_object` (what an S3 PUT calls: key check,
encryption at rest, MD5, the version row), {FILL_GROUP:,} calls per transaction of the store's engine
(`store.engine.run_group`, each call a savepoint of one group commit). Objects are {len(BODY)} B each,
keys `p<i mod {PREFIXES}>/<i, 7 digits>` (ten prefixes, so key order is not write order). The bucket is
filled to {", ".join(_size(s) for s in SIZES)} objects in turn (the region stopped between sizes, the
same bucket grown), and at each size the region is started, left {SETTLE_S:g} s to settle, and each
kind of ListObjectsV2 request (MaxKeys {PAGE:,}) is sent {REQUESTS} times after {WARMUP} warm-up requests,
one at a time: the first page; a page from the middle (its ContinuationToken taken from a listing
with StartAfter `p{PREFIXES // 2}/`, half the keys sort before it); the first page of Prefix `p7/` (a
tenth of the keys); and Delimiter `/` (the ten prefixes rolled up into CommonPrefixes, each skipped
with a seek). Each request is a boto3-presigned URL (SigV4 query signature, checked by the region as
any other) sent by httpx; its latency runs from sending to the last byte of the answer read (the XML
is not parsed; the first answer of each kind is checked to hold {PAGE:,} keys, or {PREFIXES} prefixes).
p50 and p99 by nearest rank over the {REQUESTS} requests. Goal (the issue's intent, costs that stay
flat): each kind's p99 at the largest size within {FLAT_GOAL:g} x its p99 at 10k. RSS is the region's
VmRSS (and VmHWM, its peak since start) from /proc after the listing requests of that size. On a
shared machine a p99 mostly shows whoever else had the cores; the region's CPU per request (user +
system time of all its threads from /proc over the {REQUESTS} requests, divided by {REQUESTS}) is the
figure that load does not move much.

Replication: `bookstore up` of two regions on an isolated loopback topology (127.206.x; the link
simulator between them set to no delay through the control API; no edge), the source region on one
core, the destination and the supervisor on the other. A versioned bucket in each region, created
through the S3 API, and a replication rule on the source's covering
everything. The source region is stopped through the control API, the burst of {BURST:,} objects of
{len(BODY)} B is put into its bucket's store as above (so each version is queued PENDING by the store's
own rule check, as a PUT queues it), and the source is started again: its replicator finds the whole
burst queued at once. The store adapter is the writer, not the S3 API, so that the replicator alone
sets the pace (HTTP PUTs from clients on this 2-core machine would be the bottleneck and share the
cores with both regions). The destination's objects.sqlite3 is polled every {POLL_S * 1000:.0f} ms
(read-only connection, `count(*)` of the destination bucket's versions) until it holds all of them, for
at most {BURST_TIMEOUT_S:.0f} s. Throughput = objects arrived / (the poll that last found a new one - the
first poll finding any); a burst not whole by then is reported as measured, marked INCOMPLETE.
""".strip()


def run_bench() -> Section:
    first, second = cores()
    figures: list[Figure] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bookstore-bench-bucket-") as tmp:
        work = Path(tmp)
        try:
            if not BURST_ONLY:
                figures += listing_figures(listing_runs(work / "listing", first))
        except BenchError as exc:
            failures.append(f"listing: {exc}")
        try:
            (work / "burst").mkdir()
            result = burst(work / "burst", first, second)
            figures += burst_figures(result)
            if not result.complete:
                failures.append(
                    f"replication burst: {result.arrived:,} of {result.count:,} objects reached {DEST} "
                    f"within {BURST_TIMEOUT_S:.0f} s"
                )
        except BenchError as exc:
            failures.append(f"replication burst: {exc}")
    pinning = (
        f"region under test on core {first}, client on core {second}; for the burst, {SOURCE} on core "
        f"{first}, {DEST} and the supervisor on core {second} (taskset)"
        if first is not None
        else "not pinned (fewer than two cores available)"
    )
    section = Section(
        module="bucket_scale",
        title="Objects at scale: 10k, 100k and 1M in a bucket",
        figures=figures,
        method=METHOD,
        context={
            "Pinning": pinning,
            "Sizes": f"burst {BURST:,} only"
            if BURST_ONLY
            else ", ".join(f"{s:,}" for s in SIZES) + f"; burst {BURST:,}",
        },
    )
    if failures:
        if not figures:
            raise BenchError("\n".join(failures))
        raise PartialResult(section, failures)
    return section
