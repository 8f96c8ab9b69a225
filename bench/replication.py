"""Replication lag and throughput between two region processes under `bookstore up`, across the links."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.loadgen import cores, pin
from bench.report import BenchError, Figure, Goal, PartialResult, Section
from bench.servers import control, end_process, pin_threads, set_link_delay
from bookstore.replication.tables.http import BATCH, POLL_S
from bookstore.runtime.secret import operator_token
from bookstore.storage.sqlite.tables import SqliteDatabase
from bookstore.supervisor.launch import LaunchError, launched, loopback_topology
from bookstore.tables import CARTS

SOURCE = "eu-west-1"
DEST = "ap-southeast-1"
DELAY_MS = 85.0
RATES = (200, 1000)
# Long enough for a p99 over thousands of items and an anti-entropy round (every 30 s) or none; a
# follow stream lasts STREAM_S (an hour), so no run holds a reopening of it.
PACED_S = 20.0
FLAT_OUT_S = 10.0
BURST = 20_000
# The goal: p99 lag at 1,000 writes/s within 1.2 x the one-way delay + 20 ms.
LAG_GOAL_MS = 1.2 * DELAY_MS + 20.0
KEEP_UP_GOAL = 0.95
# A paced writer that fell this far below its target rate did not measure the lag at that rate.
PACE_TOLERANCE = 0.98
ARRIVAL_TIMEOUT_S = 60.0
ROOT = Path(__file__).resolve().parent.parent
POLL_NOTE = (
    "the writer is a process of its own, so the source region sees its commits by polling its log every "
    f"{POLL_S * 1000:.0f} ms (replication/tables/http.py POLL_S): up to that much of each lag is the poll"
)


@dataclass(frozen=True)
class Written:
    """What the writer process reports about one run."""

    count: int
    elapsed_s: float
    # The worst lateness of a write against its schedule (paced runs), ms.
    max_behind_ms: float

    @property
    def rate(self) -> float:
        return self.count / self.elapsed_s if self.elapsed_s > 0 else math.nan


@dataclass(frozen=True)
class Arrived:
    """One run as the destination's own change log recorded it (both clocks are this machine's)."""

    written_ms: list[int]
    logged_ms: list[int]

    @property
    def lags_ms(self) -> list[int]:
        return sorted(max(0, b - a) for a, b in zip(self.written_ms, self.logged_ms, strict=True))

    def percentile(self, q: float) -> float:
        lags = self.lags_ms
        return float(lags[min(len(lags) - 1, max(0, math.ceil(q * len(lags)) - 1))])

    @property
    def first_write_ms(self) -> int:
        return min(self.written_ms)

    @property
    def last_write_ms(self) -> int:
        return max(self.written_ms)

    @property
    def last_apply_ms(self) -> int:
        return max(self.logged_ms)


# -- the writer (a process of its own) ----------------------------------------------------------------


def write(
    db_path: Path, run_id: str, rate: float, seconds: float, count: int, region: str = SOURCE
) -> Written:
    """Put items into `region`'s carts table: `count` at `rate`/s on an absolute schedule, or (rate 0)
    as fast as possible until `count` items or `seconds` have passed."""
    with SqliteDatabase(db_path, region) as db:
        carts = db.table(CARTS)
        behind = 0.0
        i = 0
        start = time.monotonic()
        while i < count:
            now = time.monotonic()
            if rate > 0:
                due = start + i / rate
                if due > now:
                    time.sleep(due - now)
                else:
                    behind = max(behind, now - due)
            elif now - start >= seconds:
                break
            carts.put({"customerId": run_id, "bookId": f"bench-{i:07d}", "quantity": 1 + i % 5, "price": 9.5})
            i += 1
        elapsed = time.monotonic() - start
    return Written(count=i, elapsed_s=elapsed, max_behind_ms=behind * 1000)


def _writer_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replication")
    parser.add_argument("db", type=Path)
    parser.add_argument("run_id")
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--seconds", type=float, default=math.inf)
    parser.add_argument("--count", type=int, default=sys.maxsize)
    parser.add_argument("--region", default=SOURCE, help="the region whose tables.db `db` is")
    args = parser.parse_args(argv)
    done = write(args.db, args.run_id, args.rate, args.seconds, args.count, args.region)
    print(json.dumps({"count": done.count, "elapsedS": done.elapsed_s, "maxBehindMs": done.max_behind_ms}))
    return 0


# -- the system under test ----------------------------------------------------------------------------


def _topology(path: Path) -> dict[str, str]:
    """Two regions and a control API on loopback addresses of their own (each region a /24, for the links);
    returns each region's API URL and the control URL. No edge: these figures are about regions and links."""
    base = 1 + (os.getpid() % 120) * 2
    addresses = {SOURCE: f"127.201.{base}.1", DEST: f"127.201.{base + 1}.1"}
    topology = loopback_topology(path, f"127.201.{base}.250", addresses)
    return {"control": topology.control_url} | {r: topology.region(r).api_url for r in addresses}


