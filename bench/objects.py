"""Object store figures: one region's S3 API beside moto's S3 server, and replication latency over a link.

Throughput: the same boto3 client setup drives each server in turn from several client processes
(threads in each), PUT then GET, at 4 KiB (objects/s) and 8 MiB (MB/s). Replication latency: under
`bookstore up` with the link at 85 ms one way, a PUT at the source until the version is readable at
the destination's own S3 endpoint, for objects up to 1 MiB.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import httpx

from bench import loadgen, procstat
from bench.loadgen import cores
from bench.report import BenchError, Figure, Goal, PartialResult, Section, format_number
from bench.servers import running, set_link_delay
from bookstore.config import Topology
from bookstore.runtime.secret import operator_token, s3_credentials
from bookstore.supervisor.launch import LaunchError, free_port, launched, loopback_topology

SOURCE, DEST = "eu-west-1", "ap-southeast-1"
KIB, MIB = 1024, 1024 * 1024
SMALL, LARGE = 4 * KIB, 8 * MIB
# The upload whose memory cost is measured: a region spools it to disk, so it holds a few MiB of it.
HUGE = 256 * MIB
BIN = Path(sys.executable).parent
ACCESS_KEY, SECRET_KEY = "AKIABOOKSTOREBENCH01", "bookstore-bench-secret-key"
DELAY_MS = 85.0
# The goals.
SMALL_RATIO_GOAL = 3.0
LATENCY_MARGIN_MS = 150.0
REPLICATION_SIZES = (1 * KIB, 64 * KIB, 1 * MIB)
POLL_S = 0.003


@dataclass(frozen=True)
class Shape:
    """How the clients push: processes x threads, each thread one request at a time, for `seconds`."""

    processes: int
    threads: int
    seconds: float
    warmup_s: float

    @classmethod
    def for_size(cls, size: int) -> Shape:
        seconds = float(os.environ.get("BENCH_OBJECTS_SECONDS", "5"))
        if size <= 64 * KIB:
            return cls(processes=4, threads=4, seconds=seconds, warmup_s=1.0)
        return cls(processes=4, threads=1, seconds=seconds, warmup_s=1.0)

    def describe(self) -> str:
        return (
            f"{self.processes} client processes x {self.threads} threads, "
            f"{self.seconds:g} s after {self.warmup_s:g} s of warm-up"
        )


@dataclass(frozen=True)
class Rate:
    """Requests completed in the measured window, their bytes, and the server's CPU time in that window."""

    ops: int
    bytes: int
    seconds: float
    server_cpu_s: float

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6

    @property
    def busy(self) -> float:
        """How much of its core the server used (1.0: saturated)."""
        return self.server_cpu_s / self.seconds

    @property
    def ops_per_cpu_s(self) -> float:
        return self.ops / self.server_cpu_s if self.server_cpu_s > 0 else float("nan")

    @property
    def mb_per_cpu_s(self) -> float:
        return self.bytes / 1e6 / self.server_cpu_s if self.server_cpu_s > 0 else float("nan")


@dataclass(frozen=True)
class Target:
    """A server under test and the credentials the client signs with."""

    label: str
    endpoint: str
    region: str
    access_key: str
    secret_key: str
    # The server's process, whose CPU time is read around each window.
    pid: int | None = None


