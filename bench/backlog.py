"""A region draining a backlog of 10k, 100k and 1M changes, and a third region joining 1M items."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx

from bench.loadgen import cores, pin
from bench.procstat import cpu_seconds, memory_mib
from bench.replication import ROOT, System, _read_only
from bench.report import BenchError, Figure, Goal, PartialResult, Section
from bench.servers import end_process, pin_threads, set_link_delay
from bookstore.runtime.secret import operator_token
from bookstore.storage.sqlite.tables import SqliteDatabase
from bookstore.supervisor.launch import LaunchError, launched, loopback_topology
from bookstore.tables import CARTS

SOURCE, DEST, NEW = "eu-west-1", "ap-southeast-1", "us-east-1"
# BENCH=quick stops at 100k changes; the full run goes to 1M (the new region then joins 1.11M items).
SIZES = (10_000, 100_000) if os.environ.get("BENCH") == "quick" else (10_000, 100_000, 1_000_000)
# Units of one group commit in the seeding writer: the API's own batch path, fewer fsyncs.
SEED_GROUP = 2_000
DRAIN_GOAL = 50_000.0
DRAIN_1M_GOAL_S = 30.0
JOIN_GOAL_S = 60.0
# The read probe: paced GETs (a shopper's load, not a saturating one, which would starve the drain).
PROBE_RATE = 200.0
PROBE_TIMEOUT_S = 10.0
IDLE_PROBE_S = 3.0
DRAIN_TIMEOUT_S = 600.0


# -- the seeding writer (a process of its own) ---------------------------------------------------------


def seed(db_path: Path, run_id: str, count: int) -> float:
    """Put `count` cart rows into the source's tables file through group commits, as the API writes
    them under load (`SqliteDatabase.run_group`: each unit a put, logged like any write). Seconds taken."""
    started = time.perf_counter()
    with SqliteDatabase(db_path, SOURCE) as db:
        carts = db.table(CARTS)
        for start in range(0, count, SEED_GROUP):
            units = [
                partial(
                    carts.put,
                    {"customerId": run_id, "bookId": f"b{i:07d}", "quantity": 1 + i % 5, "price": 9.5},
                )
                for i in range(start, min(count, start + SEED_GROUP))
            ]
            for outcome in db.run_group(units):
                if outcome.error is not None:
                    raise outcome.error
    return time.perf_counter() - started


def _seed_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backlog")
    parser.add_argument("db", type=Path)
    parser.add_argument("run_id")
    parser.add_argument("count", type=int)
    args = parser.parse_args(argv)
    print(json.dumps({"seconds": seed(args.db, args.run_id, args.count)}))
    return 0


def _seed(system: System, core: int | None, run_id: str, count: int) -> float:
    argv = [sys.executable, "-m", "bench.backlog", str(system.db(SOURCE)), run_id, str(count)]
    done = subprocess.run(
        pin(argv, core), capture_output=True, text=True, timeout=60 + count / 500, cwd=ROOT, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"the seeding writer exited {done.returncode}:\n{done.stderr[-2000:]}")
    seconds: float = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
    return seconds


# -- the read probe --------------------------------------------------------------------------------------


@dataclass
class Probe:
    """GET /books/{id} at PROBE_RATE/s on one region, on a thread, until stopped."""

    url: str
    latencies_ms: list[float]
    errors: int = 0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return math.nan
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    def summary(self) -> str:
        return (
            f"{len(self.latencies_ms):,} reads at {PROBE_RATE:.0f}/s, p50 {self.percentile(0.5):.1f} ms, "
            f"max {max(self.latencies_ms, default=math.nan):.1f} ms, {self.errors} failed"
        )


@contextlib.contextmanager
def probing(url: str) -> Iterator[Probe]:
    probe = Probe(url, [])
    stop = threading.Event()

    def run() -> None:
        with httpx.Client(timeout=PROBE_TIMEOUT_S) as client:
            start = time.monotonic()
            i = 0
            while not stop.is_set():
                due = start + i / PROBE_RATE
                now = time.monotonic()
                if due > now:
                    time.sleep(due - now)
                i += 1
                sent = time.perf_counter()
                try:
                    ok = client.get(url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    probe.latencies_ms.append((time.perf_counter() - sent) * 1000)
                else:
                    probe.errors += 1

    thread = threading.Thread(target=run, name=f"probe {url}", daemon=True)
    thread.start()
    try:
        yield probe
    finally:
        stop.set()
        thread.join(PROBE_TIMEOUT_S + 5)


# -- the system ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def system_up(
    work: Path, regions_cores: dict[str, int | None], supervisor_core: int | None
) -> Iterator[System]:
    """`bookstore up` of three regions, the third (NEW) in the topology but not started: it joins later."""
    base = 1 + (os.getpid() % 80) * 3
    addresses = {SOURCE: f"127.202.{base}.1", DEST: f"127.202.{base + 1}.1", NEW: f"127.202.{base + 2}.1"}
    path = work / "topology.toml"
    topology = loopback_topology(path, f"127.202.{base}.250", addresses, active=[SOURCE, DEST])
    urls = {"control": topology.control_url} | {r: topology.region(r).api_url for r in addresses}
    data = work / "data"
    system = System(urls, data, regions_cores)
    try:
        with launched(data, work / "up.log", path) as proc:
            pin_threads(proc.pid, supervisor_core)
            system.pin_regions()
            yield system
    except LaunchError as exc:
        raise BenchError(str(exc)) from None
    finally:
        for pid in system.pids:
            end_process(pid, data)


def _checkpoint(db: Path, source: str) -> int:
    with contextlib.closing(_read_only(db)) as conn:
        row = conn.execute("SELECT seq FROM checkpoints WHERE source = ?", (source,)).fetchone()
    return -1 if row is None else int(row[0])


def _head(db: Path) -> int:
    with contextlib.closing(_read_only(db)) as conn:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
    return 0 if row is None else int(row[0])


def _wait_checkpoint(db: Path, source: str, seq: int, what: str) -> float:
    """Monotonic time at which `db` holds `source`'s log up to `seq` (polled every 20 ms)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while True:
        with contextlib.suppress(Exception):  # the file may not exist yet, or be busy for a moment
            if _checkpoint(db, source) >= seq:
                return time.monotonic()
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not done within {DRAIN_TIMEOUT_S:.0f} s")
        time.sleep(0.02)