@dataclass
class System:
    """A running `bookstore up` of the two regions, each region pinned to its core."""

    urls: dict[str, str]
    data: Path
    cores: dict[str, int | None]
    # Every region process seen, so none outlives the bench whatever happens to the supervisor.
    pids: set[int] = field(default_factory=set)

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return control(self.urls["control"], operator_token(self.data), method, path, body)

    def db(self, region_id: str) -> Path:
        return self.data / region_id / "tables.db"

    def set_delay(self, delay_ms: float) -> None:
        set_link_delay(self.urls["control"], operator_token(self.data), SOURCE, DEST, delay_ms)

    def pin_regions(self) -> None:
        for region in self.control("GET", "/regions")["regions"]:
            if region["running"]:
                self.pids.add(region["pid"])
                pin_threads(region["pid"], self.cores[region["regionId"]])

    def stop(self, region_id: str) -> None:
        self.control("POST", f"/regions/{region_id}/stop")

    def start(self, region_id: str) -> None:
        self.control("POST", f"/regions/{region_id}/start")
        self.pin_regions()


@contextlib.contextmanager
def system_up(work: Path, source_core: int | None, dest_core: int | None) -> Iterator[System]:
    """`bookstore up` on an isolated topology; the source region pinned with the writer, the destination
    region and the supervisor (the link simulator) on the other core, as if each region had a machine."""
    topology = work / "topology.toml"
    urls = _topology(topology)
    data = work / "data"
    system = System(urls, data, {SOURCE: source_core, DEST: dest_core})
    try:
        with launched(data, work / "up.log", topology) as proc:
            pin_threads(proc.pid, dest_core)
            system.pin_regions()
            yield system
    except LaunchError as exc:
        raise BenchError(str(exc)) from None
    finally:
        # Regions die with the supervisor; one that did not (it hung) must not outlive the bench.
        for pid in system.pids:
            end_process(pid, data)


def _connected(system: System) -> None:
    """Wait until the destination follows the source's log (its stream is open)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, KeyError, TypeError, ValueError):
            body = httpx.get(system.urls[DEST] + "/status", timeout=5).json()
            if body["replication"]["peers"][SOURCE]["connected"]:
                return
        time.sleep(0.2)
    raise BenchError(f"{DEST} did not connect to {SOURCE} within 30 s")


# -- one run ------------------------------------------------------------------------------------------


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def _head_seq(path: Path) -> int:
    with contextlib.closing(_read_only(path)) as conn:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
    return 0 if row is None else int(row[0])


_RUN_SQL = (
    "SELECT key, min(written_ms), min(logged_ms) FROM changes "
    "WHERE seq > ? AND tbl = 'carts' AND origin = ? AND json_extract(key, '$.customerId') = ? GROUP BY key"
)


def _arrived(dest_db: Path, after_seq: int, run_id: str, expected: int) -> Arrived:
    """The run's entries in the destination's change log, once all `expected` are there (bounded wait)."""
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    rows: list[tuple[str, int, int]] = []
    while True:
        with contextlib.closing(_read_only(dest_db)) as conn:
            rows = conn.execute(_RUN_SQL, (after_seq, SOURCE, run_id)).fetchall()
        if len(rows) >= expected:
            break
        if time.monotonic() > deadline:
            raise BenchError(
                f"run {run_id}: {DEST} applied {len(rows)} of the {expected} items written in {SOURCE} "
                f"within {ARRIVAL_TIMEOUT_S:.0f} s after the writer finished"
            )
        time.sleep(0.1)
    if len(rows) != expected:
        raise BenchError(f"run {run_id}: {DEST} holds {len(rows)} items of the run, {expected} were written")
    return Arrived(written_ms=[r[1] for r in rows], logged_ms=[r[2] for r in rows])


def _write_run(
    system: System, core: int | None, *, rate: float = 0.0, seconds: float = math.inf, count: int = 0
) -> tuple[str, Written]:
    """One writer process putting a fresh run's items into the source region; returns the run id."""
    run_id = f"bench-{uuid.uuid4().hex[:12]}"
    argv = [sys.executable, "-m", "bench.replication", str(system.db(SOURCE)), run_id, f"--rate={rate}"]
    if count:
        argv.append(f"--count={count}")
    if math.isfinite(seconds):
        argv.append(f"--seconds={seconds}")
    budget = (count / rate if rate else seconds if math.isfinite(seconds) else 600) + 120
    done = subprocess.run(
        pin(argv, core), capture_output=True, text=True, timeout=budget, cwd=ROOT, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"the writer exited {done.returncode}:\n{done.stderr[-2000:]}")
    raw = json.loads(done.stdout.strip().splitlines()[-1])
    written = Written(count=raw["count"], elapsed_s=raw["elapsedS"], max_behind_ms=raw["maxBehindMs"])
    if written.count == 0:
        raise BenchError("the writer wrote nothing")
    return run_id, written


