"""Runs a drill: the system (started or attached, or a Site such as the deployed system on AWS), shoppers,
the fault schedule, the checks, the record."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson

from bookstore.config import Topology
from bookstore.drills import checks
from bookstore.drills.observe import (
    Observer,
    Verify,
    bestsellers_of,
    conflict_counts,
    diverged_of,
    log_heads,
    orders_of,
    posts_of,
    wait_caught_up,
    wait_converged,
    with_retries,
)
from bookstore.drills.record import Check, Record, RegionRef
from bookstore.drills.scenarios import SCENARIOS, Control, Scenario
from bookstore.drills.workload import API_KINDS, BLOG_POST, MIX, WRITER, Shopper, Workload, drill_clock
from bookstore.runtime import tls
from bookstore.runtime.operator import operator_headers
from bookstore.runtime.secret import MissingCredential, operator_secret, operator_token
from bookstore.supervisor.launch import LaunchError, launched

FAULT_AT = 0.3  # of the duration
RECOVER_AT = 0.6
SHOPPERS = 8
DRILL_BOOKS = 4
PASSWORD = "drill shopper password"
UP_TIMEOUT_S = 120.0
SETTLE_S = 30.0  # by default, the most a drill waits for convergence and best sellers
FINAL_READ_S = 10.0  # the most a region may take to answer the final reads before it fails them
BLOG_POST_RATE = 4.0  # blog posts/s the author writes through the edge (blog-failover)
# Kinds whose RTO is checked, each on its own (the writer does not pass the edge: it is not failed over).
RTO_KINDS = ("browse", "cart", "checkout", "blog", "static", BLOG_POST)


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
    # Regions to start (the topology's first N); None: the topology's active regions.
    regions: int | None = None
    # A kind has recovered at the start of the first window this long without one of its failures.
    rto_window_s: float = checks.RTO_WINDOW_S
    # Where progress goes while the drill runs (the CLI: stderr); None: nowhere.
    progress: Callable[[str], None] | None = None


# A control call of a scenario (method, path, body) answered by the site itself.
Switch = Callable[[str, str, dict[str, Any]], Coroutine[Any, Any, Any]]


@dataclass(frozen=True)
class Site:
    """What a drill drives and reads: the endpoint its shoppers go through, each active region's API read
    directly (the home region's first), how its shoppers are made and, when it is not the supervisor's
    system, who answers the scenario's control calls."""

    edge: str
    regions: dict[str, str]
    home: str
    # Confirmed accounts (emails, password) -> their user ids; blocking.
    add_users: Callable[[list[str], str], list[str]]
    names: tuple[RegionRef, ...]
    # The operator token of our edge's /edge/status (health events); None: an edge not ours (CloudFront).
    token: str | None = None
    # The regions' /status reports our replication (log heads, digests, conflicts, lag); False: the
    # engines replicate (DynamoDB global tables), and the drill waits for the orders themselves.
    replication_status: bool = True
    # Answers the scenario's control calls instead of the supervisor (AWS: the Lambda breaker).
    switch: Switch | None = None
    # Seconds the API's RTO goal allows on top of its own, and why (AWS: Route 53's detection and TTL).
    api_rto_allowance: tuple[float, str] | None = None
    # The workload's mix of requests (what the endpoint serves).
    mix: Mapping[str, float] = field(default_factory=lambda: dict(MIX))
    # What the regions' certificates are verified with (TLS between hosts: the deployment's CA).
    verify: Verify = True

    @property
    def other(self) -> str:
        return next(r for r in self.regions if r != self.home)


def run_site(site: Site, options: Options) -> Record:
    """Run one drill against `site` (not started nor stopped here) and write its record and report. Only
    api-break runs there: the site's switch breaks and repairs the API, nothing else."""
    scenario = SCENARIOS[options.scenario]()
    if site.switch is None or scenario.name != "api-break" or options.write_rate:
        raise RuntimeError(f"{scenario.name} cannot run against {site.edge}: api-break can")
    say = options.progress or (lambda _: None)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    folder = (options.data_dir / "drills" / f"{scenario.name}-{stamp}").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    say(f"drill {scenario.name}: {scenario.description}; regions {', '.join(site.regions)} via {site.edge}")
    record = asyncio.run(_drill(scenario, site, options, options.data_dir, folder))
    return _finish(record, folder, say)


def _local_site(topology: Topology, data_dir: Path) -> Site:
    """The system `bookstore up` runs (or the hosts of a topology without a supervisor)."""
    from bookstore.kernel.clock import SystemClock
    from bookstore.runtime.commands import RegionCommands

    home = topology.home_region
    verify = tls.verify(topology, data_dir)

    def add_users(emails: list[str], password: str) -> list[str]:
        # Through the running home region: its data directory is its own (storage.local.ownership).
        secret = operator_secret(data_dir)
        url = topology.region(home).api_url
        with RegionCommands(home, url, secret, SystemClock(), verify=verify) as running:
            return [str(running.add_user(e, password)["userId"]) for e in emails]

    return Site(
        edge=topology.edge.url,
        regions={r: topology.region(r).api_url for r in topology.active},
        home=home,
        add_users=add_users,
        names=tuple(
            RegionRef(id=r.id, name=r.name, flag=r.flag) for r in topology.regions if r.id in topology.active
        ),
        token=operator_token(data_dir),
        verify=verify,
    )


def run(options: Options) -> Record:
    """Run one drill and write its record (and report); the record says whether every check held."""
    scenario = SCENARIOS[options.scenario]()
    say = options.progress or (lambda _: None)
    topology = Topology.load(options.topology_file)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    folder = (options.data_dir / "drills" / f"{scenario.name}-{stamp}").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    topology, topology_file = _sized(topology, options, folder)
    options = replace(options, topology_file=topology_file)
    system_dir = options.data_dir if options.attach else folder / "system"
    if not topology.supervised:
        _without_supervisor(scenario, options, topology)
    say(f"drill {scenario.name}: {scenario.description}; regions {', '.join(topology.active)}")
    with _system(topology, options, system_dir, folder):
        site = _local_site(topology, system_dir)
        control = partial(_control, topology, options)
        record = asyncio.run(_drill(scenario, site, options, system_dir, folder, control))
    return _finish(record, folder, say)


def _control(topology: Topology, options: Options, c: Control) -> Control:
    """The local system's control: the supervisor's API, or the regions' own switches without one."""
    return replace(
        c, control_url=topology.control_url, unsupervised=None if topology.supervised else topology
    )


def _finish(record: Record, folder: Path, say: Callable[[str], None]) -> Record:
    _write(record, folder)
    say(
        f"drill {record['scenario']}: {'passed' if record['passed'] else 'FAILED'}; "
        f"report {folder / 'report.html'}"
    )
    return record


def _sized(topology: Topology, options: Options, folder: Path) -> tuple[Topology, Path | None]:
    """The topology with `--regions N` applied: its first N regions active, written beside the record
    (`bookstore up` and every command of the drill read it); unchanged without the option."""
    wanted = options.regions
    if wanted is None or wanted == len(topology.active):
        return topology, options.topology_file
    if options.attach:
        raise RuntimeError(
            f"--regions {wanted}: the running system has {len(topology.active)} active regions "
            f"({', '.join(topology.active)}); drill it as it is, or start a fresh one with --regions"
        )
    known = [r.id for r in topology.regions]
    if not 2 <= wanted <= len(known):
        raise RuntimeError(
            f"--regions must be from 2 to {len(known)} (the topology's regions: {', '.join(known)})"
        )
    active = [topology.home_region, *(r for r in known if r != topology.home_region)][:wanted]
    sized = topology.model_copy(update={"active": tuple(r for r in known if r in active)})
    path = folder / "topology.json"
    path.write_text(sized.model_dump_json(indent=2), encoding="utf-8")
    return Topology.load(path), path


@contextmanager
def _system(topology: Topology, options: Options, data_dir: Path, folder: Path) -> Iterator[None]:
    """The system under drill: attached to, or `bookstore up` on a fresh data dir, stopped afterwards."""
    say = options.progress or (lambda _: None)
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
    say(f"start-up: bookstore up on {data_dir} ({len(topology.active)} regions, log {folder / 'up.log'})")
    began = time.monotonic()
    try:
        with launched(data_dir, folder / "up.log", options.topology_file, timeout_s=UP_TIMEOUT_S):
            say(f"start-up: the system is up after {time.monotonic() - began:.1f} s")
            yield
            say("stopping the system")
    except LaunchError as exc:
        raise RuntimeError(f"`bookstore up` did not come up (log {folder / 'up.log'}): {exc}") from None


def _without_supervisor(scenario: Scenario, options: Options, topology: Topology) -> None:
    """Refuses, saying why, a drill that a topology without a supervisor cannot run."""
    if not options.attach:
        raise RuntimeError(
            "this topology has no supervisor (supervised = false): start its regions and edge on their "
            "hosts, then drill them with --attach"
        )
    agents = all(topology.region(r).agent_port is not None for r in topology.active)
    if scenario.needs_agents and not agents:
        runnable = ", ".join(name for name, kind in SCENARIOS.items() if not kind.needs_agents)
        without = ", ".join(r for r in topology.active if topology.region(r).agent_port is None)
        raise RuntimeError(
            f"{scenario.name} kills and starts a region, which without a supervisor its host's agent does, "
            f"and {without} has none: give each region an agent_port in the topology and run "
            "`bookstore region agent --region R` on its host instead of `region serve`; drills that run "
            f"here: {runnable}"
        )


def _require(topology: Topology, data_dir: Path) -> None:
    try:
        operator = operator_headers(operator_token(data_dir))
    except MissingCredential as exc:
        raise RuntimeError(f"--attach: {exc}") from None
    asked = [("edge", topology.edge.url)]
    if topology.supervised:
        asked.insert(0, ("control API", topology.control_url + "/regions"))
    for name, url in asked:
        try:
            path = "/edge/status" if name == "edge" else ""
            httpx.get(url + path, headers=operator, timeout=3).raise_for_status()
        except httpx.HTTPError as exc:
            raise RuntimeError(f"--attach: the {name} does not answer at {url} ({exc})") from None


def _spread(shoppers: list[Shopper], regions: list[str], both_sides: bool) -> list[Shopper]:
    """Shoppers of a both-sides drill in every region in turn (all at home otherwise)."""
    if not both_sides:
        return shoppers
    return [replace(s, location=regions[i % len(regions)]) for i, s in enumerate(shoppers)]


async def _author(control: Control, edge: str, home: str) -> Shopper:
    """A blog author for the drill's posts: added with `bookstore users add --role author`, signed in."""
    email = f"drill-author-{os.urandom(4).hex()}@example.com"
    said = await control.cli("users", "add", email, "--password", PASSWORD, "--role", "author")
    async with httpx.AsyncClient(base_url=edge, timeout=10) as client:
        answer = await client.post(
            "/api/auth/signin", json={"email": email, "password": PASSWORD}, headers={"X-Client-Region": home}
        )
    answer.raise_for_status()
    user_id = said.rsplit("user id ", 1)[-1].strip()
    return Shopper(email, user_id, answer.json()["accessToken"], home)


async def _ticker(
    now_s: Callable[[], float], duration_s: float, workload: Workload, say: Callable[[str], None]
) -> None:
    """One progress line per second of workload: how many requests so far, how many failed."""
    second = 0
    while second < math.ceil(duration_s):
        second += 1
        await _until(now_s, second)
        done = workload.samples
        failed = sum(not s.ok for s in done)
        say(f"workload: second {second} of {math.ceil(duration_s)} ({len(done)} requests, {failed} failed)")


async def _drill(
    scenario: Scenario,
    site: Site,
    options: Options,
    data_dir: Path,
    folder: Path,
    local: Callable[[Control], Control] | None = None,
) -> Record:
    """The drill itself against `site`; `local` completes the control of the local system (without it,
    the site's switch answers the scenario's calls)."""
    say = options.progress or (lambda _: None)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    regions, home, other, edge = site.regions, site.home, site.other, site.edge
    verify = site.verify
    say("start-up: signing in the drill's shoppers")
    shoppers, books = await _prepare(site, scenario.both_sides)
    shoppers = _spread(shoppers, list(regions), scenario.both_sides)
    # The drill's clock starts once the system is ready and the shoppers signed in.
    now_s, wall_t0 = drill_clock(), time.time()
    control = Control("", home, other, now_s, data_dir, options.topology_file, say=say, switch=site.switch)
    if local is not None:
        control = local(control)
    author = await _author(control, edge, home) if scenario.writes_blog else None
    blog_tag = f"drill-{os.urandom(4).hex()}"
    fresh = not options.attach
    control.note("note", f"{'fresh system' if fresh else 'attached'}; {len(shoppers)} shoppers")
    if site.replication_status:
        await wait_converged(regions, now_s, now_s() + options.settle_s, verify)
    before = {r: await bestsellers_of(u, verify) or {} for r, u in regions.items()}
    conflicts_before = await conflict_counts(regions, verify) if site.replication_status else {}
    links = await control.call("GET", "/links")
    one_way_ms = max(
        (float(x["delayMs"]) for x in links["links"] if {x["src"], x["dst"]} == {home, other}), default=0.0
    )

    workload = Workload(edge, shoppers, books, options.rate, options.seed, now_s, mix=site.mix)
    workload.writer_url, workload.write_rate = regions[home], options.write_rate
    if author is not None:
        workload.author, workload.blog_rate, workload.blog_tag = author, BLOG_POST_RATE, blog_tag
    observer = Observer(
        regions, edge, now_s, wall_t0, site.token, replication=site.replication_status, verify=verify
    )
    stop = asyncio.Event()
    watching = asyncio.create_task(observer.run(stop))
    say(f"workload: {options.duration_s:g} s at {options.rate:g} requests/s through the edge {edge}")
    traffic = asyncio.create_task(workload.run(options.duration_s))
    ticking = asyncio.create_task(_ticker(now_s, options.duration_s, workload, say))
    survivors: dict[str, dict[str, dict[str, int]] | None] | None = None
    broken = False
    converged_s: float | None = None
    recovered_s: float | None = None
    looked_s = 0.0
    try:
        await _until(now_s, options.duration_s * FAULT_AT)
        # Set first: a fault that failed half-way through its start is lifted too (lifting is safe twice).
        broken = True
        await scenario.begin(control)
        if scenario.measures_rpo:
            # In-flight replication lands one one-way delay after the fault; then what is missing is lost.
            await asyncio.sleep(one_way_ms / 1000 + 0.5)
            survivors = {r: await orders_of(u, shoppers, verify) for r, u in regions.items() if r != home}
            looked_s = now_s()
        await _until(now_s, options.duration_s * RECOVER_AT)
        broken = False
        await scenario.end(control)
        recovered_s = now_s()
        say(
            "recovery: waiting until every region holds what the others had logged at the "
            + scenario.recovery_word
        )
        if site.replication_status:
            heads = await log_heads(regions, verify)
            if heads is not None:
                converged_s = await wait_caught_up(
                    regions, heads, now_s, recovered_s + options.settle_s, verify
                )
        else:
            acked = set(checks.acknowledged_orders(workload.samples))
            converged_s, _ = await _orders_everywhere(
                regions, shoppers, acked, now_s, recovered_s + options.settle_s, verify
            )
        if converged_s is not None:
            control.note(
                "convergence",
                f"every region holds what every other had logged at the {scenario.recovery_word}, "
                f"{converged_s - recovered_s:.2f} s after",
            )
        else:
            say(f"recovery: the regions did not catch up within {options.settle_s:g} s")
        await traffic
    finally:
        if broken:
            # The drill failed between the fault and its end: lift the fault all the same.
            say("the drill stopped with its fault in place: lifting it")
            with contextlib.suppress(Exception):
                await scenario.end(control)
        if not traffic.done():
            traffic.cancel()
        ticking.cancel()
        await asyncio.gather(traffic, ticking, return_exceptions=True)
        stop.set()
        await watching

    # After the workload: everything acknowledged must be everywhere, each order once, counted once.
    say("checks: waiting for equal digests, then reading every region's orders")
    quiet_s = now_s()
    equal_s: float | None = None
    orders: dict[str, dict[str, dict[str, int]] | None]
    if site.replication_status:
        equal_s = await wait_converged(regions, now_s, quiet_s + options.settle_s, verify)
        reads_until = now_s() + FINAL_READ_S
        orders = {
            r: await with_retries(partial(orders_of, u, shoppers, verify), now_s, reads_until)
            for r, u in regions.items()
        }
    else:
        # No digest to compare: every acknowledged order in every region (or the settle time) is the end.
        acked = set(checks.acknowledged_orders(workload.samples))
        _, orders = await _orders_everywhere(
            regions, shoppers, acked, now_s, quiet_s + options.settle_s, verify
        )
    answered = {r: o for r, o in orders.items() if o is not None}
    samples = workload.samples
    say("checks: best sellers, conflicts")
    after = await _bestsellers_settled(regions, answered, before, books, now_s, options.settle_s, verify)
    conflicts_after = await conflict_counts(regions, verify) if site.replication_status else {}
    until_s = options.duration_s
    fault_s = scenario.fault["startS"] if scenario.fault is not None else options.duration_s * FAULT_AT
    found: list[Check] = [
        checks.rto_check(
            kind, samples, options.rto_window_s, until_s, _allowance(kind, control, fault_s, site)
        )
        for kind in RTO_KINDS
        if any(s.kind == kind for s in samples)
    ]
    found.append(checks.failed_idempotent_check(samples))
    found.append(
        checks.rpo_check(
            samples,
            fault_s,
            one_way_ms,
            orders,
            failed_region=home if scenario.measures_rpo else None,
            survivors=survivors,
            looked_s=looked_s,
        )
    )
    found += await scenario.checks(control, regions)
    if author is not None:
        say("checks: the blog's posts in every region, and the diverged writes")
        posts = {
            r: await with_retries(partial(posts_of, u, blog_tag, verify), now_s, now_s() + FINAL_READ_S)
            for r, u in regions.items()
        }
        secret = operator_secret(data_dir)
        diverged = {
            r: await with_retries(
                partial(diverged_of, regions, r, secret, verify), now_s, now_s() + FINAL_READ_S
            )
            for r in regions
        }
        found += [
            checks.blog_rpo_check(samples, fault_s, one_way_ms, posts),
            checks.blog_lost_check(samples, posts, diverged),
        ]
    found += [
        checks.lost_check(samples, orders),
        checks.duplicates_check(samples, orders),
        checks.bestsellers_check(answered, before, after, books, fresh),
        checks.convergence_check(f"convergence after {scenario.recovery_word}", recovered_s, converged_s),
    ]
    if site.replication_status:
        found += [
            checks.equal_check(quiet_s, equal_s),
            checks.conflicts_check(conflicts_before, conflicts_after),
        ]
    events = sorted(control.events + observer.events, key=lambda e: e["atS"])
    missed = [c["name"] for c in found if not c["held"]]
    say(
        f"checks: {len(found) - len(missed)} of {len(found)} held"
        + (f"; not held: {', '.join(missed)}" if missed else "")
    )
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
            "blogPostsSent": sum(s.kind == BLOG_POST for s in samples),
            "checkoutsWithoutKey": sum(s.kind == "checkout" and s.idempotency_key is None for s in samples),
            "seed": options.seed,
            "shoppers": len(shoppers),
            "attach": options.attach,
            "dataDir": str(data_dir.resolve()),
            "linkOneWayMs": one_way_ms,
            "apiKinds": list(API_KINDS),
            "regions": len(regions),
            "rtoWindowS": options.rto_window_s,
            "endpoint": edge,
        },
        regions=list(site.names),
        faults=control.faults,
        events=events,
        timeline=checks.timeline(samples),
        lag=observer.lag,
        kinds=checks.kind_summaries(samples, options.rto_window_s, until_s),
        checks=found,
        passed=all(c["held"] for c in found),
        files={"record": str(folder / "record.json"), "report": str(folder / "report.html")},
    )


