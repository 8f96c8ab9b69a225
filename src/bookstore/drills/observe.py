"""What a drill watches besides its requests: regions' /status, the edge's health, orders and best sellers."""

from __future__ import annotations

import asyncio
import contextlib
import html
import ssl
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from bookstore.api.paging import NEXT_CURSOR
from bookstore.drills.record import Event, LagPoint
from bookstore.drills.workload import BLOG_API, Shopper
from bookstore.runtime.operator import operator_headers

SAMPLE_EVERY_S = 1.0
DIGEST_EVERY_S = 0.1
STATUS_TIMEOUT_S = 2.0
# httpx's `verify=`: the deployment's CA with TLS between hosts (runtime.tls.verify), else the default.
Verify = ssl.SSLContext | bool
T = TypeVar("T")


@dataclass
class Observer:
    """Samples replication lag and conflicts each second and turns the edge's health changes into events."""

    regions: Mapping[str, str]  # region id -> API base URL
    edge_url: str
    now_s: Callable[[], float]
    wall_t0: float  # time.time() at the drill's start, to place the edge's timestamps
    token: str | None  # the operator token of our edge's /edge/status; None: an edge not ours
    lag: list[LagPoint] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    conflicts: dict[str, int] = field(default_factory=dict)
    _seen_changes: set[tuple[str, int]] = field(default_factory=set)
    # The regions' /status reports our replication (lag, conflicts); False: the engines replicate.
    replication: bool = True
    # What the regions' certificates are verified with (TLS between hosts: the deployment's CA).
    verify: ssl.SSLContext | bool = True

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=STATUS_TIMEOUT_S, verify=self.verify) as client:
            await self._edge(client, announce=False)
            while not stop.is_set():
                looks = [self._edge(client, announce=True)]
                if self.replication:
                    looks.append(self._statuses(client))
                await asyncio.gather(*looks)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), SAMPLE_EVERY_S)

    async def _statuses(self, client: httpx.AsyncClient) -> None:
        at = round(self.now_s(), 3)
        answers = await asyncio.gather(*(status(client, url) for url in self.regions.values()))
        for destination, body in zip(self.regions, answers, strict=True):
            replication = (body or {}).get("replication") or {}
            lags = replication.get("lag") or {}
            for source in self.regions:
                if source == destination:
                    continue
                value = _lag(body, lags.get(source), (replication.get("peers") or {}).get(source))
                self.lag.append(LagPoint(atS=at, source=source, destination=destination, lagMs=value))
            if "conflicts" in replication:
                self.conflicts[destination] = int(replication["conflicts"])

    async def _edge(self, client: httpx.AsyncClient, announce: bool) -> None:
        if self.token is None:
            return
        try:
            answer = await client.get(f"{self.edge_url}/edge/status", headers=operator_headers(self.token))
            targets = answer.json()["targets"]
        except (httpx.HTTPError, ValueError, KeyError):
            return
        for target in targets:
            for change in target.get("changes", []):
                mark = (str(target["id"]), int(change["atMs"]))
                if mark in self._seen_changes:
                    continue
                self._seen_changes.add(mark)
                if announce:
                    state = "healthy" if change["healthy"] else "unhealthy"
                    self.events.append(
                        Event(
                            atS=round(change["atMs"] / 1000 - self.wall_t0, 3),
                            kind="health",
                            message=f"edge: {target['id']} {state} ({change.get('reason') or 'check'})",
                        )
                    )


def _lag(body: Any, figure: Mapping[str, Any] | None, peer: Mapping[str, Any] | None) -> float | None:
    """The lag to chart for one pair: the newest applied change's, 0 when connected with nothing new to
    apply, None when unknown (the region did not answer, or does not reach the source)."""
    if body is None or not (peer or {}).get("connected"):
        return None
    if figure and "lastMs" in figure:
        return float(figure["lastMs"])
    return 0.0


async def status(client: httpx.AsyncClient, api_url: str, digest: bool = False) -> dict[str, Any] | None:
    """A region's /status, or None when it does not answer."""
    try:
        answer = await client.get(f"{api_url}/status", params={"digest": "true"} if digest else None)
        body: dict[str, Any] = answer.json()
        return body if answer.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


async def conflict_counts(regions: Mapping[str, str], verify: Verify = True) -> dict[str, int]:
    async with httpx.AsyncClient(timeout=STATUS_TIMEOUT_S, verify=verify) as client:
        answers = await asyncio.gather(*(status(client, url) for url in regions.values()))
    return {
        r: int(b["replication"]["conflicts"])
        for r, b in zip(regions, answers, strict=True)
        if b is not None and b.get("replication")
    }


async def wait_converged(
    regions: Mapping[str, str], now_s: Callable[[], float], deadline_s: float, verify: Verify = True
) -> float | None:
    """The drill time at which every region first gave the same table digest, or None by the deadline."""
    async with httpx.AsyncClient(timeout=STATUS_TIMEOUT_S, verify=verify) as client:
        while now_s() < deadline_s:
            answers = await asyncio.gather(*(status(client, u, digest=True) for u in regions.values()))
            digests = {(b or {}).get("stateDigest") for b in answers}
            if len(digests) == 1 and None not in digests:
                return now_s()
            await asyncio.sleep(DIGEST_EVERY_S)
    return None


