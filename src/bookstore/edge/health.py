"""Health checks of the edge's targets (Route 53's), and a circuit breaker fed by failed requests.

Every region has three targets: its API (GET of the check's path, `/books` by default), its blog
(GET /status, whose "blog" section also says which region is the blog's primary) and its website
bucket (a signed HEAD of the bucket through the region's S3 API). Each target is probed every
interval; an answer counts as a success when it is 2xx or 3xx within the timeout (and, with a search
string, holds it in its first 5,120 bytes). `failure_threshold` failures in a row make a healthy target
unhealthy, `success_threshold` successes an unhealthy one healthy; a target's first probe decides its
state at once. Every change is kept with its time and reason.

Better than Route 53: a request that meets a failure (connection failure, timeout, 5xx, or the 403 of
an API without its mapping) opens the target's breaker at once, so no further request is sent there
first, and wakes its probe; the breaker closes when a probe that started after it opened succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bookstore.config import HealthCheck

log = logging.getLogger("bookstore.edge.health")

Kind = Literal["api", "blog", "s3"]
KINDS: tuple[Kind, ...] = ("api", "blog", "s3")
SEARCH_BYTES = 5120
MAX_CHANGES = 100


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Probe:
    """The outcome of one health check (or of one failed request)."""

    ok: bool
    status: int | None
    reason: str
    latency_ms: float
    info: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Change:
    at_ms: int
    healthy: bool
    reason: str

    def json(self) -> dict[str, Any]:
        return {"atMs": self.at_ms, "healthy": self.healthy, "reason": self.reason}


@dataclass(eq=False)
class Target:
    """One health-checked target: a region's API, blog or bucket."""

    kind: Kind
    region: str
    healthy: bool | None = None
    since_ms: int | None = None
    changes: deque[Change] = field(default_factory=lambda: deque(maxlen=MAX_CHANGES))
    ok_streak: int = 0
    fail_streak: int = 0
    checks: int = 0
    failed_checks: int = 0
    last: Probe | None = None
    last_ms: int | None = None
    breaker_since: float | None = None
    breaker_ms: int | None = None
    breaker_reason: str = ""
    breaker_opens: int = 0
    info: Mapping[str, Any] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.region}"

    @property
    def routable(self) -> bool:
        """Healthy (or not checked yet) and its breaker closed."""
        return self.healthy is not False and self.breaker_since is None

    def json(self) -> dict[str, Any]:
        last = self.last
        return {
            "id": self.id,
            "kind": self.kind,
            "regionId": self.region,
            "healthy": self.healthy,
            "routable": self.routable,
            "sinceMs": self.since_ms,
            "checks": self.checks,
            "failedChecks": self.failed_checks,
            "lastCheck": None
            if last is None
            else {
                "atMs": self.last_ms,
                "ok": last.ok,
                "status": last.status,
                "latencyMs": round(last.latency_ms, 2),
                "reason": last.reason,
            },
            "breaker": {
                "open": self.breaker_since is not None,
                "sinceMs": self.breaker_ms,
                "reason": self.breaker_reason or None,
                "opened": self.breaker_opens,
            },
            "changes": [c.json() for c in self.changes],
        }


ProbeFn = Callable[[Target], Awaitable[Probe]]


