"""The api-break drill against a system our supervisor does not run (the deployed one on AWS): the same
runner and checks, its shoppers through the public endpoint, the break and repair by a Breaker."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any, Protocol

from bookstore.drills.record import Record, RegionRef
from bookstore.drills.runner import Options, Site, run_site
from bookstore.drills.workload import MIX

SCENARIO = "api-break"
# CloudFront serves the storefront and /api/...; the blog is another host (blog.<domain>), not drilled.
PUBLIC_MIX = {kind: share for kind, share in MIX.items() if kind != "blog"}
_API_SWITCH = re.compile(r"/api/(?P<region>[^/]+)/(?P<action>break|repair)")


class Breaker(Protocol):
    """Breaks the home region's API and repairs it (blocking calls; repairing twice is safe)."""

    def break_api(self) -> None: ...

    def repair(self) -> bool: ...


def site(
    public_url: str,
    regions: dict[str, str],
    home: str,
    add_users: Callable[[list[str], str], list[str]],
    breaker: Breaker,
    *,
    api_rto_allowance: tuple[float, str] | None = None,
) -> Site:
    """The Site of a system reached at `public_url` whose regions' APIs are `regions` (id -> URL)."""

    async def switch(method: str, path: str, body: dict[str, Any]) -> Any:
        if (method, path) == ("GET", "/links"):
            # The regions' own network: no simulated link whose delay the drill could read.
            return {"links": []}
        asked = _API_SWITCH.fullmatch(path)
        if method != "POST" or asked is None or asked["region"] != home:
            raise RuntimeError(f"{method} {path}: only the home region's API is broken and repaired here")
        if asked["action"] == "break":
            await asyncio.to_thread(breaker.break_api)
            return {"regionId": home, "api": "broken"}
        await asyncio.to_thread(breaker.repair)
        return {"regionId": home, "api": "ok"}

    return Site(
        edge=public_url.rstrip("/"),
        regions=regions,
        home=home,
        add_users=add_users,
        names=tuple(RegionRef(id=r, name=r, flag="") for r in regions),
        replication_status=False,
        switch=switch,
        api_rto_allowance=api_rto_allowance,
        mix=PUBLIC_MIX,
    )


def run(target: Site, breaker: Breaker, options: Options) -> Record:
    """The api-break drill against `target`; the API is repaired however the drill ends."""
    try:
        return run_site(target, options)
    finally:
        breaker.repair()