def s3_client(target: Target, pool: int) -> Any:
    """The one boto3 client setup every server is driven with."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=target.endpoint,
        region_name=target.region,
        aws_access_key_id=target.access_key,
        aws_secret_access_key=target.secret_key,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            # Checksums only where S3 requires them: less client CPU for both servers alike.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=max(10, pool),
            connect_timeout=10,
            read_timeout=60,
        ),
    )


def replicate_every_version(client: Any, src_bucket: str, dst_bucket: str) -> None:
    """One replication rule on `src_bucket` (versioned) copying every new version to `dst_bucket`."""
    client.put_bucket_replication(
        Bucket=src_bucket,
        ReplicationConfiguration={
            "Role": "arn:aws:iam::000000000000:role/bench",
            "Rules": [
                {
                    "Status": "Enabled",
                    "Priority": 1,
                    "DeleteMarkerReplication": {"Status": "Disabled"},
                    "Filter": {},
                    "Destination": {"Bucket": f"arn:aws:s3:::{dst_bucket}"},
                }
            ],
        },
    )


def _drive(
    target: Target,
    bucket: str,
    op: str,
    size: int,
    shape: Shape,
    start_at: float,
    core: int | None,
    keys: Sequence[str],
    tag: str,
) -> tuple[int, int, int]:
    """One client process: `shape.threads` threads doing `op` until the window ends; (ops, bytes, errors)."""
    if core is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {core})
    client = s3_client(target, shape.threads)
    body = os.urandom(size)
    counted_from = start_at + shape.warmup_s
    until = counted_from + shape.seconds
    totals = [0, 0, 0]
    lock = threading.Lock()

    def work(thread: int) -> None:
        ops = nbytes = errors = 0
        rng = random.Random(thread)
        n = 0
        while True:
            now = time.time()
            if now >= until:
                break
            try:
                if op == "PUT":
                    client.put_object(Bucket=bucket, Key=f"put/{tag}-{thread}-{n}", Body=body)
                    got = size
                else:
                    got = len(client.get_object(Bucket=bucket, Key=rng.choice(keys))["Body"].read())
                ok = True
            except Exception:
                ok = False
            n += 1
            done = time.time()
            if counted_from <= done <= until:
                if ok:
                    ops += 1
                    nbytes += got
                else:
                    errors += 1
        with lock:
            totals[0] += ops
            totals[1] += nbytes
            totals[2] += errors

    time.sleep(max(0.0, start_at - time.time()))
    threads = [threading.Thread(target=work, args=(t,)) for t in range(shape.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return totals[0], totals[1], totals[2]


def _prepare() -> None:
    """Worker start: import boto3 and load the S3 model once, so a measured window never pays for it."""
    import boto3

    boto3.session.Session().client("s3", region_name=SOURCE, aws_access_key_id="x", aws_secret_access_key="x")


def _hold(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def client_pool(processes: int) -> ProcessPoolExecutor:
    """Client processes, every one started and ready before any measurement."""
    pool = ProcessPoolExecutor(max_workers=processes, mp_context=get_context("spawn"), initializer=_prepare)
    pids: set[int] = set()
    # On a loaded machine a worker can still be importing boto3 when the others have held twice: ask
    # again (the pool keeps its processes) rather than fail the run.
    for _ in range(5):
        pids |= {f.result(timeout=300) for f in [pool.submit(_hold, 2.0) for _ in range(processes)]}
        if len(pids) == processes:
            return pool
    pool.shutdown()
    raise BenchError(f"expected {processes} client processes, got {len(pids)}")


def measure(
    pool: ProcessPoolExecutor,
    target: Target,
    bucket: str,
    op: str,
    size: int,
    shape: Shape,
    core: int | None,
    keys: Sequence[str],
) -> Rate:
    start_at = time.time() + 3.0  # every client process has built its client by then
    run = uuid.uuid4().hex[:6]
    futures = [
        pool.submit(_drive, target, bucket, op, size, shape, start_at, core, keys, f"{run}-{p}")
        for p in range(shape.processes)
    ]
    counted_from = start_at + shape.warmup_s
    time.sleep(max(0.0, counted_from - time.time()))
    cpu_before = cpu_seconds(target.pid)
    time.sleep(max(0.0, counted_from + shape.seconds - time.time()))
    cpu_after = cpu_seconds(target.pid)
    ops = nbytes = errors = 0
    for future in futures:
        o, b, e = future.result(timeout=shape.seconds + shape.warmup_s + 120)
        ops, nbytes, errors = ops + o, nbytes + b, errors + e
    if errors:
        raise BenchError(f"{target.label}: {errors} of {ops + errors} {op} {size} B requests failed")
    if ops == 0:
        raise BenchError(f"{target.label}: no {op} of {size} B completed in {shape.seconds:g} s")
    return Rate(ops, nbytes, shape.seconds, cpu_after - cpu_before)


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process (all its threads), from /proc; 0 when unknown."""
    if pid is None:
        return 0.0
    try:
        return procstat.cpu_seconds(pid)
    except OSError:
        return 0.0


def throughput(target: Target, client_core: int | None) -> dict[str, Rate]:
    """PUT and GET at 4 KiB and 8 MiB against one server, in that order."""
    client = s3_client(target, 4)
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": target.region})
    keys = {
        SMALL: [f"get/small-{i}" for i in range(64)],
        LARGE: [f"get/large-{i}" for i in range(4)],
    }
    for size, names in keys.items():
        body = os.urandom(size)
        for key in names:
            client.put_object(Bucket=bucket, Key=key, Body=body)
    out: dict[str, Rate] = {}
    with client_pool(4) as pool:
        for size in (SMALL, LARGE):
            shape = Shape.for_size(size)
            for op in ("PUT", "GET"):
                out[f"{op} {size}"] = measure(pool, target, bucket, op, size, shape, client_core, keys[size])
    return out