class HealthChecker:
    """Runs every target's probe on its own schedule and keeps the targets' states."""

    def __init__(
        self,
        targets: Sequence[Target],
        probes: Mapping[Kind, ProbeFn],
        settings: HealthCheck,
        on_change: Callable[[Target], None] | None = None,
        breaker: bool = True,
    ) -> None:
        self.breaker = breaker
        self.targets = {t.id: t for t in targets}
        self.probes = probes
        self.settings = settings
        self.on_change = on_change

    def target(self, kind: Kind, region: str) -> Target:
        return self.targets[f"{kind}:{region}"]

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._loop(t, stop) for t in self.targets.values()))

    async def check_all(self) -> None:
        """Probe every target once, now (the edge does so before it serves)."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(self._check(t, loop.time()) for t in self.targets.values()))

    async def _loop(self, target: Target, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        interval = self.settings.interval_s
        while not stop.is_set():
            started = loop.time()
            target.wake.clear()
            await self._check(target, started)
            wait = started + interval - loop.time()
            if wait > 0 and not target.wake.is_set():
                stopped = asyncio.ensure_future(stop.wait())
                woken = asyncio.ensure_future(target.wake.wait())
                try:
                    await asyncio.wait({stopped, woken}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stopped.cancel()
                    woken.cancel()

    async def _check(self, target: Target, started: float) -> None:
        try:
            result = await asyncio.wait_for(self.probes[target.kind](target), self.settings.timeout_s)
        except TimeoutError:
            result = Probe(
                False, None, f"no answer within {self.settings.timeout_s:g} s", 1000 * self.settings.timeout_s
            )
        except Exception as exc:  # a probe that breaks must not end the target's checks
            log.exception("probe of %s failed", target.id)
            result = Probe(False, None, f"probe failed: {type(exc).__name__}: {exc}", 0.0)
        self.record(target, result, started)

    def record(self, target: Target, result: Probe, started: float) -> None:
        """Count a probe's outcome against the thresholds; `started` is its loop time at the start."""
        target.checks += 1
        target.last = result
        target.last_ms = now_ms()
        changed = False
        if result.info is not None and result.info != target.info:
            # What a target says of itself (the blog's role and epoch) can move a record's answer too.
            target.info = result.info
            changed = True
        if result.ok:
            target.ok_streak += 1
            target.fail_streak = 0
            if target.healthy is None or (
                not target.healthy and target.ok_streak >= self.settings.success_threshold
            ):
                changed = self._set(target, True, result.reason)
            if target.breaker_since is not None and started >= target.breaker_since:
                target.breaker_since = None
                target.breaker_ms = None
                log.info("event=breaker_closed target=%s region=%s", target.id, target.region)
                changed = True
        else:
            target.failed_checks += 1
            target.fail_streak += 1
            target.ok_streak = 0
            if target.healthy is None or (
                target.healthy and target.fail_streak >= self.settings.failure_threshold
            ):
                changed = self._set(target, False, result.reason)
        if changed and self.on_change is not None:
            self.on_change(target)

    def _set(self, target: Target, healthy: bool, reason: str) -> bool:
        if target.healthy == healthy:
            return False
        first = target.healthy is None
        target.healthy = healthy
        target.since_ms = now_ms()
        target.changes.append(Change(target.since_ms, healthy, reason))
        log.log(
            logging.INFO if healthy or first else logging.WARNING,
            "event=target_%s target=%s region=%s reason=%s",
            "healthy" if healthy else "unhealthy",
            target.id,
            target.region,
            reason,
        )
        return True

    def report_failure(self, target: Target, reason: str) -> None:
        """A request to the target failed: open its breaker (if closed) and probe it now."""
        if not self.breaker:
            return
        if target.breaker_since is None:
            target.breaker_since = asyncio.get_running_loop().time()
            target.breaker_ms = now_ms()
            target.breaker_reason = reason
            target.breaker_opens += 1
            log.warning(
                "event=breaker_opened target=%s region=%s reason=%s", target.id, target.region, reason
            )
            if self.on_change is not None:
                self.on_change(target)
        target.wake.set()


def judge(status: int, body: bytes, settings: HealthCheck, latency_ms: float) -> Probe:
    """A probe's verdict on an answer: 2xx/3xx, and the search string when one is set."""
    if not 200 <= status < 400:
        return Probe(False, status, f"answered {status}", latency_ms)
    if settings.search_string is not None and settings.search_string.encode() not in body[:SEARCH_BYTES]:
        return Probe(False, status, f"answered {status} without {settings.search_string!r}", latency_ms)
    return Probe(True, status, f"answered {status}", latency_ms)
