"""Replication lag per pair and CPU per replicated write at 2, 3 and 5 regions under `bookstore up`."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.loadgen import cores, pin
from bench.procstat import cpu_seconds, memory_mib
from bench.replication import POLL_NOTE, ROOT, Arrived, System, Written, _head_seq, _read_only
from bench.report import BenchError, Figure, Goal, PartialResult, Section, format_number
from bench.servers import end_process, pin_threads, set_link_delay
from bookstore.runtime.secret import operator_token
from bookstore.supervisor.launch import LaunchError, launched, loopback_topology

# The first three are the defaults; the other two exist only in this bench's topology of five.
REGIONS = ("eu-west-1", "ap-southeast-1", "us-east-1", "us-west-2", "sa-east-1")
SOURCE = REGIONS[0]
SIZES = (2, 3, 5)
DELAY_MS = 85.0
RATE = 500
QUICK = os.environ.get("BENCH") == "quick"
# Long enough for a p99 over thousands of items per pair; quick keeps 4,000 writes per run.
SECONDS = 8.0 if QUICK else 20.0
# Each region's CPU is also measured at rest this long, so the reader can tell cost per write from idling.
IDLE_S = 3.0 if QUICK else 5.0
# The goals: lag p99 within the link's delay + 20 ms for every pair; CPU per replicated write at 5
# regions within 1.2 x that at 2, for the sender and for the receivers.
LAG_GOAL_MS = DELAY_MS + 20.0
CPU_RATIO_GOAL = 1.2
# A paced writer that fell this far below its target rate did not measure the lag at that rate.
PACE_TOLERANCE = 0.98
# A core this busy (its regions and the supervisor over the run's window) counts as saturated.
SATURATED = 0.85
ARRIVAL_TIMEOUT_S = 120.0
CONNECT_TIMEOUT_S = 60.0


# -- the system under test ----------------------------------------------------------------------------


@contextlib.contextmanager
def system_up(work: Path, ids: Sequence[str], regions_cores: Mapping[str, int | None]) -> Iterator[System]:
    """`bookstore up` of the regions `ids`, each on a loopback /24 of its own (the link simulator tells
    regions apart by it), every link at DELAY_MS; the supervisor on the last region's core."""
    base = 1 + (os.getpid() % 45) * 5
    addresses = {r: f"127.203.{base + i}.1" for i, r in enumerate(ids)}
    work.mkdir(parents=True, exist_ok=True)
    path = work / "topology.toml"
    topology = loopback_topology(path, f"127.203.{base}.250", addresses)
    urls = {"control": topology.control_url} | {r: topology.region(r).api_url for r in ids}
    data = work / "data"
    system = System(urls, data, dict(regions_cores))
    try:
        with launched(data, work / "up.log", path) as proc:
            pin_threads(proc.pid, regions_cores[ids[-1]])
            system.pin_regions()
            token = operator_token(data)
            for i, a in enumerate(ids):
                for b in ids[i + 1 :]:
                    set_link_delay(urls["control"], token, a, b, DELAY_MS)
            yield system
    except LaunchError as exc:
        raise BenchError(str(exc)) from None
    finally:
        # Regions die with the supervisor; one that did not (it hung) must not outlive the bench.
        for pid in system.pids:
            end_process(pid, data)


def _connected(system: System, ids: Sequence[str]) -> None:
    """Wait until every region follows every other region's log (its streams are open)."""
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    waiting = list(ids)
    while waiting and time.monotonic() < deadline:
        for region in list(waiting):
            with contextlib.suppress(httpx.HTTPError, KeyError, TypeError, ValueError):
                peers = httpx.get(system.urls[region] + "/status", timeout=5).json()["replication"]["peers"]
                if all(peers[p]["connected"] for p in ids if p != region):
                    waiting.remove(region)
        time.sleep(0.2)
    if waiting:
        raise BenchError(f"{', '.join(waiting)} did not follow every peer within {CONNECT_TIMEOUT_S:.0f} s")