async def log_heads(regions: Mapping[str, str], verify: Verify = True) -> dict[str, int] | None:
    """Each region's change-log head (replication.headSeq of /status), or None if one does not answer."""
    async with httpx.AsyncClient(timeout=STATUS_TIMEOUT_S, verify=verify) as client:
        answers = await asyncio.gather(*(status(client, url) for url in regions.values()))
    heads = {
        r: ((body or {}).get("replication") or {}).get("headSeq")
        for r, body in zip(regions, answers, strict=True)
    }
    if any(h is None for h in heads.values()):
        return None
    return {r: int(h) for r, h in heads.items() if h is not None}


async def wait_caught_up(
    regions: Mapping[str, str],
    heads: Mapping[str, int],
    now_s: Callable[[], float],
    deadline_s: float,
    verify: Verify = True,
) -> float | None:
    """The drill time at which every region had applied every other region's log up to `heads` (its
    checkpoint for that region reached the head), or None by the deadline. Unlike equal digests, this
    holds while writes go on."""
    async with httpx.AsyncClient(timeout=STATUS_TIMEOUT_S, verify=verify) as client:
        while now_s() < deadline_s:
            answers = await asyncio.gather(*(status(client, u) for u in regions.values()))
            if all(_holds(body, dst, heads) for dst, body in zip(regions, answers, strict=True)):
                return now_s()
            await asyncio.sleep(DIGEST_EVERY_S)
    return None


def _holds(body: Mapping[str, Any] | None, region: str, heads: Mapping[str, int]) -> bool:
    peers = ((body or {}).get("replication") or {}).get("peers") or {}
    for source, head in heads.items():
        if source == region:
            continue
        checkpoint = (peers.get(source) or {}).get("checkpoint")
        if checkpoint is None or checkpoint < head:
            return False
    return body is not None


async def orders_of(
    api_url: str, shoppers: Collection[Shopper], verify: Verify = True
) -> dict[str, dict[str, int]] | None:
    """Every order of the shoppers in one region (order id -> {book: quantity}), or None if it fails."""
    found: dict[str, dict[str, int]] = {}
    async with httpx.AsyncClient(base_url=api_url, timeout=10.0, verify=verify) as client:
        for shopper in shoppers:
            params: dict[str, str] = {}
            while True:  # the list is paged: a shopper of a long drill has more orders than one page
                try:
                    answer = await client.get(
                        "/orders", params=params, headers={"Authorization": f"Bearer {shopper.token}"}
                    )
                except httpx.HTTPError:
                    return None
                if answer.status_code != 200:
                    return None
                for order in answer.json():
                    found[order["orderId"]] = {b["bookId"]: int(b["quantity"]) for b in order["books"]}
                cursor = answer.headers.get(NEXT_CURSOR)
                if cursor is None:
                    break
                params = {"cursor": cursor}
    return found


async def bestsellers_of(api_url: str, verify: Verify = True) -> dict[str, int] | None:
    try:
        async with httpx.AsyncClient(timeout=5.0, verify=verify) as client:
            answer = await client.get(f"{api_url}/bestsellers")
        if answer.status_code != 200:
            return None
        return {b["bookId"]: int(b["quantity"]) for b in answer.json()}
    except (httpx.HTTPError, ValueError):
        return None


async def posts_of(api_url: str, tag: str, verify: Verify = True) -> set[str] | None:
    """Titles of the region's blog posts carrying `tag`, or None if it does not answer."""
    titles: set[str] = set()
    page, pages = 1, 1
    try:
        async with httpx.AsyncClient(timeout=10.0, verify=verify) as client:
            while page <= pages:
                answer = await client.get(
                    f"{api_url}{BLOG_API}", params={"tags": tag, "per_page": "100", "page": str(page)}
                )
                if answer.status_code != 200:
                    return None
                titles |= {html.unescape(str(post["title"]["rendered"])) for post in answer.json()}
                pages, page = int(answer.headers.get("x-wp-totalpages", "1")), page + 1
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None
    return titles


async def diverged_of(
    api_urls: Mapping[str, str], region: str, secret: str, verify: Verify
) -> set[str] | None:
    """Titles of the blog posts `region` keeps aside as diverged writes (the operator's signed read), or
    None if it does not answer: a list not read is not an empty one."""
    from bookstore.domain.errors import BookstoreError
    from bookstore.kernel.clock import SystemClock
    from bookstore.replication.blog.operator import Operator

    def read() -> list[Any]:
        with Operator(api_urls, secret, SystemClock(), timeout_s=10.0, verify=verify) as operator:
            return operator.diverged(region, limit=100_000).get("diverged") or []

    try:
        records = await asyncio.to_thread(read)
    except BookstoreError:
        return None
    titles: set[str] = set()
    for record in records:
        row = record.get("row") or {}
        if record.get("table") == "blog_posts" and isinstance(row.get("title"), str):
            titles.add(row["title"])
    return titles


async def with_retries(
    read: Callable[[], Awaitable[T | None]], now_s: Callable[[], float], deadline_s: float
) -> T | None:
    """`read()` until it answers (not None) or the deadline passes: a region must answer the final reads,
    and a momentary refusal (a connection being re-established) is not yet a region that does not."""
    while True:
        got = await read()
        if got is not None or now_s() >= deadline_s:
            return got
        await asyncio.sleep(0.5)
