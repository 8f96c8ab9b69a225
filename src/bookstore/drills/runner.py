"""Runs a drill: the system (started or attached), shoppers, the fault schedule, the checks, the record."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from bookstore.config import Topology
from bookstore.drills import checks
from bookstore.drills.observe import (
    Observer,
    bestsellers_of,
    conflict_counts,
    log_heads,
    orders_of,
    wait_caught_up,
    wait_converged,
)
from bookstore.drills.record import Check, Record
from bookstore.drills.scenarios import SCENARIOS, Control, Scenario
from bookstore.drills.workload import API_KINDS, WRITER, Shopper, Workload, drill_clock
from bookstore.runtime.control import operator_headers
from bookstore.runtime.launch import LaunchError, launched
from bookstore.runtime.secret import MissingCredential, operator_token

FAULT_AT = 0.3  # of the duration
RECOVER_AT = 0.6
SHOPPERS = 8
DRILL_BOOKS = 4
PASSWORD = "drill shopper password"
UP_TIMEOUT_S = 120.0
SETTLE_S = 30.0  # by default, the most a drill waits for convergence and best sellers


@dataclass(frozen=True)
class Options:
    scenario: str
    rate: float = 40.0
    duration_s: float = 30.0
    attach: bool = False
    data_dir: Path = Path("data")
    topology_file: Path | None = None
    seed: int = 1
    settle_s: float = SETTLE_S
    # Orders/s written straight to the home region's API (not through the edge) besides the shoppers.
    write_rate: float = 0.0


def run(options: Options) -> Record:
    """Run one drill and write its record (and report); the record says whether every check held."""
    scenario = SCENARIOS[options.scenario]()
    topology = Topology.load(options.topology_file)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    folder = (options.data_dir / "drills" / f"{scenario.name}-{stamp}").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    system_dir = options.data_dir if options.attach else folder / "system"
    with _system(topology, options, system_dir, folder):
        record = asyncio.run(_drill(scenario, topology, options, system_dir, folder))
    _write(record, folder)
    return record


@contextmanager
def _system(topology: Topology, options: Options, data_dir: Path, folder: Path) -> Iterator[None]:
    """The system under drill: attached to, or `bookstore up` on a fresh data dir, stopped afterwards."""
    if options.attach:
        _require(topology, data_dir)
        yield
        return
    try:
        httpx.get(topology.control_url + "/regions", timeout=1)
    except httpx.HTTPError:
        pass
    else:
        raise RuntimeError(
            f"a system already answers at {topology.control_url}: use --attach, or stop it first"
        )
    try:
        with launched(data_dir, folder / "up.log", options.topology_file, timeout_s=UP_TIMEOUT_S):
            yield
    except LaunchError as exc:
        raise RuntimeError(f"`bookstore up` did not come up (log {folder / 'up.log'}): {exc}") from None


def _require(topology: Topology, data_dir: Path) -> None:
    try:
        operator = operator_headers(operator_token(data_dir))
    except MissingCredential as exc:
        raise RuntimeError(f"--attach: {exc}") from None
    for name, url in (("control API", topology.control_url + "/regions"), ("edge", topology.edge.url)):
        try:
            path = "/edge/status" if name == "edge" else ""
            httpx.get(url + path, headers=operator, timeout=3).raise_for_status()
        except httpx.HTTPError as exc:
            raise RuntimeError(f"--attach: the {name} does not answer at {url} ({exc})") from None


async def _drill(
    scenario: Scenario, topology: Topology, options: Options, data_dir: Path, folder: Path
) -> Record:
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    regions = {r: topology.region(r).api_url for r in topology.active}
    home = topology.home_region
    other = next(r for r in topology.active if r != home)
    edge = topology.edge.url
    shoppers, books = await _prepare(topology, data_dir, home, other, scenario.both_sides, edge)
    # The drill's clock starts once the system is ready and the shoppers signed in.
    now_s, wall_t0 = drill_clock(), time.time()
    control = Control(topology.control_url, home, other, now_s, data_dir, options.topology_file)
    fresh = not options.attach
    control.note("note", f"{'fresh system' if fresh else 'attached'}; {len(shoppers)} shoppers")
    await wait_converged(regions, now_s, now_s() + options.settle_s)
    before = {r: await bestsellers_of(u) or {} for r, u in regions.items()}
    conflicts_before = await conflict_counts(regions)
    links = await control.call("GET", "/links")
    one_way_ms = max(
        (float(x["delayMs"]) for x in links["links"] if {x["src"], x["dst"]} == {home, other}), default=0.0
    )

    workload = Workload(edge, shoppers, books, options.rate, options.seed, now_s)
    workload.writer_url, workload.write_rate = regions[home], options.write_rate
    observer = Observer(regions, edge, now_s, wall_t0, operator_token(data_dir))
    stop = asyncio.Event()
    watching = asyncio.create_task(observer.run(stop))
    traffic = asyncio.create_task(workload.run(options.duration_s))
    survivor_orders: dict[str, dict[str, int]] | None = None
    converged_s: float | None = None
    recovered_s: float | None = None
    looked_s = 0.0
    try:
        await _until(now_s, options.duration_s * FAULT_AT)
        await scenario.begin(control)
        if scenario.measures_rpo:
            # In-flight replication lands one one-way delay after the fault; then what is missing is lost.
            await asyncio.sleep(one_way_ms / 1000 + 0.5)
            survivor_orders = await orders_of(regions[other], shoppers)
            looked_s = now_s()
        await _until(now_s, options.duration_s * RECOVER_AT)
        await scenario.end(control)
        recovered_s = now_s()
        heads = await log_heads(regions)
        if heads is not None:
            converged_s = await wait_caught_up(regions, heads, now_s, recovered_s + options.settle_s)
        if converged_s is not None:
            control.note(
                "convergence",
                f"every region holds what every other had logged at the {scenario.recovery_word}, "
                f"{converged_s - recovered_s:.2f} s after",
            )
        await traffic
    finally:
        if not traffic.done():
            traffic.cancel()
        await asyncio.gather(traffic, return_exceptions=True)
        stop.set()
        await watching

    # After the workload: everything acknowledged must be everywhere, each order once, counted once.
    quiet_s = now_s()
    equal_s = await wait_converged(regions, now_s, quiet_s + options.settle_s)
    orders = {r: o for r, u in regions.items() if (o := await orders_of(u, shoppers)) is not None}
    samples = workload.samples
    after = await _bestsellers_settled(regions, orders, before, books, now_s, options.settle_s)
    conflicts_after = await conflict_counts(regions)
    found: list[Check] = [
        checks.rto_check("RTO of API reads", samples, ("browse",)),
        checks.rto_check("RTO of API writes", samples, ("cart", "checkout")),
        checks.failed_idempotent_check(samples),
    ]
    if scenario.name == "blog-failover":
        found.append(checks.rto_check("RTO of blog reads", samples, ("blog",)))
    if scenario.measures_rpo and scenario.fault is not None:
        found.append(
            checks.rpo_check(
                samples, home, scenario.fault["startS"], survivor_orders or {}, one_way_ms, looked_s
            )
        )
    found += await scenario.checks(control, regions)
    found += [
        checks.lost_check(samples, orders),
        checks.duplicates_check(samples, orders),
        checks.bestsellers_check(orders, before, after, books, fresh),
        checks.convergence_check(f"convergence after {scenario.recovery_word}", recovered_s, converged_s),
        checks.equal_check(quiet_s, equal_s),
        checks.conflicts_check(conflicts_before, conflicts_after),
    ]
    events = sorted(control.events + observer.events, key=lambda e: e["atS"])
    return Record(
        scenario=scenario.name,
        description=scenario.description,
        startedAt=started_at,
        durationS=options.duration_s,
        params={
            "rate": options.rate,
            "writeRate": options.write_rate,
            "writesAcknowledgedPerS": round(checks.acknowledged_rate(samples, WRITER), 1),
            "writesSent": sum(s.kind == WRITER for s in samples),
            "seed": options.seed,
            "shoppers": len(shoppers),
            "attach": options.attach,
            "dataDir": str(data_dir.resolve()),
            "linkOneWayMs": one_way_ms,
            "apiKinds": list(API_KINDS),
        },
        regions=[{"id": r.id, "name": r.name, "flag": r.flag} for r in topology.regions if r.id in regions],
        faults=control.faults,
        events=events,
        timeline=checks.timeline(samples),
        lag=observer.lag,
        kinds=checks.kind_summaries(samples),
        checks=found,
        passed=all(c["held"] for c in found),
        files={"record": str(folder / "record.json"), "report": str(folder / "report.html")},
    )


async def _until(now_s: Any, at_s: float) -> None:
    await asyncio.sleep(max(0.0, at_s - now_s()))


async def _prepare(
    topology: Topology, data_dir: Path, home: str, other: str, both_sides: bool, edge: str
) -> tuple[list[Shopper], list[str]]:
    """Drill shoppers (new confirmed users, signed in through the edge) and the books they buy."""
    from bookstore.blog.replication import operator_secret
    from bookstore.replication.clock import SystemClock
    from bookstore.runtime.commands import RegionCommands

    run_id = os.urandom(4).hex()
    emails = [f"drill-{run_id}-{i}@example.com" for i in range(SHOPPERS)]
    target = topology.region(home)

    def add_users() -> list[str]:
        # Through the running home region: its data directory is its own (storage.local.ownership).
        with RegionCommands(home, target.api_url, operator_secret(data_dir), SystemClock()) as running:
            return [str(running.add_user(e, PASSWORD)["userId"]) for e in emails]

    user_ids = await asyncio.to_thread(add_users)
    shoppers: list[Shopper] = []
    async with httpx.AsyncClient(base_url=edge, timeout=10) as client:
        books = [b["id"] for b in (await client.get("/api/books")).raise_for_status().json()][:DRILL_BOOKS]
        for i, (email, user_id) in enumerate(zip(emails, user_ids, strict=True)):
            location = other if both_sides and i % 2 else home
            answer = await client.post(
                "/api/auth/signin",
                json={"email": email, "password": PASSWORD},
                headers={"X-Client-Region": home},
            )
            answer.raise_for_status()
            shoppers.append(Shopper(email, user_id, answer.json()["accessToken"], location))
    return shoppers, books


async def _bestsellers_settled(
    regions: dict[str, str],
    orders: dict[str, dict[str, dict[str, int]]],
    before: dict[str, dict[str, int]],
    books: list[str],
    now_s: Any,
    settle_s: float,
) -> dict[str, dict[str, int]]:
    """The regions' best sellers once they count the drill's orders (stream consumers lag a little)."""
    deadline = now_s() + settle_s
    while True:
        after = {r: got for r, u in regions.items() if (got := await bestsellers_of(u)) is not None}
        if checks.bestsellers_check(orders, before, after, books, True)["held"] or now_s() > deadline:
            return after
        await asyncio.sleep(0.25)


def _write(record: Record, folder: Path) -> None:
    (folder / "record.json").write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2))
    try:
        from bookstore.drills.report import write_html
    except ImportError:
        return
    write_html(record, Path(record["files"]["report"]))