def _pids(system: System) -> dict[str, int]:
    return {
        r["regionId"]: int(r["pid"]) for r in system.control("GET", "/regions")["regions"] if r["running"]
    }


def _cpu(pids: Mapping[str, int]) -> dict[str, float]:
    return {r: cpu_seconds(pid) for r, pid in pids.items()}


# -- writers and arrivals -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One writer's run into one region: its run id (the items' customerId) and what it wrote."""

    region: str
    run_id: str
    written: Written
    asked: float

    @property
    def held(self) -> bool:
        return self.written.rate >= PACE_TOLERANCE * self.asked

    @property
    def shortfall(self) -> str:
        """Why a run that did not hold its rate has no verdict ("" when it held it)."""
        if self.held:
            return ""
        return (
            f"the writer into {self.region} held only {self.written.rate:,.0f} writes/s of the "
            f"{self.asked:,.0f} asked for (at worst {self.written.max_behind_ms:.0f} ms behind its schedule)"
        )


def _write_all(system: System, rates: Mapping[str, float], seconds: float) -> list[Run]:
    """One writer process per region of `rates` (bench.replication's, pinned with its region), all at
    once, each writing rate * seconds items on an absolute schedule. A writer that falls behind still
    counts (its lags are real, at a lower rate); the caller withholds the verdict (Run.held)."""
    procs: list[tuple[str, str, subprocess.Popen[str]]] = []
    for region, rate in rates.items():
        run_id = f"regions-{uuid.uuid4().hex[:12]}"
        argv = [
            sys.executable,
            "-m",
            "bench.replication",
            str(system.db(region)),
            run_id,
            f"--rate={rate}",
            f"--count={int(rate * seconds)}",
            f"--region={region}",
        ]
        proc = subprocess.Popen(
            pin(argv, system.cores[region]),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        procs.append((region, run_id, proc))
    runs: list[Run] = []
    problems: list[str] = []
    for region, run_id, proc in procs:
        out, err = proc.communicate(timeout=seconds + 120)
        if proc.returncode != 0:
            problems.append(f"the writer into {region} exited {proc.returncode}:\n{err[-2000:]}")
            continue
        raw = json.loads(out.strip().splitlines()[-1])
        written = Written(count=raw["count"], elapsed_s=raw["elapsedS"], max_behind_ms=raw["maxBehindMs"])
        runs.append(Run(region, run_id, written, rates[region]))
    if problems:
        raise BenchError("\n".join(problems))
    return runs


_RUN_SQL = (
    "SELECT key, min(written_ms), min(logged_ms) FROM changes "
    "WHERE seq > ? AND tbl = 'carts' AND origin = ? AND json_extract(key, '$.customerId') = ? GROUP BY key"
)


def _arrivals(
    system: System, ids: Sequence[str], runs: Sequence[Run], after: Mapping[str, int]
) -> dict[tuple[str, str], Arrived]:
    """Every (source, destination) pair's record of the source's run, read from the destination's own
    change log once it holds all of it (a bounded wait: whatever is still missing then fails the run)."""
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    pending = [(run, dest) for run in runs for dest in ids if dest != run.region]
    done: dict[tuple[str, str], Arrived] = {}
    while pending:
        for run, dest in list(pending):
            with contextlib.closing(_read_only(system.db(dest))) as conn:
                rows = conn.execute(_RUN_SQL, (after[dest], run.region, run.run_id)).fetchall()
            if len(rows) >= run.written.count:
                done[(run.region, dest)] = Arrived([r[1] for r in rows], [r[2] for r in rows])
                pending.remove((run, dest))
            elif time.monotonic() > deadline:
                raise BenchError(
                    f"{dest} applied {len(rows):,} of the {run.written.count:,} items written in "
                    f"{run.region} within {ARRIVAL_TIMEOUT_S:.0f} s after the writers finished"
                )
        if pending:
            time.sleep(0.05)
    return done


_RECEIVED = re.compile(r'^bookstore_replication_(applied|skipped)_total\{source="[^"]*"\} ([0-9.e+]+)$', re.M)


def _received(system: System, ids: Sequence[str]) -> dict[str, tuple[float, float]]:
    """Each region's changes received from all its peers so far, (applied, skipped as not newer), from its
    /metrics; a region whose metrics cannot be read is left out (its note then says nothing of it)."""
    counts: dict[str, tuple[float, float]] = {}
    for region in ids:
        with contextlib.suppress(httpx.HTTPError):
            text = httpx.get(system.urls[region] + "/metrics", timeout=10).text
            totals = {"applied": 0.0, "skipped": 0.0}
            for kind, value in _RECEIVED.findall(text):
                totals[kind] += float(value)
            counts[region] = (totals["applied"], totals["skipped"])
    return counts


@dataclass(frozen=True)
class Measured:
    """One measured run: the writers' runs, each pair's arrivals, each region's CPU seconds from the
    writers' start until every destination held every item, the link simulator's meanwhile, and the
    changes each region received meanwhile, (applied, skipped as not newer)."""

    runs: list[Run]
    arrived: dict[tuple[str, str], Arrived]
    cpu_s: dict[str, float]
    links_cpu_s: float
    received: dict[str, tuple[float, float]]
    # The wall time over which cpu_s was counted.
    window_s: float


def _measure(system: System, ids: Sequence[str], rates: Mapping[str, float], seconds: float) -> Measured:
    after = {r: _head_seq(system.db(r)) for r in ids}
    pids = _pids(system)
    supervisor = _supervisor_pid(system)
    received = _received(system, ids)
    before, sup_before = _cpu(pids), cpu_seconds(supervisor)
    started = time.monotonic()
    runs = _write_all(system, rates, seconds)
    arrived = _arrivals(system, ids, runs, after)
    used = {r: cpu - before[r] for r, cpu in _cpu(pids).items()}
    window_s = time.monotonic() - started
    links = cpu_seconds(supervisor) - sup_before
    now = _received(system, ids)
    delta = {
        r: (now[r][0] - received[r][0], now[r][1] - received[r][1]) for r in ids if r in now and r in received
    }
    return Measured(runs, arrived, used, links, delta, window_s)


def _supervisor_pid(system: System) -> int:
    # Every region process is a child of the supervisor: its parent is the process that runs the links.
    pid = next(iter(_pids(system).values()))
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _idle(system: System) -> dict[str, float]:
    """Each region's CPU seconds per second with nothing written (streams, heartbeats, anti-entropy)."""
    pids = _pids(system)
    before = _cpu(pids)
    time.sleep(IDLE_S)
    return {r: (cpu - before[r]) / IDLE_S for r, cpu in _cpu(pids).items()}


# -- the figures --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OneSource:
    """What phase one measured at one size: CPU per replicated write of the sender and each receiver."""

    sender_us: float
    receivers_us: dict[str, float]
    # Whether the writer held the rate asked: a ratio against a run that did not gets no verdict.
    held: bool
    # The same net of each region's CPU at rest over the run's window.
    sender_net_us: float
    receivers_net_us: dict[str, float]


def _p99_note(arrived: Arrived) -> str:
    return (
        f"{len(arrived.written_ms):,} items, p50 {arrived.percentile(0.5):.0f} ms, "
        f"max {max(arrived.lags_ms)} ms"
    )


def _received_note(received: Mapping[str, tuple[float, float]], regions: Iterable[str], writes: int) -> str:
    """How many copies of each write a receiver took in: 1 from the source, more relayed by other peers."""
    parts = [
        f"{r} {sum(received[r]) / writes:.2f} ({received[r][1] / writes:.2f} skipped as not newer)"
        for r in regions
        if r in received
    ]
    return "; changes received per write (from /metrics, all peers): " + ", ".join(parts) if parts else ""


def _one_source(system: System, ids: Sequence[str]) -> tuple[list[Figure], OneSource, list[str]]:
    idle = _idle(system)
    measured = _measure(system, ids, {SOURCE: RATE}, SECONDS)
    arrived, used, links = measured.arrived, measured.cpu_s, measured.links_cpu_s
    (run,) = measured.runs
    n = len(ids)
    writes = run.written.count
    # At a rate below the one asked the lag is measured but says nothing of the goal: no verdict.
    label = f"{n} regions, {RATE} writes/s into {SOURCE}"
    if not run.held:
        label = f"{n} regions, {run.written.rate:,.0f} writes/s (of {RATE} asked) into {SOURCE}"
    goal = Goal.maximum(LAG_GOAL_MS) if run.held else None
    figures = [
        Figure(
            f"{label}: lag p99 {SOURCE} -> {dest}",
            arrived[(SOURCE, dest)].percentile(0.99),
            "ms",
            goal,
            note=_p99_note(arrived[(SOURCE, dest)])
            + (f"; no verdict: {run.shortfall}" if goal is None else ""),
        )
        for dest in ids
        if dest != SOURCE
    ]
    per_write = {r: used[r] / writes * 1e6 for r in ids}
    rss = {r: memory_mib(pid)[0] for r, pid in _pids(system).items()}
    receivers = {r: per_write[r] for r in ids if r != SOURCE}
    worst = max(receivers, key=lambda r: receivers[r])
    # What a region would have spent at rest over the same window: the part of the raw count that is
    # not the writes', stated beside it so a slow run's longer window does not pass for a costlier write.
    net = {r: max(0.0, used[r] - idle[r] * measured.window_s) / writes * 1e6 for r in ids}
    # A saturated core time-shares its processes, so their work at rest does not go on at its idle rate
    # and the net figure means nothing there: say how busy each core was (the writer not counted).
    busy: dict[int | None, float] = {}
    for r in ids:
        busy[system.cores[r]] = busy.get(system.cores[r], 0.0) + used[r]
    busy[system.cores[ids[-1]]] = busy.get(system.cores[ids[-1]], 0.0) + links
    busy_note = ", ".join(
        f"core {core}: {cpu / measured.window_s:.0%}"
        for core, cpu in sorted(busy.items(), key=lambda kv: str(kv[0]))
    )
    saturated = any(cpu / measured.window_s > SATURATED for cpu in busy.values())
    if saturated:
        net = {r: math.nan for r in ids}
    idle_note = (
        f"CPU at rest before the run ({IDLE_S:.0f} s): "
        + ", ".join(f"{r} {idle[r] * 1000:.0f} ms/s" for r in ids)
        + f"; CPU counted over {measured.window_s:.1f} s; regions and supervisor per core, busy: {busy_note}"
        + (" (saturated: no figure net of CPU at rest)" if saturated else "")
    )
    figures += [
        Figure(
            f"{label}: CPU per replicated write, sender {SOURCE}",
            per_write[SOURCE],
            "us",
            note=(
                f"{used[SOURCE]:.2f} CPU-s over {writes:,} writes ({run.written.rate:,.0f} writes/s for "
                f"{run.written.elapsed_s:.1f} s), sent to {n - 1} peer(s): "
                f"{per_write[SOURCE] / (n - 1):.0f} us per write per peer; net of its CPU at rest over "
                f"the window {format_number(net[SOURCE])} us per write; {idle_note}; supervisor (the link "
                f"simulator) meanwhile {links:.2f} CPU-s"
            ),
        ),
        Figure(
            f"{label}: RSS of the largest region",
            max(rss.values()),
            "MiB",
            note="VmRSS after the run: " + ", ".join(f"{r} {mib:.0f} MiB" for r, mib in rss.items()),
        ),
        Figure(
            f"{label}: CPU per replicated write, receiver (worst: {worst})",
            receivers[worst],
            "us",
            note=(
                "each receiver: "
                + ", ".join(
                    f"{r} {us:.0f} us ({used[r]:.2f} CPU-s; net of CPU at rest {format_number(net[r])} us)"
                    for r, us in receivers.items()
                )
                + _received_note(measured.received, receivers, writes)
            ),
        ),
    ]
    return (
        figures,
        OneSource(
            per_write[SOURCE],
            receivers,
            run.held,
            net[SOURCE],
            {r: net[r] for r in receivers},
        ),
        [run.shortfall] if not run.held else [],
    )


def _every_region(system: System, ids: Sequence[str]) -> tuple[list[Figure], list[str]]:
    n = len(ids)
    measured = _measure(system, ids, {r: RATE / n for r in ids}, SECONDS)
    runs, arrived, used, links = measured.runs, measured.arrived, measured.cpu_s, measured.links_cpu_s
    worst = max(arrived, key=lambda pair: arrived[pair].percentile(0.99))
    total = sum(run.written.count for run in runs)
    shortfalls = [r.shortfall for r in runs if not r.held]
    rates = ", ".join(f"{r.region} {r.written.rate:.0f}" for r in runs)
    pairs = ", ".join(f"{a} -> {b} {arrived[(a, b)].percentile(0.99):.0f}" for a, b in sorted(arrived))
    figure = Figure(
        f"{n} regions, {RATE} writes/s split across all: lag p99, worst pair ({worst[0]} -> {worst[1]})",
        arrived[worst].percentile(0.99),
        "ms",
        None if shortfalls else Goal.maximum(LAG_GOAL_MS),
        note=(
            f"{RATE / n:.0f} writes/s asked of each region's writer (held: {rates}), {total:,} items in all; "
            f"p99 per pair (ms): {pairs}; CPU-s per region meanwhile: "
            + ", ".join(f"{r} {used[r]:.2f}" for r in ids)
            + f", link simulator {links:.2f}"
            + ("; no verdict: " + "; ".join(shortfalls) if shortfalls else "")
        ),
    )
    return [figure], shortfalls


def _ratio(large: float, small: float) -> str:
    if math.isnan(large) or math.isnan(small) or small <= 0:
        return "n/a (a core was saturated)"
    return f"{large:.0f} us / {small:.0f} us = {large / small:.2f} x"


def _ratios(by_size: Mapping[int, OneSource]) -> list[Figure]:
    small, large = by_size[min(SIZES)], by_size[max(SIZES)]
    worst_small, worst_large = max(small.receivers_us.values()), max(large.receivers_us.values())
    span = f"{max(SIZES)} regions / {min(SIZES)} regions"
    held = small.held and large.held
    goal = Goal.maximum(CPU_RATIO_GOAL) if held else None
    why = "" if held else "; no verdict: a writer did not hold its rate (see the figures above)"
    return [
        Figure(
            f"CPU per replicated write, sender: {span}",
            large.sender_us / small.sender_us,
            "x",
            goal,
            note=(
                f"{large.sender_us:.0f} us / {small.sender_us:.0f} us; net of CPU at rest "
                f"{_ratio(large.sender_net_us, small.sender_net_us)}{why}"
            ),
        ),
        Figure(
            f"CPU per replicated write, receiver (worst): {span}",
            worst_large / worst_small,
            "x",
            goal,
            note=(
                f"{worst_large:.0f} us / {worst_small:.0f} us; net of CPU at rest "
                f"{_ratio(max(large.receivers_net_us.values()), max(small.receivers_net_us.values()))}{why}"
            ),
        ),
    ]


METHOD = f"""
For each size (2, 3, 5 regions: {", ".join(REGIONS)}, the first N) `bookstore up` runs every
region as a process of its own on a loopback /24 of its own, on an isolated topology in a temporary
directory, with the link simulator between every pair at {DELAY_MS:.0f} ms one way (both ways, no jitter
or loss, set through the control API); each region follows every other region's log. Each phase gets a
fresh topology. Phase one: a writer process (bench.replication's) opens {SOURCE}'s tables.db and puts
{RATE} items/s into `carts` for {SECONDS:.0f} s on an absolute schedule, one transaction each (the API's
write path minus HTTP); a writer that falls below {PACE_TOLERANCE:.0%} of its rate keeps its figures,
labelled with the rate it held, but gets no verdict, and the run reports it as a failure. Lag per item
and pair is the destination's `changes.logged_ms` (when it applied the item) minus `written_ms` (the
source's write time), read from the destination's own change log once it holds every item (a missing
item fails the run); both clocks are this machine's. CPU per replicated write is a region process's CPU
seconds (user + system of all its threads, /proc/PID/stat) from the writer's start until every
destination held every item, divided by the items written: the sender is {SOURCE} (it polls its log,
which the writer fills, and streams each item to every peer), a receiver any other region (it applies
each item, which comes from the origin only: a region relays a third region's changes to a peer only
while that peer cannot reach the third one). The count is raw: it includes what a region spends at
rest over that window (streams' heartbeats, anti-entropy every 30 s), stated in the notes as measured
for {IDLE_S:.0f} s before the run, with the figure net of it unless a core was saturated (over
{SATURATED:.0%} busy with its regions and the supervisor: time-shared, they do not idle at their rate at
rest).
The receivers' notes also count the changes each took in from all its peers over the run (the deltas of
its `bookstore_replication_applied_total` and `_skipped_total` on /metrics), per write. Phase two: one
writer per region, all at once, {RATE} writes/s split evenly across the regions (not {RATE}/s each: two
cores run every region, every writer and the link simulator), lag p99 for every ordered pair (the worst
in the table, all of them in its note). Pinning (taskset): phase one puts the writer and {SOURCE} on one
core and every receiver with the supervisor (the link simulator) on the other; phase two alternates
regions between the two cores, each writer with its region, the supervisor with the last region.
No plot: no other curve bench draws one.
""".strip()


def _section(figures: list[Figure], context: dict[str, str]) -> Section:
    return Section(
        module="regions",
        title="Regions: 2, 3 and 5",
        figures=figures,
        method=METHOD,
        context=context,
    )


def _size(
    work: Path, n: int, core_pair: tuple[int | None, int | None]
) -> tuple[list[Figure], OneSource | None, list[str]]:
    """Both phases at one size, each on a topology of its own (its own pinning)."""
    ids = REGIONS[:n]
    first, second = core_pair
    figures: list[Figure] = []
    failures: list[str] = []
    one: OneSource | None = None
    phases = (
        ("one source", {r: first if r == SOURCE else second for r in ids}),
        ("every region", {r: (first, second)[i % 2] for i, r in enumerate(ids)}),
    )
    for phase, regions_cores in phases:
        try:
            with system_up(work / f"{n}-{phase.replace(' ', '-')}", ids, regions_cores) as system:
                _connected(system, ids)
                # A warm-up run: every stream open and every connection made before anything is measured.
                _measure(system, ids, {r: 100.0 for r in ids}, 1.0)
                if phase == "one source":
                    more, one, shortfalls = _one_source(system, ids)
                else:
                    more, shortfalls = _every_region(system, ids)
                figures += more
                failures += [
                    f"{n} regions, {phase}: {why} (figures kept without a verdict)" for why in shortfalls
                ]
        except BenchError as exc:
            failures.append(f"{n} regions, {phase}: {exc}")
    return figures, one, failures


def run_bench() -> Section:
    core_pair = cores()
    figures: list[Figure] = []
    failures: list[str] = []
    by_size: dict[int, OneSource] = {}
    load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="bookstore-bench-regions-") as tmp:
        for n in SIZES:
            more, one, failed = _size(Path(tmp), n, core_pair)
            figures += more
            failures += failed
            if one is not None:
                by_size[n] = one
    if min(SIZES) in by_size and max(SIZES) in by_size:
        figures += _ratios(by_size)
    load_after = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    context = {
        "Pinning": (
            f"cores {core_pair[0]} and {core_pair[1]} (taskset), as in the method"
            if core_pair[0] is not None
            else "not pinned (fewer than two cores available)"
        ),
        "Load average (1, 5, 15 min)": f"before {load_before}; after {load_after}",
        "Duration": f"{SECONDS:.0f} s per run" + (" (BENCH=quick)" if QUICK else ""),
        "Poll": POLL_NOTE,
    }
    section = _section(figures, context)
    if failures:
        if not figures:
            raise BenchError("\n".join(failures))
        raise PartialResult(section, failures)
    return section