# -- server capacity: wrk replaying requests the boto3 client presigned ---------------------------------

REPLAYED_KEYS = 256


def _replay_script(path: Path, method: str, urls: Sequence[str], body: bytes | None) -> Path:
    """A wrk script cycling through presigned URLs (path and query; the host is wrk's)."""
    targets = [u.split("/", 3)[3] for u in urls]
    lines = [
        f"wrk.method = {json.dumps(method)}",
        "local paths = {" + ", ".join(json.dumps("/" + t) for t in targets) + "}",
        "local n = 0",
    ]
    if body is not None:
        lines.append(f"wrk.body = {json.dumps(body.decode('ascii'))}")
    # One request per URL, built once and sent in turn, so Lua stays off the hot path. They are built
    # in init(), which wrk calls once it has set the Host header the signatures cover.
    lines += [
        "local requests = {}",
        "init = function(args)",
        "  for i, p in ipairs(paths) do requests[i] = wrk.format(nil, p) end",
        "end",
        "request = function()",
        "  n = n % #requests + 1",
        "  return requests[n]",
        "end",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def capacity(
    target: Target, work: Path, load_core: int | None, server_cpu: dict[str, float] | None = None
) -> dict[str, loadgen.Result]:
    """PUT and GET of 4 KiB as fast as the server goes: the boto3 client presigns them, wrk sends them;
    `server_cpu`, when given, gets the server's CPU seconds over each run.

    boto3 costs the client more CPU per request than either server spends, so client processes on one
    core cannot load a fast server; wrk on that core can. Every request is one the boto3 client signed
    (SigV4 query signature, unsigned payload), checked by the server as any other.
    """
    client = s3_client(target, 4)
    bucket = f"bench-cap-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": target.region})
    body = os.urandom(SMALL // 2).hex().encode()
    keys = [f"cap/{i:04d}" for i in range(REPLAYED_KEYS)]
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=body)

    def urls(operation: str) -> list[str]:
        return [
            client.generate_presigned_url(operation, Params={"Bucket": bucket, "Key": k}, ExpiresIn=3600)
            for k in keys
        ]

    load = loadgen.Load(connections=16, duration_s=int(os.environ.get("BENCH_OBJECTS_SECONDS", "5")))
    out: dict[str, loadgen.Result] = {}
    for op, operation, payload in (("PUT", "put_object", body), ("GET", "get_object", None)):
        script = _replay_script(work / f"replay-{target.label}-{op}.lua", op, urls(operation), payload)
        before = cpu_seconds(target.pid)
        out[op] = loadgen.run(target.endpoint + "/", load, script=script, core=load_core)
        if server_cpu is not None:
            server_cpu[op] = cpu_seconds(target.pid) - before
    return out


