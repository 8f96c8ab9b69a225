"""The drills' scenarios: a fault injected through the control API (or the hosts themselves), then lifted."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bookstore.config import DEFAULT_DELAYS_MS, Topology
from bookstore.drills.checks import blog_failover_check
from bookstore.drills.hosts import ask_hosts
from bookstore.drills.observe import status
from bookstore.drills.record import Check, Event, Fault
from bookstore.replication.blog.operator import overview as blog_overview
from bookstore.runtime.operator import control_call_async
from bookstore.runtime.secret import operator_token

CONTROL_TIMEOUT_S = 90.0
BLOG_CATCH_UP_S = 20.0
# What slow-link adds each way on separate hosts to a pair of regions with no simulated delay known.
HOSTS_SLOW_MS = 250


@dataclass
class Control:
    """The supervisor's control API and what a scenario needs to act: the regions, the clock, the log."""

    control_url: str
    home: str
    other: str
    now_s: Callable[[], float]
    data_dir: Path
    topology_file: Path | None
    # Where progress goes (the CLI: stderr).
    say: Callable[[str], None] = lambda _: None
    events: list[Event] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    # A topology without a supervisor (regions on their own hosts): the calls go to the hosts (drills.hosts).
    unsupervised: Topology | None = None
    # A system not run by our supervisor (the deployed one on AWS): it answers the calls itself.
    switch: Callable[[str, str, dict[str, Any]], Coroutine[Any, Any, Any]] | None = None

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        if self.switch is not None:
            return await self.switch(method, path, body or {})
        if self.unsupervised is not None:
            return await ask_hosts(self.unsupervised, self.data_dir, method, path, body or {})
        token = operator_token(self.data_dir)
        answer = await control_call_async(
            self.control_url, token, method, path, body, timeout_s=CONTROL_TIMEOUT_S
        )
        if answer.status_code != 200:
            raise RuntimeError(f"control API {method} {path}: {answer.status_code} {answer.text[:300]}")
        return answer.json()

    def note(self, kind: str, message: str) -> None:
        self.events.append(Event(atS=round(self.now_s(), 3), kind=kind, message=message))

    def fault_started(self, name: str, target: str) -> Fault:
        fault = Fault(name=name, target=target, startS=round(self.now_s(), 3), endS=None)
        self.faults.append(fault)
        self.note("fault", f"{name} {target}")
        self.say(f"fault injected at {fault['startS']:.1f} s: {name} {target}")
        return fault

    def fault_ended(self, fault: Fault, message: str) -> None:
        fault["endS"] = round(self.now_s(), 3)
        self.note("recovery", message)
        self.say(f"fault lifted at {fault['endS']:.1f} s: {message}")

    async def cli(self, *args: str) -> str:
        """Run a `bookstore` command against this system; raises RuntimeError when it fails."""
        cmd = [sys.executable, "-m", "bookstore", *args, "--data-dir", str(self.data_dir)]
        if self.topology_file is not None:
            cmd += ["--topology", str(self.topology_file)]
        process = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"bookstore {' '.join(args)}: {out.decode(errors='replace')[-500:]}")
        return out.decode(errors="replace").strip()


class Scenario:
    """One drill: `begin` injects the fault, `end` lifts it; the runner times both and checks the rest."""

    name = ""
    description = ""
    # The failed region was down: check RPO (acknowledged writes missing in the survivor).
    measures_rpo = False
    # Shoppers on both sides (writes in both regions), else all at the home region.
    both_sides = False
    recovery_word = "recovery"
    # An author writes blog posts during the drill: the blog's own RPO and lost posts are checked.
    writes_blog = False
    # It kills and starts a region: on separate hosts, the region's agent does (agent_port, drills.hosts).
    needs_agents = False

    def __init__(self) -> None:
        self.fault: Fault | None = None

    async def begin(self, c: Control) -> None:
        raise NotImplementedError

    async def end(self, c: Control) -> None:
        raise NotImplementedError

    async def checks(self, c: Control, regions: Mapping[str, str]) -> list[Check]:
        """What this scenario checks besides every drill's checks (regions: id -> API URL)."""
        return []


class RegionOutage(Scenario):
    name = "region-outage"
    description = "kill -9 the home region's process, then start it again"
    measures_rpo = True
    recovery_word = "restart"
    needs_agents = True

    async def begin(self, c: Control) -> None:
        # The fault starts when the kill has happened: an answer still in flight when it was asked for
        # was acknowledged before the fault, and counts in the RPO window, not as a loss after it.
        await c.call("POST", f"/regions/{c.home}/kill")
        self.fault = c.fault_started("kill -9", c.home)

    async def end(self, c: Control) -> None:
        assert self.fault is not None
        c.note("note", f"starting {c.home} again")
        await c.call("POST", f"/regions/{c.home}/start")
        c.fault_ended(self.fault, f"{c.home} restarted and healthy")


class ApiBreak(Scenario):
    name = "api-break"
    description = "module 4: the home region's API answers 403 (its mapping removed), then is repaired"

    async def begin(self, c: Control) -> None:
        self.fault = c.fault_started("API mapping removed", c.home)
        await c.call("POST", f"/api/{c.home}/break")

    async def end(self, c: Control) -> None:
        assert self.fault is not None
        await c.call("POST", f"/api/{c.home}/repair")
        c.fault_ended(self.fault, f"{c.home}'s API repaired")