def run_once(
    system: System, core: int | None, *, rate: float = 0.0, seconds: float = math.inf, count: int = 0
) -> tuple[Written, Arrived]:
    """One writer run into the source region, then the destination's record of it."""
    after = _head_seq(system.db(DEST))
    run_id, written = _write_run(system, core, rate=rate, seconds=seconds, count=count)
    return written, _arrived(system.db(DEST), after, run_id, written.count)


METHOD = f"""
`bookstore up` runs both regions as processes of their own with the link simulator between them
(one-way delay {DELAY_MS:.0f} ms both ways, no jitter or loss, set through the control API), on an
isolated topology in a temporary directory. A writer process opens the source region's tables.db
(`SqliteDatabase(path, "{SOURCE}")`) and puts items into `carts`, one transaction each, keyed by a
fresh run id: the API's write path minus HTTP. Paced runs write item i at t0 + i/rate for {PACED_S:.0f} s;
a writer that falls below {PACE_TOLERANCE:.0%} of its rate fails the run. Lag per item is the
destination's `changes.logged_ms` (when it applied the item) minus `written_ms` (the source's write
time), read from the destination's own change log once it holds every item of the run (a missing
item fails the run); both clocks are this machine's. The throughput runs set the delay to 0.
""".strip()

# -- the figures --------------------------------------------------------------------------------------


def _lag_figures(label: str, arrived: Arrived, note: str, goal: Goal | None = None) -> list[Figure]:
    return [
        Figure(f"{label}: lag p50", arrived.percentile(0.50), "ms", note=note),
        Figure(f"{label}: lag p99", arrived.percentile(0.99), "ms", goal),
    ]


def _paced(system: System, core: int | None, rate: int) -> list[Figure]:
    written, arrived = run_once(system, core, rate=rate, count=int(rate * PACED_S))
    achieved = written.rate
    if achieved < PACE_TOLERANCE * rate:
        raise BenchError(
            f"the writer held only {achieved:,.0f} writes/s of the {rate:,} asked for "
            f"(at worst {written.max_behind_ms:.0f} ms behind schedule): no figure at {rate:,} writes/s"
        )
    note = (
        f"{written.count:,} items in {written.elapsed_s:.1f} s ({achieved:,.0f} writes/s; the writer was at "
        f"worst {written.max_behind_ms:.1f} ms behind its schedule); max lag "
        f"{max(arrived.lags_ms)} ms; {POLL_NOTE}"
    )
    goal = Goal.maximum(LAG_GOAL_MS) if rate == 1000 else None
    return _lag_figures(f"Replication {SOURCE} -> {DEST} at {rate:,} writes/s", arrived, note, goal)


def _flat_out(system: System, core: int | None) -> list[Figure]:
    written, arrived = run_once(system, core, seconds=FLAT_OUT_S)
    write_window = arrived.last_write_ms - arrived.first_write_ms
    apply_window = arrived.last_apply_ms - arrived.first_write_ms
    ratio = write_window / apply_window if apply_window > 0 else math.nan
    label = f"Replication {SOURCE} -> {DEST} at the highest local write rate"
    return [
        Figure(
            f"{label}: write rate",
            written.rate,
            "writes/s",
            note=(
                f"one writer process putting items as fast as it can for {FLAT_OUT_S:.0f} s "
                f"({written.count:,} items), one SQLite transaction each, sharing a core with the source "
                "region"
            ),
        ),
        *_lag_figures(
            label,
            arrived,
            f"max lag {max(arrived.lags_ms)} ms; {POLL_NOTE}",
        ),
        Figure(
            f"{label}: apply rate / write rate",
            ratio,
            "x",
            Goal.minimum(KEEP_UP_GOAL),
            note=(
                f"write rate over the writes' own span ({write_window:,} ms from the first write to the "
                f"last), apply rate over the span from the first write to the last apply ({apply_window:,} "
                f"ms, which includes the {DELAY_MS:.0f} ms link delay once)"
            ),
        ),
    ]