def one_region_topology(
    path: Path, region: str, address: str, access_key: str, secret_key: str, extra: Sequence[str] = ()
) -> Path:
    """Writes (at `path`) a topology of `region` alone on `address` (free ports) with this S3 key pair;
    `extra` lines (such as a `[storage]` table) go before the keys."""
    lines = [f'home_region = "{region}"', f'active = ["{region}"]', *extra]
    lines += ["[s3]", f'access_key_id = "{access_key}"', f'secret_access_key = "{secret_key}"']
    lines += ["[[regions]]", f'id = "{region}"', 'name = "Ireland"', 'flag = "IE"', f'address = "{address}"']
    lines += [f"api_port = {free_port(address)}", f"s3_port = {free_port(address)}", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@contextlib.contextmanager
def region_server(work: Path, core: int | None, src: Path | None = None) -> Iterator[Target]:
    """One region process alone (`bookstore region serve`), its S3 API on a loopback port; the code of
    `src` (another tree's src/, through PYTHONPATH) when given, else this checkout's."""
    address = "127.0.0.1"
    topology = one_region_topology(work / "region.toml", SOURCE, address, ACCESS_KEY, SECRET_KEY)
    region = Topology.load(topology).region(SOURCE)
    # `env` execs the region, so the pid running() sees (for the CPU time) is the region's.
    path = [] if src is None else ["env", f"PYTHONPATH={src}"]
    argv = [*path, str(BIN / "bookstore"), "region", "serve", "--region", SOURCE]
    argv += ["--data-dir", str(work / "region-data"), "--topology", str(topology)]
    with running(argv, f"{region.api_url}/health", work / "region.log", core=core) as proc:
        yield Target("region", region.s3_url, SOURCE, ACCESS_KEY, SECRET_KEY, proc.pid)


@contextlib.contextmanager
def moto(work: Path, core: int | None) -> Iterator[Target]:
    port = free_port("127.0.0.1")
    argv = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with running(argv, f"http://127.0.0.1:{port}/moto-api/", work / "moto.log", core=core) as proc:
        yield Target("moto", f"http://127.0.0.1:{port}", SOURCE, "testing", "testing", proc.pid)


# -- memory held by a large upload ---------------------------------------------------------------------


def upload_memory(target: Target, work: Path) -> tuple[float, float]:
    """(MiB the server's peak resident memory grew by during a HUGE PUT, seconds the PUT took).

    The peak (VmHWM) is reset to the current resident size just before the PUT (/proc/PID/clear_refs).
    """
    if target.pid is None:
        raise BenchError(f"{target.label}: no process to read the memory of")
    source = work / "huge.bin"
    if not source.exists():
        with source.open("wb") as f:
            for index in range(HUGE // MIB):
                f.write(random.Random(index).randbytes(MIB))
    client = s3_client(target, 1)
    bucket = f"memory-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": target.region})
    client.put_object(Bucket=bucket, Key="warm", Body=b"w" * 4 * MIB)
    status = Path(f"/proc/{target.pid}/status")
    Path(f"/proc/{target.pid}/clear_refs").write_text("5")
    before = _kib(status, "VmHWM")
    started = time.perf_counter()
    with source.open("rb") as body:
        client.put_object(Bucket=bucket, Key="huge", Body=body)
    seconds = time.perf_counter() - started
    return (_kib(status, "VmHWM") - before) / 1024, seconds


def _kib(status: Path, field: str) -> int:
    for line in status.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {field} in {status}")


def _memory_figures(ours: tuple[float, float], theirs: tuple[float, float]) -> list[Figure]:
    label = f"S3 PUT {_size(HUGE)}: server's peak memory growth"
    return [
        Figure(f"{label}, one region", ours[0], "MiB", note=f"the PUT took {ours[1]:.1f} s"),
        Figure(f"{label}, moto_server", theirs[0], "MiB", note=f"the PUT took {theirs[1]:.1f} s"),
        Figure(f"{label}: region / moto", ours[0] / max(theirs[0], 1.0), "x", Goal.maximum(0.1)),
    ]


# -- replication latency ------------------------------------------------------------------------------


@contextlib.contextmanager
def system_up(work: Path) -> Iterator[Topology]:
    """`bookstore up` of two regions on an isolated topology (no edge); yields the topology."""
    base = 1 + (os.getpid() % 100) * 2
    addresses = {SOURCE: f"127.211.{base}.1", DEST: f"127.211.{base + 1}.1"}
    topology_file = work / "up.toml"
    topology = loopback_topology(topology_file, f"127.211.{base}.250", addresses)
    try:
        with launched(work / "up-data", work / "up.log", topology_file):
            yield topology
    except LaunchError as exc:
        raise BenchError(str(exc)) from None