def _book_url(system: System, region: str) -> str:
    """The URL of one book of the region's catalog (what the read probe asks for)."""
    books = httpx.get(system.urls[region] + "/books", timeout=10).json()
    items = books["items"] if isinstance(books, dict) else books
    return f"{system.urls[region]}/books/{items[0]['id']}"


def _apply_span_ms(db: Path, after: int, origin: str) -> int:
    """From the first to the last apply of `origin`'s changes logged in `db` after `after`."""
    with contextlib.closing(_read_only(db)) as conn:
        first, last = conn.execute(
            "SELECT min(logged_ms), max(logged_ms) FROM changes WHERE seq > ? AND origin = ?", (after, origin)
        ).fetchone()
    return 0 if first is None else int(last - first)


def _pid(system: System, region: str) -> int:
    for state in system.control("GET", "/regions")["regions"]:
        if state["regionId"] == region and state["running"]:
            return int(state["pid"])
    raise BenchError(f"{region} is not running")


_REFUSED = re.compile(r'^bookstore_http_requests_total\{[^}]*status="413"\} (\S+)$', re.M)


def _refused(url: str) -> float:
    """The requests the region refused as too large (413) so far, from its /metrics: anti-entropy's
    pushes to a joining region were, each round, before issue 16."""
    return sum(float(value) for value in _REFUSED.findall(httpx.get(url + "/metrics", timeout=10).text))


def _count(db: Path, run_id: str) -> int:
    with contextlib.closing(_read_only(db)) as conn:
        (n,) = conn.execute(
            "SELECT count(*) FROM items_carts WHERE pk = ? AND doc IS NOT NULL", (run_id,)
        ).fetchone()
    return int(n)


# -- curve 3: a backlog --------------------------------------------------------------------------------