class Partition(Scenario):
    name = "partition"
    description = "cut the link between two regions while shoppers write on both sides, then heal it"
    both_sides = True
    recovery_word = "heal"

    async def begin(self, c: Control) -> None:
        self.fault = c.fault_started("link cut", f"{c.home} <-> {c.other}")
        await c.call("POST", f"/links/{c.home}/{c.other}", {"cut": True, "both": True})

    async def end(self, c: Control) -> None:
        assert self.fault is not None
        await c.call("POST", f"/links/{c.home}/{c.other}", {"cut": False, "both": True})
        c.fault_ended(self.fault, "link healed")


class SlowLink(Scenario):
    name = "slow-link"
    description = (
        "multiply one link's delay by 10 (both directions), then set it back; on separate hosts, where no "
        "simulator has a delay to multiply, each region of the link sends the other everything late by 10x "
        f"the pair's simulated delay (else {HOSTS_SLOW_MS} ms; its slow switch), then on time again"
    )
    both_sides = True

    def __init__(self) -> None:
        super().__init__()
        self.delays: dict[tuple[str, str], float] = {}

    async def begin(self, c: Control) -> None:
        pairs = ((c.home, c.other), (c.other, c.home))
        links = {(link["src"], link["dst"]): link for link in (await c.call("GET", "/links"))["links"]}
        if all(pair in links for pair in pairs):
            self.delays = {pair: float(links[pair]["delayMs"]) for pair in pairs}
            slow = {pair: delay * 10 for pair, delay in self.delays.items()}
            name = f"link delay x10 ({', '.join(f'{d:g} ms' for d in slow.values())})"
        else:
            # The hosts' own network (drills.hosts): its delay, unknown, is the base; the regions add to it.
            known = DEFAULT_DELAYS_MS.get(frozenset(pairs[0]))
            added = known * 10 if known is not None else HOSTS_SLOW_MS
            self.delays = dict.fromkeys(pairs, 0.0)
            slow = dict.fromkeys(pairs, added)
            name = f"link delay +{added:g} ms each way (the regions' slow switches)"
        self.fault = c.fault_started(name, f"{c.home} <-> {c.other}")
        for (a, b), delay in slow.items():
            await c.call("POST", f"/links/{a}/{b}", {"delayMs": delay})

    async def end(self, c: Control) -> None:
        assert self.fault is not None
        for (a, b), delay in self.delays.items():
            await c.call("POST", f"/links/{a}/{b}", {"delayMs": delay})
        c.fault_ended(self.fault, "link delay set back")


class ClockSkew(Scenario):
    name = "clock-skew"
    description = "run one region's clock 2 s ahead while shoppers write on both sides, then set it right"
    both_sides = True
    skew_ms = 2000

    async def begin(self, c: Control) -> None:
        self.fault = c.fault_started(f"clock +{self.skew_ms} ms", c.other)
        await c.call("POST", f"/clock/{c.other}", {"skewMs": self.skew_ms})

    async def end(self, c: Control) -> None:
        assert self.fault is not None
        await c.call("POST", f"/clock/{c.other}", {"skewMs": 0})
        c.fault_ended(self.fault, f"{c.other}'s clock set right")


class BlogFailover(Scenario):
    name = "blog-failover"
    description = "kill the blog's primary region, promote the other, restart the old primary (it rejoins)"
    measures_rpo = True
    recovery_word = "rejoin"
    writes_blog = True
    needs_agents = True

    def __init__(self) -> None:
        super().__init__()
        self.diverged: int | None = None

    async def begin(self, c: Control) -> None:
        # The fault starts when the kill has happened: an answer still in flight when it was asked for
        # was acknowledged before the fault, and counts in the RPO window, not as a loss after it.
        await c.call("POST", f"/regions/{c.home}/kill")
        self.fault = c.fault_started("kill -9 (blog primary)", c.home)
        # Forced: the drill promotes at once, whether or not a majority of the blog's regions answers
        # (with two regions, the killed primary is half of them).
        promoted = await c.call("POST", f"/blog/promote/{c.other}", {"force": True})
        c.note("failover", f"blog primary promoted: {c.other} at epoch {promoted.get('epoch')}")

    async def end(self, c: Control) -> None:
        assert self.fault is not None
        await c.call("POST", f"/regions/{c.home}/start")
        # No operator's rejoin: the deposed primary meets the higher epoch, keeps its writes past the fork
        # aside as diverged and re-syncs from the new primary by itself (the checks wait for it).
        c.fault_ended(self.fault, f"{c.home} restarted; it rejoins the blog as a replica by itself")

    async def checks(self, c: Control, regions: Mapping[str, str]) -> list[Check]:
        # The restarted region rejoins by itself, then catches up by following the new primary: give it
        # a few seconds.
        deadline = c.now_s() + BLOG_CATCH_UP_S
        async with httpx.AsyncClient(timeout=5.0) as client:
            while True:
                answers = await asyncio.gather(*(status(client, url) for url in regions.values()))
                seen = {r: (body or {}).get("blog") for r, body in zip(regions, answers, strict=True)}
                check = blog_failover_check(blog_overview(seen), c.home, c.other)
                if check["held"] or c.now_s() > deadline:
                    return [check]
                await asyncio.sleep(0.25)


SCENARIOS: dict[str, type[Scenario]] = {
    s.name: s for s in (RegionOutage, ApiBreak, Partition, SlowLink, ClockSkew, BlogFailover)
}