def _allowance(kind: str, control: Control, fault_s: float, site: Site) -> tuple[float, str] | None:
    """For the blog's writes, the time from the fault until the promotion had answered: no primary takes
    them before; the RTO goal of the edge routing them to the new one starts from there. For the API's
    requests, what the site allows (AWS: Route 53's checks and the resolvers' TTL)."""
    if kind in API_KINDS:
        return site.api_rto_allowance
    promoted = [e["atS"] for e in control.events if e["kind"] == "failover"]
    if kind != BLOG_POST or not promoted:
        return None
    return max(0.0, promoted[0] - fault_s), "until the promotion"


async def _until(now_s: Any, at_s: float) -> None:
    await asyncio.sleep(max(0.0, at_s - now_s()))


async def _prepare(site: Site, both_sides: bool) -> tuple[list[Shopper], list[str]]:
    """Drill shoppers (new confirmed users, signed in through the edge) and the books they buy."""
    run_id = os.urandom(4).hex()
    emails = [f"drill-{run_id}-{i}@example.com" for i in range(SHOPPERS)]
    home, other = site.home, site.other
    user_ids = await asyncio.to_thread(site.add_users, emails, PASSWORD)
    shoppers: list[Shopper] = []
    async with httpx.AsyncClient(base_url=site.edge, timeout=10) as client:
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


async def _orders_everywhere(
    regions: Mapping[str, str],
    shoppers: list[Shopper],
    acked: set[str],
    now_s: Any,
    deadline_s: float,
    verify: Verify = True,
) -> tuple[float | None, dict[str, dict[str, dict[str, int]] | None]]:
    """For engines that replicate by themselves: the drill time at which every region held every order
    of `acked` (None by the deadline), and the orders each region last answered."""
    while True:
        orders = {r: await orders_of(u, shoppers, verify) for r, u in regions.items()}
        if all(held is not None and acked <= set(held) for held in orders.values()):
            return now_s(), orders
        if now_s() >= deadline_s:
            return None, orders
        await asyncio.sleep(0.5)


async def _bestsellers_settled(
    regions: dict[str, str],
    orders: dict[str, dict[str, dict[str, int]]],
    before: dict[str, dict[str, int]],
    books: list[str],
    now_s: Any,
    settle_s: float,
    verify: Verify = True,
) -> dict[str, dict[str, int]]:
    """The regions' best sellers once they count the drill's orders (stream consumers lag a little)."""
    deadline = now_s() + settle_s
    while True:
        after = {r: got for r, u in regions.items() if (got := await bestsellers_of(u, verify)) is not None}
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