def _backlog(system: System, writer_core: int | None, size: int, idle_p99: float) -> list[Figure]:
    run_id = f"backlog-{size}"
    dest_db = system.db(DEST)
    system.stop(DEST)
    seeded_s = _seed(system, writer_core, run_id, size)
    head = _head(system.db(SOURCE))
    dest_after = _head(dest_db)
    source_pid = _pid(system, SOURCE)
    source_cpu = cpu_seconds(source_pid)
    started = time.monotonic()
    system.start(DEST)
    dest_pid = _pid(system, DEST)
    with probing(_book_url(system, DEST)) as probe:
        done = _wait_checkpoint(dest_db, SOURCE, head, f"{DEST} draining {size:,} changes")
    drain_s = done - started
    dest_cpu, source_cpu = cpu_seconds(dest_pid), cpu_seconds(source_pid) - source_cpu
    dest_rss, dest_peak = memory_mib(dest_pid)
    span_ms = _apply_span_ms(dest_db, dest_after, SOURCE)
    held = _count(dest_db, run_id)
    if held != size:
        raise BenchError(f"{DEST} holds {held:,} of the {size:,} items written while it was stopped")
    label = f"Backlog of {size:,} changes drained by a restarted region"
    figures = [
        Figure(
            f"{label}: time",
            drain_s,
            "s",
            Goal.maximum(DRAIN_1M_GOAL_S) if size == 1_000_000 else None,
            note=(
                f"from the start request of {DEST} (its start-up included) until its checkpoint of "
                f"{SOURCE}'s log reached the head; the backlog was written in {seeded_s:.1f} s"
            ),
        ),
        Figure(
            f"{label}: items/s",
            size / (span_ms / 1000) if span_ms > 0 else math.nan,
            "items/s",
            Goal.minimum(DRAIN_GOAL),
            note=(
                f"items / ({span_ms:,} ms from {DEST}'s first apply of them to its last); "
                f"{size / drain_s:,.0f} items/s counting from the start request"
            ),
        ),
        Figure(
            f"{label}: CPU per item",
            dest_cpu / size * 1e6,
            "us",
            note=(
                f"{DEST}'s CPU from its start (start-up included) until drained, {dest_cpu:.1f} s; "
                f"{SOURCE}'s meanwhile {source_cpu / size * 1e6:.1f} us per item ({source_cpu:.1f} s): "
                "what the load of the machine does not change"
            ),
        ),
        Figure(
            f"{label}: RSS of {DEST}",
            dest_rss,
            "MiB",
            note=f"VmRSS once drained; its peak (VmHWM) since its start {dest_peak:.0f} MiB",
        ),
        Figure(
            f"{label}: GET /books/{{id}} p99 on {DEST} while it drains",
            probe.percentile(0.99),
            "ms",
            note=f"{probe.summary()}; idle p99 {idle_p99:.1f} ms",
        ),
    ]
    if probe.errors:
        raise PartialResult(_section(figures), [f"{probe.errors} reads failed on {DEST} while it drained"])
    return figures


# -- curve 4: a new region -----------------------------------------------------------------------------