def _wait_idle(topology: Topology, timeout_s: float = 60.0) -> None:
    """Until the source has nothing PENDING (what `up` published has been copied)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
            status = httpx.get(topology.region(SOURCE).api_url + "/status", timeout=5).json()["objects"]
            if status["pending"]["operations"] == 0 and not status["inFlight"]:
                return
        time.sleep(0.2)
    raise BenchError(f"{SOURCE} still had object replications pending after {timeout_s:.0f} s")


def replication_latency(work: Path, samples: int) -> dict[int, list[float]]:
    """Milliseconds from sending a PUT at the source to the version being readable at the destination."""
    latencies: dict[int, list[float]] = {size: [] for size in REPLICATION_SIZES}
    with system_up(work) as topology:
        up_data = work / "up-data"
        set_link_delay(topology.control_url, operator_token(up_data), SOURCE, DEST, DELAY_MS)
        access = s3_credentials(up_data, create=False)
        source = s3_client(
            Target(
                "source",
                topology.region(SOURCE).s3_url,
                SOURCE,
                access.access_key_id,
                access.secret_access_key,
            ),
            4,
        )
        dest = s3_client(
            Target(
                "dest", topology.region(DEST).s3_url, DEST, access.access_key_id, access.secret_access_key
            ),
            4,
        )
        src_bucket, dst_bucket = f"lat-src-{uuid.uuid4().hex[:6]}", f"lat-dst-{uuid.uuid4().hex[:6]}"
        source.create_bucket(Bucket=src_bucket, CreateBucketConfiguration={"LocationConstraint": SOURCE})
        dest.create_bucket(Bucket=dst_bucket, CreateBucketConfiguration={"LocationConstraint": DEST})
        for client, bucket in ((source, src_bucket), (dest, dst_bucket)):
            client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        replicate_every_version(source, src_bucket, dst_bucket)
        _wait_idle(topology)
        rng = random.Random(7)
        order = [size for size in REPLICATION_SIZES for _ in range(samples)]
        rng.shuffle(order)
        with httpx.Client(timeout=10) as poller:
            for i, size in enumerate(order):
                key = f"latency/{i}-{size}"
                url = dest.generate_presigned_url(
                    "head_object", Params={"Bucket": dst_bucket, "Key": key}, ExpiresIn=600
                )
                data = os.urandom(size)
                sent = time.perf_counter()
                version = source.put_object(Bucket=src_bucket, Key=key, Body=data)["VersionId"]
                deadline = sent + 30
                while True:
                    answer = poller.head(url)
                    if answer.status_code == 200:
                        break
                    if time.perf_counter() > deadline:
                        raise BenchError(f"{key} did not reach {DEST} within 30 s")
                    time.sleep(POLL_S)
                arrived = time.perf_counter()
                if answer.headers.get("x-amz-version-id") != version:
                    raise BenchError(
                        f"{key}: {DEST} has version {answer.headers.get('x-amz-version-id')}, not {version}"
                    )
                latencies[size].append((arrived - sent) * 1000)
                time.sleep(rng.uniform(0.05, 0.25))
    return latencies


def _throughput_figures(op: str, size: int, ours: Rate, theirs: Rate) -> list[Figure]:
    """Achieved throughput of each server, and the ratio per server CPU-second (the goal's figure)."""
    small = size == SMALL
    shape = Shape.for_size(size).describe()

    def value(rate: Rate) -> float:
        return rate.ops_per_s if small else rate.mb_per_s

    def capacity(rate: Rate) -> float:
        return rate.ops_per_cpu_s if small else rate.mb_per_cpu_s

    unit = "objects/s" if small else "MB/s"
    per_cpu = "objects per server CPU-second" if small else "MB per server CPU-second"

    def note(rate: Rate) -> str:
        return (
            f"{rate.ops:,} requests in {rate.seconds:g} s; server core {rate.busy:.0%} busy, "
            f"{format_number(capacity(rate))} {per_cpu}; {shape}"
        )

    achieved = value(ours) / value(theirs)
    return [
        Figure(f"S3 {op} {_size(size)}, one region", value(ours), unit, note=note(ours)),
        Figure(f"S3 {op} {_size(size)}, moto_server", value(theirs), unit, note=note(theirs)),
        Figure(
            f"S3 {op} {_size(size)}: region / moto, per server CPU-second",
            capacity(ours) / capacity(theirs),
            "x",
            note=f"achieved ratio {achieved:.2f} x (a server below 100% busy was waiting for its clients)",
        ),
    ]


def _capacity_figures(op: str, ours: loadgen.Result, theirs: loadgen.Result) -> list[Figure]:
    """Requests/s each server sustains when the client is not the bottleneck, and their ratio (the goal)."""
    label = f"S3 {op} 4 KiB, boto3-presigned requests replayed by wrk"

    def note(result: loadgen.Result) -> str:
        return f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms; {result.command}"

    return [
        Figure(f"{label}: one region", ours.requests_per_s, "objects/s", note=note(ours)),
        Figure(f"{label}: moto_server", theirs.requests_per_s, "objects/s", note=note(theirs)),
        Figure(
            f"{label}: region / moto",
            ours.requests_per_s / theirs.requests_per_s,
            "x",
            Goal.minimum(SMALL_RATIO_GOAL),
        ),
    ]


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def _size(size: int) -> str:
    return f"{size // MIB} MiB" if size >= MIB else f"{size // KIB} KiB"


# -- the section --------------------------------------------------------------------------------------


def run_bench() -> Section:
    server_core, client_core = cores()
    samples = int(os.environ.get("BENCH_OBJECTS_SAMPLES", "40"))
    failures: list[str] = []
    figures: list[Figure] = []
    rates: dict[str, dict[str, Rate]] = {}
    capacities: dict[str, dict[str, loadgen.Result]] = {}
    memory: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bookstore-bench-objects-") as tmp:
        work = Path(tmp)
        for label, server in (("region", region_server), ("moto", moto)):
            try:
                with server(work, server_core) as target:
                    capacities[label] = capacity(target, work, client_core)
                    rates[label] = throughput(target, client_core)
                    memory[label] = upload_memory(target, work)
            except BenchError as exc:
                failures.append(f"{label}: {exc}")
        if "region" in memory and "moto" in memory:
            figures += _memory_figures(memory["region"], memory["moto"])
        if "region" in capacities and "moto" in capacities:
            for op in ("PUT", "GET"):
                figures += _capacity_figures(op, capacities["region"][op], capacities["moto"][op])
        for size in (SMALL, LARGE):
            for op in ("PUT", "GET"):
                name = f"{op} {size}"
                if "region" not in rates or "moto" not in rates:
                    continue
                ours, theirs = rates["region"][name], rates["moto"][name]
                figures += _throughput_figures(op, size, ours, theirs)
        try:
            latencies = replication_latency(work, samples)
            every = [ms for values in latencies.values() for ms in values]
            goal = Goal.maximum(DELAY_MS + LATENCY_MARGIN_MS)
            figures += [
                Figure(
                    f"Object replication latency p50, objects up to 1 MiB, link {DELAY_MS:.0f} ms",
                    percentile(every, 0.50),
                    "ms",
                ),
                Figure(
                    f"Object replication latency p99, objects up to 1 MiB, link {DELAY_MS:.0f} ms",
                    percentile(every, 0.99),
                    "ms",
                    goal,
                    note=f"{len(every)} PUTs: "
                    + ", ".join(
                        f"{_size(s)} p50 {percentile(v, 0.5):.0f} / p99 {percentile(v, 0.99):.0f} "
                        f"/ max {max(v):.0f} ms"
                        for s, v in latencies.items()
                    ),
                ),
            ]
        except BenchError as exc:
            failures.append(f"replication latency: {exc}")
    pinned = (
        f"server on core {server_core}, client processes on core {client_core}"
        if server_core is not None
        else "not pinned (fewer than two cores)"
    )
    section = Section(
        module="objects",
        title="Object store: S3 API throughput beside moto, replication latency",
        figures=figures,
        method=" ".join(
            (
                "Throughput: one region process alone (`bookstore region serve`, local object store) and",
                "moto's S3 server (`moto_server`), one after the other in the same run, each pinned to the",
                "same core and driven by the same boto3 client setup (SigV4, path-style, no retries) from",
                "client processes pinned to the other core: PUT of new keys, then GET of keys written",
                "beforehand, at 4 KiB and 8 MiB, counting requests completed in a window after a warm-up.",
                "A run with any failed request is refused. Because boto3 spends more CPU per request",
                "than either server, its client processes on one core cannot load a fast server: the",
                "capacity figures (the goal's) have the same boto3 client presign PUT and GET requests",
                f"of 4 KiB over {REPLAYED_KEYS} keys (SigV4 query signatures) and wrk, pinned to the",
                "client core, replay them as fast as each server answers.",
                f"Memory: one PUT of {_size(HUGE)} (a file, boto3) to each server; the growth of the",
                "server process's peak resident memory (VmHWM, reset just before the PUT).",
                "Replication latency: `bookstore up` of two regions with the link",
                f"{SOURCE} <-> {DEST} set to {DELAY_MS:.0f} ms one way, no jitter; a",
                "bucket pair with one replication rule; one PUT at a time at the source (sizes shuffled,",
                "a random pause between PUTs), timed from sending the PUT until a HEAD at the",
                f"destination's own S3 endpoint (polled every {POLL_S * 1000:.0f} ms) finds the same",
                "version id.",
            )
        ),
        context={
            "Pinning": pinned,
            "Client": "boto3 " + _boto3_version() + f"; {Shape.for_size(SMALL).describe()} at 4 KiB, "
            f"{Shape.for_size(LARGE).describe()} at 8 MiB",
            "moto": _moto_version(),
        },
    )
    if failures:
        raise PartialResult(section, failures)
    return section


def _boto3_version() -> str:
    import boto3

    return str(boto3.__version__)


def _moto_version() -> str:
    try:
        import moto

        return str(moto.__version__)
    except ImportError:
        return "not installed"


if __name__ == "__main__":
    print(run_bench())
