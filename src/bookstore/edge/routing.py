"""Routing records (Route 53's): latency for the API, failover for the blog, the origin group's order.

Every record turns the targets' health into an ordered list of regions: the first is the answer, the
second is where a retry or an origin failover goes. Unhealthy targets (or targets whose breaker is
open) come after every healthy one; when none is healthy the record answers as if all were (Route
53's rule), unless the topology says otherwise, in which case it has no answer.

Latency between a client's location (a region id) and a region is the links' one-way delay between
the two (bookstore.config.DEFAULT_DELAYS_MS, from real round trips between AWS regions),
else an estimate from the regions' coordinates; a client in a region is nearest to that region.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bookstore.config import DEFAULT_DELAYS_MS, Topology
from bookstore.edge.health import KINDS, Target, now_ms

log = logging.getLogger("bookstore.edge.routing")

CLIENT_HEADER = b"x-client-region"
CLIENT_COOKIE = "client_region"
# Fibre carries light at about 200 km per ms; real paths are longer than great circles.
_KM_PER_MS = 100.0
MAX_CHANGES = 200


def latency_ms(topology: Topology, a: str, b: str) -> float:
    """The estimated one-way latency between regions a and b."""
    if a == b:
        return 0.0
    known = DEFAULT_DELAYS_MS.get(frozenset({a, b}))
    if known is not None:
        return known
    ra, rb = topology.region(a), topology.region(b)
    return _great_circle_km(ra.location, rb.location) / _KM_PER_MS


def _great_circle_km(p: tuple[float, float], q: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*p, *q))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(min(1.0, math.sqrt(h)))


class Routing:
    """The records over the health checker's targets; answers are recomputed on every state change."""

    def __init__(self, topology: Topology, targets: Mapping[str, Target]) -> None:
        self.topology = topology
        self.targets = targets
        self.regions = [r.id for r in topology.regions]
        self.fail_open = topology.edge.all_unhealthy_answers_all
        wanted = topology.edge.default_client_region
        self.default_client = wanted if wanted in self.regions else topology.home_region
        # By client location: every region, nearest first (ties: topology order).
        self.nearest = {c: self._by_latency(c) for c in self.regions}
        # The same with each region's target, by kind and client location: an order costs no lookup.
        self._nearest_targets = {
            kind: {c: [(r, targets[f"{kind}:{r}"]) for r in self.nearest[c]] for c in self.regions}
            for kind in KINDS
        }
        home = topology.home_region
        self.origin_order = [home, *[r for r in self.nearest[home] if r != home]]
        self.blog_primary = home
        self.blog_epoch = 0
        self.answers: dict[str, str | None] = {}
        self.changes: deque[dict[str, Any]] = deque(maxlen=MAX_CHANGES)
        self.record_failovers: dict[str, int] = {}
        self.on_answer: Callable[[str, str | None, str | None], None] | None = None
        self.refresh()

    def _by_latency(self, client: str) -> list[str]:
        def key(region: str) -> tuple[float, int]:
            return latency_ms(self.topology, client, region), self.regions.index(region)

        return sorted(self.regions, key=key)

    # client location --------------------------------------------------------------------------------

    def client_region(self, header: bytes | None, cookie: bytes | None) -> str:
        """The client's location: the X-Client-Region header, else the cookie, else the default."""
        if header is not None:
            value = header.decode("latin-1").strip()
            if value in self.nearest:
                return value
        if cookie is not None:
            for part in cookie.decode("latin-1").split(";"):
                name, _, value = part.strip().partition("=")
                if name == CLIENT_COOKIE and value.strip() in self.nearest:
                    return value.strip()
        return self.default_client

    def region_of_address(self, address: str) -> str | None:
        """The region whose /24 holds `address` (a DNS client on a region's addresses is in that region)."""
        prefix = address.rsplit(".", 1)[0]
        for r in self.topology.regions:
            if r.address.rsplit(".", 1)[0] == prefix:
                return r.id
        return None

    # orders -----------------------------------------------------------------------------------------

    def _order(self, preferred: Sequence[tuple[str, Target]]) -> list[str]:
        healthy = [r for r, target in preferred if target.routable]
        if len(healthy) == len(preferred) or not self.fail_open:
            return healthy
        return healthy + [r for r, _ in preferred if r not in healthy]

    def api_order(self, client: str) -> list[str]:
        """Regions for an API request from `client`: nearest healthy first."""
        return self._order(self._nearest_targets["api"][client])

    def blog_order(self) -> list[str]:
        """The blog's failover record: its primary, then the replicas nearest to it."""
        return self._order(self._nearest_targets["blog"][self.blog_primary])

    def static_order(self) -> list[str]:
        """The origin group: the home bucket, then the others nearest to it; failed ones last."""
        targets = self.targets
        return self._order([(r, targets[f"s3:{r}"]) for r in self.origin_order])

    # answers ----------------------------------------------------------------------------------------

    def _learn_blog_primary(self) -> None:
        """The primary of the highest epoch any region reported, while it answers (kept when it does not).

        A deposed primary that has not heard of the newer epoch yet still calls itself primary; its
        lower epoch gives it away.
        """
        for r in self.regions:
            info = self.targets[f"blog:{r}"].info
            self.blog_epoch = max(self.blog_epoch, int(info.get("epoch") or 0))
        best: tuple[int, str] | None = None
        for r in self.regions:
            t = self.targets[f"blog:{r}"]
            if t.healthy and t.info.get("role") == "primary":
                epoch = int(t.info.get("epoch") or 0)
                # Two primaries of one epoch number (promoted on both sides of a partition): the higher
                # region id is the one every region keeps (replication.blog.state.epoch_rank).
                if epoch >= self.blog_epoch and (best is None or (epoch, r) > best):
                    best = (epoch, r)
        if best is not None and best[1] != self.blog_primary:
            log.info("event=blog_primary region=%s epoch=%d previous=%s", best[1], best[0], self.blog_primary)
            self.blog_primary = best[1]

    def current(self) -> dict[str, str | None]:
        """Every record's answer now: the API's per client location, the blog's, the origin group's."""
        out: dict[str, str | None] = {}
        for c in self.regions:
            out[f"api@{c}"] = next(iter(self.api_order(c)), None)
        out["blog"] = next(iter(self.blog_order()), None)
        out["static"] = next(iter(self.static_order()), None)
        return out

    def baseline(self) -> None:
        """Take the answers as they are now, forgetting changes from the guesses made before the first
        checks were in."""
        self._learn_blog_primary()
        self.answers = self.current()
        self.changes.clear()
        self.record_failovers.clear()

    def refresh(self, _: Target | None = None) -> None:
        """Recompute the answers after a state change; a changed answer is a record failover."""
        self._learn_blog_primary()
        now = self.current()
        for record, answer in now.items():
            before = self.answers.get(record)
            if record in self.answers and before != answer:
                self.record_failovers[record] = self.record_failovers.get(record, 0) + 1
                self.changes.append({"atMs": now_ms(), "record": record, "from": before, "to": answer})
                log.warning("event=answer_changed record=%s from=%s to=%s", record, before, answer)
                if self.on_answer is not None:
                    self.on_answer(record, before, answer)
        self.answers = now

    def json(self) -> dict[str, Any]:
        return {
            "defaultClientRegion": self.default_client,
            "allUnhealthyAnswersAll": self.fail_open,
            "blogPrimary": self.blog_primary,
            "records": {
                "api": {
                    "policy": "latency",
                    "answers": {c: self.api_order(c) for c in self.regions},
                },
                "blog": {"policy": "failover", "primary": self.blog_primary, "order": self.blog_order()},
                "static": {"policy": "origin-group", "order": self.static_order()},
            },
            "answers": dict(self.answers),
            "recordFailovers": dict(self.record_failovers),
            "answerChanges": list(self.changes),
        }