def _burst(system: System, core: int | None) -> list[Figure]:
    written, arrived = run_once(system, core, count=BURST)
    span_ms = arrived.last_apply_ms - arrived.first_write_ms
    throughput = written.count / (span_ms / 1000) if span_ms > 0 else math.nan
    return [
        Figure(
            f"Replication throughput {SOURCE} -> {DEST}, no link delay",
            throughput,
            "items/s",
            note=(
                f"a burst of {written.count:,} items written as fast as possible "
                f"({written.rate:,.0f} writes/s at the source); throughput = items / ({span_ms:,} ms "
                "from the first write to the destination applying the last): bounded by the writer when "
                f"replication keeps up; lag p50 {arrived.percentile(0.5):.0f} ms, "
                f"p99 {arrived.percentile(0.99):.0f} ms"
            ),
        )
    ]


def _catch_up(system: System, core: int | None) -> list[Figure]:
    """The destination stopped while the burst is written, then started: replication alone sets the pace."""
    after = _head_seq(system.db(DEST))
    system.stop(DEST)
    try:
        run_id, written = _write_run(system, core, count=BURST)
    finally:
        system.start(DEST)
    arrived = _arrived(system.db(DEST), after, run_id, written.count)
    span_ms = arrived.last_apply_ms - min(arrived.logged_ms)
    throughput = written.count / (span_ms / 1000) if span_ms > 0 else math.nan
    return [
        Figure(
            f"Replication catch-up throughput {SOURCE} -> {DEST}, no link delay",
            throughput,
            "items/s",
            note=(
                f"{written.count:,} items written while {DEST} was stopped, then {DEST} started: "
                f"items / ({span_ms:,} ms from its first apply of them to its last), the rate at which a "
                f"region behind drains its peer's log (batches of {BATCH:,} per streamed read)"
            ),
        )
    ]


def run_bench() -> Section:
    first, second = cores()
    # Each region gets a core, as if on a machine of its own: the writer shares the source's core (its
    # writes are the source region's local writes), the link simulator runs beside the destination.
    source_core, dest_core = first, second
    figures: list[Figure] = []
    failures: list[str] = []
    with (
        tempfile.TemporaryDirectory(prefix="bookstore-bench-repl-") as tmp,
        system_up(Path(tmp), source_core, dest_core) as system,
    ):
        system.set_delay(DELAY_MS)
        _connected(system)
        # A warm-up run: the stream is open and every connection made before anything is measured.
        run_once(system, source_core, rate=200, count=200)
        delayed: list[tuple[str, Callable[[], list[Figure]]]] = [
            *((f"{rate} writes/s", functools.partial(_paced, system, source_core, rate)) for rate in RATES),
            ("highest rate", functools.partial(_flat_out, system, source_core)),
        ]
        undelayed: list[tuple[str, Callable[[], list[Figure]]]] = [
            ("burst", functools.partial(_burst, system, source_core)),
            ("catch-up", functools.partial(_catch_up, system, source_core)),
        ]
        for steps in (delayed, undelayed):
            if steps is undelayed:
                system.set_delay(0.0)
            for name, step in steps:
                try:
                    figures += step()
                except BenchError as exc:
                    failures.append(f"{name}: {exc}")
    pinning = (
        f"writer and {SOURCE} on core {source_core}; {DEST} and the supervisor (link simulator) on core "
        f"{dest_core} (taskset)"
        if source_core is not None
        else "not pinned (fewer than two cores available)"
    )
    section = Section(
        module="replication",
        title=f"Table replication {SOURCE} -> {DEST}",
        figures=figures,
        method=METHOD,
        context={"Pinning": pinning, "Anti-entropy": "every 30 s (the default), running during the runs"},
    )
    if failures:
        if not figures:
            raise BenchError("\n".join(failures))
        raise PartialResult(section, failures)
    return section


if __name__ == "__main__":
    sys.exit(_writer_main(sys.argv[1:]))