def _join(system: System, run_ids: Sequence[str], total: int) -> list[Figure]:
    new_db = system.db(NEW)
    heads = {SOURCE: _head(system.db(SOURCE)), DEST: _head(system.db(DEST))}
    urls = {r: _book_url(system, r) for r in (SOURCE, DEST)}
    pids = {r: _pid(system, r) for r in (SOURCE, DEST)}
    cpu = {r: cpu_seconds(pid) for r, pid in pids.items()}
    with probing(urls[SOURCE]) as on_source, probing(urls[DEST]) as on_dest:
        started = time.monotonic()
        system.start(NEW)
        new_pid = _pid(system, NEW)
        with probing(f"{system.urls[NEW]}/books/{urls[SOURCE].rsplit('/', 1)[1]}") as on_new:
            done = max(
                _wait_checkpoint(new_db, peer, head, f"{NEW} joining {total:,} items")
                for peer, head in heads.items()
            )
    join_s = done - started
    new_cpu = cpu_seconds(new_pid)
    new_rss, new_peak = memory_mib(new_pid)
    refused = _refused(system.urls[NEW])
    cpu = {r: cpu_seconds(pid) - cpu[r] for r, pid in pids.items()}
    held = sum(_count(new_db, run_id) for run_id in run_ids)
    if held != total:
        raise BenchError(f"{NEW} holds {held:,} of the {total:,} items once it follows both regions")
    label = f"A new region joining {total:,} items"
    figures = [
        Figure(
            f"{label}: time until it holds everything",
            join_s,
            "s",
            Goal.maximum(JOIN_GOAL_S),
            note=(
                f"from the start request of {NEW} (its start-up included) until it follows both "
                f"{SOURCE} and {DEST} from their heads (one backfill, the other region followed from the "
                f"snapshot's checkpoint of it); meanwhile {NEW} refused {refused:.0f} requests as too "
                "large (413)"
            ),
        ),
        Figure(
            f"{label}: CPU per item",
            new_cpu / total * 1e6,
            "us",
            note=(
                f"{NEW}'s CPU from its start until it held everything, {new_cpu:.1f} s; meanwhile "
                f"{SOURCE} {cpu[SOURCE]:.1f} s and {DEST} {cpu[DEST]:.1f} s (each serving a snapshot)"
            ),
        ),
        Figure(
            f"{label}: RSS of {NEW}",
            new_rss,
            "MiB",
            note=f"VmRSS once it held everything; its peak (VmHWM) since its start {new_peak:.0f} MiB",
        ),
        Figure(
            f"{label}: GET /books/{{id}} p99 on {NEW} while it backfills",
            on_new.percentile(0.99),
            "ms",
            note=on_new.summary(),
        ),
        Figure(
            f"{label}: GET /books/{{id}} p99 on {SOURCE} meanwhile",
            on_source.percentile(0.99),
            "ms",
            note=on_source.summary(),
        ),
        Figure(
            f"{label}: GET /books/{{id}} p99 on {DEST} meanwhile",
            on_dest.percentile(0.99),
            "ms",
            note=on_dest.summary(),
        ),
    ]
    failed = on_source.errors + on_dest.errors
    if failed:
        raise PartialResult(_section(figures), [f"{failed} reads failed on {SOURCE} and {DEST} meanwhile"])
    return figures


# -- the module ----------------------------------------------------------------------------------------

METHOD = f"""
`bookstore up` runs {SOURCE} and {DEST} as processes of their own, with {NEW} in the topology but not
started, links at no delay. Backlog: {DEST} is stopped, a writer process puts N cart rows into
{SOURCE}'s tables.db through group commits of {SEED_GROUP:,} puts (`SqliteDatabase.run_group`, the
API's batch path: each put logged as any write), then {DEST} is started; the time runs from its start
request until its checkpoint of {SOURCE}'s log reaches the head (every item then checked in its table).
Meanwhile a probe reads GET /books/{{id}} on {DEST} at {PROBE_RATE:.0f} requests/s (paced, one client).
New region: {NEW} is started with an empty data directory while {SOURCE} and {DEST} hold every item of
the backlogs; the time runs until its checkpoints of both reach their heads (it holds everything),
with the same probe on all three regions.
""".strip()


def _section(figures: list[Figure]) -> Section:
    return Section(
        module="backlog",
        title="A region draining a backlog, and a new region joining",
        figures=figures,
        method=METHOD,
    )


def run_bench() -> Section:
    first, second = cores()
    regions_cores = {SOURCE: first, DEST: second, NEW: first}
    figures: list[Figure] = []
    failures: list[str] = []
    with (
        tempfile.TemporaryDirectory(prefix="bookstore-bench-backlog-") as tmp,
        system_up(Path(tmp), regions_cores, second) as system,
    ):
        set_link_delay(system.urls["control"], operator_token(system.data), SOURCE, DEST, 0.0)
        for peer in (SOURCE, DEST):
            set_link_delay(system.urls["control"], operator_token(system.data), peer, NEW, 0.0)
        with probing(_book_url(system, DEST)) as idle:
            time.sleep(IDLE_PROBE_S)
        idle_p99 = idle.percentile(0.99)
        for size in SIZES:
            try:
                figures += _backlog(system, first, size, idle_p99)
            except PartialResult as exc:
                figures += exc.section.figures
                failures += exc.reasons
            except BenchError as exc:
                failures.append(f"backlog of {size:,}: {exc}")
        try:
            figures += _join(system, [f"backlog-{size}" for size in SIZES], sum(SIZES))
        except PartialResult as exc:
            figures += exc.section.figures
            failures += exc.reasons
        except BenchError as exc:
            failures.append(f"new region: {exc}")
    section = _section(figures)
    if failures:
        if not figures:
            raise BenchError("\n".join(failures))
        raise PartialResult(section, failures)
    return section


if __name__ == "__main__":
    sys.exit(_seed_main(sys.argv[1:]))
