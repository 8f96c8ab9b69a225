"""The operator's side of blog replication: signed requests to the regions, and the cross-region overview."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from bookstore.domain import errors
from bookstore.kernel.auth import DESTINATION_HEADER, PeerAuth
from bookstore.ports import Clock
from bookstore.replication.blog.peers import PeerRefused
from bookstore.replication.blog.state import epoch_rank
from bookstore.replication.blog.wire import OPERATOR, PREFIX, SWITCHOVER_TIMEOUT_S


class Operator:
    """Signed requests of the operator (region id "operator") to the regions' blog endpoints, direct."""

    def __init__(
        self,
        api_urls: Mapping[str, str],
        secret: str,
        clock: Clock,
        timeout_s: float = 60.0,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        """`verify`: the deployment's CA with TLS between hosts (runtime.tls.verify)."""
        self.api_urls = dict(api_urls)
        self.client = httpx.Client(auth=PeerAuth(secret, OPERATOR, clock), timeout=timeout_s, verify=verify)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Operator:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(
        self, region: str, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        try:
            url = self.api_urls[region]
        except KeyError:
            raise errors.ValidationError(
                f"unknown region {region!r}; known: {', '.join(self.api_urls)}"
            ) from None
        try:
            response = self.client.request(
                method,
                f"{url}{PREFIX}/{path}",
                content=None if body is None else orjson.dumps(body),
                headers={DESTINATION_HEADER: region},
            )
        except httpx.HTTPError as exc:
            raise errors.Unavailable(f"{region} does not answer at {url} ({type(exc).__name__})") from None
        try:
            parsed = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            parsed = {"message": response.text[:300]}
        if response.status_code != 200:
            raise PeerRefused(region, response.status_code, parsed)
        if not isinstance(parsed, dict):
            raise errors.ValidationError(f"{region} answered with something not an object")
        return parsed

    def states(self) -> dict[str, dict[str, Any] | None]:
        out: dict[str, dict[str, Any] | None] = {}
        for region in self.api_urls:
            try:
                out[region] = self.request(region, "GET", "state")
            except errors.BookstoreError:
                out[region] = None
        return out

    def primary(self) -> str:
        """The writable primary of the highest epoch among the regions that answer."""
        answering = [s for s in self.states().values() if s is not None]
        primaries = [s for s in answering if s.get("role") == "primary"]
        if not primaries:
            raise errors.Unavailable(
                "no region answers as the blog's primary; promote one with `bookstore blog promote REGION`"
            )
        return str(max(primaries, key=lambda s: epoch_rank(int(s["epoch"]), str(s["region"])))["region"])

    def promote(self, region: str, *, force: bool = False) -> dict[str, Any]:
        """Promotes `region`; without `force` it must reach a majority of the regions (409 otherwise)."""
        return self.request(region, "POST", "promote", {"force": True} if force else {})

    def rejoin(self, region: str) -> dict[str, Any]:
        return self.request(region, "POST", "rejoin", {})

    def switchover(self, target: str, timeout_s: float = SWITCHOVER_TIMEOUT_S) -> dict[str, Any]:
        primary = self.primary()
        return self.request(primary, "POST", "switchover", {"target": target, "timeoutS": timeout_s})

    def diverged(self, region: str, limit: int = 1000) -> dict[str, Any]:
        return self.request(region, "GET", f"diverged?limit={limit}")


def overview(statuses: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Any]:
    """The blog across regions, from each region's /status "blog" section: primary, epoch, replicas."""
    known = {r: s for r, s in statuses.items() if s}
    primaries = [s for s in known.values() if s.get("role") == "primary"]
    top = max(primaries, key=lambda s: epoch_rank(int(s.get("epoch", 0)), str(s.get("region"))), default=None)
    return {
        "primary": None if top is None else top.get("region"),
        "epoch": max((int(s.get("epoch", 0)) for s in known.values()), default=None),
        "regions": [
            {
                "regionId": r,
                "reachable": s is not None,
                "role": None if s is None else s.get("role"),
                "epoch": None if s is None else s.get("epoch"),
                "primaryRegion": None if s is None else s.get("primaryRegion"),
                "appliedLsn": None if s is None else s.get("appliedLsn"),
                "headLsn": None if s is None else s.get("headLsn"),
                "lagEntries": None if s is None else s.get("lagEntries"),
                "lagSeconds": None if s is None else s.get("lagSeconds"),
                "needsRejoin": None if s is None else s.get("needsRejoin"),
                "diverged": None if s is None else s.get("diverged"),
            }
            for r, s in statuses.items()
        ],
    }
