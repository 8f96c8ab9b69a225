"""Faults a region's front doors can be switched into, for the edge's drills: a broken API, an unavailable S3.

Module 4 of the workshop breaks Ireland by removing its API Gateway base-path mapping: the API answers
403 while the functions behind it keep running. `RegionFaults` wraps a region's server (both ports)
and, while the API is broken, answers every request of the Bookstore API with that 403, before the
app (so without the app's X-Bookstore-Region header: nothing of the Bookstore answered). What is not
behind the mapping keeps working: /status and /metrics (the operator's), /replication/... (between
regions, and this switch itself) and /blog (the book blog is a separate site in the original). The
health checks target /books, so they see the 403 too. While S3 is switched unavailable, the S3 port
answers 503 ServiceUnavailable to everything but the regions' internal object endpoints.

The drills add three more: {"clockSkewMs": N} shifts the region's clock (the SkewedClock every part of
the region reads, the HLC included) by N ms, and the test-only {"replication": "paused"|"ok"} stops the
region applying the changes it receives, to prove that a drill catches broken replication; the latter
is refused with 403 unless the region was started with BOOKSTORE_TEST_FAULTS=1. {"cut": [peers]} cuts
the region off from those peers (the partition drill, where no link simulator runs; [] heals): every
request between regions passes the signer or the verifier (bookstore.kernel.auth), which keep it: its
clients to them fail as an unreachable peer's would, what they send it on either port is answered 503,
and the streams it serves them end at their next line. {"slow": {peer: ms}} slows what the region
sends those peers (the slow-link drill where no link simulator runs; {} lifts it), kept by the same two:
every request to such a peer waits that long before it is sent, and every message of an answer to it
(each line of a follow stream) is written that long after it was made. The drill switches both sides of
the link, each its own direction.

The switch is `POST /replication/faults` with {"api": "broken"|"ok", "s3": "unavailable"|"ok",
"clockSkewMs": N, "replication": "paused"|"ok", "cut": [...], "slow": {...}}, signed with the
deployment's shared secret as the operator (bookstore.kernel.auth), so only whoever runs the
deployment (the supervisor's control API, `bookstore api break|repair`) can flip it. The switch's
path, bounds and client are bookstore.runtime.switches, which the supervisor shares. On AWS, where a
function has no such switch, BrokenApi gives the same answer to a function started with
BOOKSTORE_API_BROKEN=1 (`bookstore aws drill`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from bookstore.domain.errors import Forbidden, Unauthorized
from bookstore.kernel.auth import (
    MAX_AGE_MS,
    authenticate,
    check_body,
    first_headers,
    request_target,
)
from bookstore.kernel.clock import SkewedClock
from bookstore.kernel.link_faults import LinkFaults
from bookstore.kernel.replay import SeenSignatures
from bookstore.ports import Clock
from bookstore.runtime.switches import FAULTS_PATH, MAX_SKEW_MS, MAX_SLOW_MS, OPERATOR

if TYPE_CHECKING:
    from bookstore.replication.tables.replicator import Replicator

log = logging.getLogger("bookstore.region.faults")

MAX_SWITCH_BODY = 4096
TEST_FAULTS_ENV: Final = "BOOKSTORE_TEST_FAULTS"
# Set to "1" in a Lambda function's environment: its API answers as broken (BrokenApi).
API_BROKEN_ENV: Final = "BOOKSTORE_API_BROKEN"
SWITCH_NAMES = frozenset({"api", "s3", "clockSkewMs", "replication", "cut", "slow"})
# Paths of the API port that are not behind the (removed) API mapping.
_UNMAPPED = ("/status", "/metrics", "/replication/", "/blog")
_S3_INTERNAL = "/_replication/"
# The most peers a cut or a slow switch names.
MAX_PEERS = 64
_REGION_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _json(status: int, content: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = orjson.dumps(content)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return status, headers, body


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _unmapped(region: str, repair: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The answer of an API whose mapping is removed (module 4's break), saying what restores it."""
    message = f"the API of {region} is not mapped (broken on purpose: {repair} restores it)"
    return _json(403, {"error": "Forbidden", "message": message})


def api_broken_by_environment(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the process was started with its API broken (`bookstore aws drill` sets the variable on
    the home region's function: each new instance reads it, so the break and the repair reach them all)."""
    return (os.environ if environ is None else environ).get(API_BROKEN_ENV) == "1"


class BrokenApi:
    """The API switch of RegionFaults alone, always broken: the same 403 on the same paths, for a
    process that has no switch endpoint (a Lambda function, whose environment holds the break)."""

    def __init__(self, app: ASGIApp, region: str) -> None:
        self.app = app
        self.region = region

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(_UNMAPPED):
            await _answer(send, *_unmapped(self.region, "`bookstore aws drill`'s repair"))
            return
        await self.app(scope, receive, send)


class RegionFaults:
    """ASGI middleware around a region's server (API and S3 ports) holding its fault switches."""

    def __init__(
        self,
        app: ASGIApp,
        region: str,
        secret: str,
        clock: Clock,
        s3_port: int | None,
        *,
        replicator: Replicator | None = None,
        test_faults: bool | None = None,
        links: LinkFaults | None = None,
    ) -> None:
        self.app = app
        self.region = region
        self.secret = secret
        self.clock = clock
        self.s3_port = s3_port
        self.replicator = replicator
        self.test_faults = os.environ.get(TEST_FAULTS_ENV) == "1" if test_faults is None else test_faults
        self.api_broken = False
        self.s3_unavailable = False
        # Shared with the region's signer and verifier of requests between regions, which keep it.
        self.links = links if links is not None else LinkFaults()
        self.seen = SeenSignatures(MAX_AGE_MS)

    def state(self) -> dict[str, Any]:
        return {
            "regionId": self.region,
            "api": "broken" if self.api_broken else "ok",
            "s3": "unavailable" if self.s3_unavailable else "ok",
            "clockSkewMs": self.clock.offset_ms if isinstance(self.clock, SkewedClock) else 0,
            "replication": "paused" if self.replicator is not None and self.replicator.apply_paused else "ok",
            "cut": sorted(self.links.cut),
            "slow": dict(sorted(self.links.slow.items())),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        server = scope.get("server")
        on_s3 = self.s3_port is not None and server is not None and server[1] == self.s3_port
        path: str = scope["path"]
        if on_s3:
            if self.s3_unavailable and not path.startswith(_S3_INTERNAL):
                body = (
                    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ServiceUnavailable</Code>'
                    b"<Message>Please reduce your request rate.</Message></Error>"
                )
                headers = [
                    (b"content-type", b"application/xml"),
                    (b"content-length", str(len(body)).encode()),
                ]
                await _answer(send, 503, headers, body)
                return
        elif path == FAULTS_PATH:
            await _answer(send, *await self._switch(scope, receive))
            return
        elif self.api_broken and not path.startswith(_UNMAPPED):
            await _answer(send, *_unmapped(self.region, f"`bookstore api repair {self.region}`"))
            return
        await self.app(scope, receive, send)

    async def _switch(self, scope: Scope, receive: Receive) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        # The signature is checked before the body is read; the body then has to be the one signed.
        try:
            claim = authenticate(
                self.secret,
                scope["method"],
                request_target(scope),
                first_headers(scope),
                # The machine's clock, not the skewed one: a skew set here can always be undone.
                (self.clock.base if isinstance(self.clock, SkewedClock) else self.clock).now_ms(),
                destination=self.region,
                seen=self.seen,
            )
        except Unauthorized as exc:
            return _json(401, {"error": exc.code, "message": exc.message})
        except Forbidden as exc:
            return _json(403, {"error": exc.code, "message": exc.message})
        if claim.region != OPERATOR:
            return _json(403, {"error": "Forbidden", "message": "only the operator switches faults"})
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return _json(400, {"error": "BadRequest", "message": "the client went away"})
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_SWITCH_BODY:
                return _json(
                    413, {"error": "PayloadTooLarge", "message": "the switch takes a small JSON body"}
                )
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            check_body(claim, hashlib.sha256(body).hexdigest())
        except Forbidden as exc:
            return _json(403, {"error": exc.code, "message": exc.message})
        if scope["method"] == "GET":
            return _json(200, self.state())
        if scope["method"] != "POST":
            return _json(405, {"error": "MethodNotAllowed", "message": "GET or POST"})
        try:
            wanted = orjson.loads(body or b"{}")
        except orjson.JSONDecodeError:
            return _json(400, {"error": "BadRequest", "message": "the body is not JSON"})
        if not isinstance(wanted, dict) or not set(wanted) <= SWITCH_NAMES:
            return _json(
                400,
                {
                    "error": "BadRequest",
                    "message": 'send {"api": "broken"|"ok", "s3": "unavailable"|"ok", "clockSkewMs": N, '
                    '"replication": "paused"|"ok", "cut": [peer region ids], "slow": {peer region id: ms}}',
                },
            )
        refused = self._refusal(wanted)
        if refused is not None:
            return refused
        api, s3, skew, replication = (wanted.get(k) for k in ("api", "s3", "clockSkewMs", "replication"))
        if api is not None:
            self.api_broken = api == "broken"
        if s3 is not None:
            self.s3_unavailable = s3 == "unavailable"
        if skew is not None and isinstance(self.clock, SkewedClock):
            self.clock.offset_ms = skew
        if replication is not None and self.replicator is not None:
            self.replicator.apply_paused = replication == "paused"
        if "cut" in wanted:
            self.links.cut = frozenset(wanted["cut"])
        if "slow" in wanted:
            # 0 ms is no delay: the peer is left out, so that a slowed link is one with a delay.
            self.links.slow = {peer: ms for peer, ms in wanted["slow"].items() if ms}
        state = self.state()
        log.warning(
            "event=faults_switched api=%s s3=%s clock_skew_ms=%s replication=%s cut=%s slow=%s",
            state["api"],
            state["s3"],
            state["clockSkewMs"],
            state["replication"],
            ",".join(state["cut"]) or "-",
            ",".join(f"{peer}:{ms}" for peer, ms in state["slow"].items()) or "-",
        )
        return _json(200, state)

    def _refusal(self, wanted: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        """The 4xx answer to switches that are malformed or not available here, else None."""
        api, s3, skew, replication = (wanted.get(k) for k in ("api", "s3", "clockSkewMs", "replication"))
        if api not in (None, "broken", "ok") or s3 not in (None, "unavailable", "ok"):
            return _json(
                400, {"error": "BadRequest", "message": 'api is "broken" or "ok", s3 "unavailable" or "ok"'}
            )
        if skew is not None:
            if isinstance(skew, bool) or not isinstance(skew, int) or abs(skew) > MAX_SKEW_MS:
                return _json(
                    400,
                    {
                        "error": "BadRequest",
                        "message": f"clockSkewMs is a whole number of ms within +-{MAX_SKEW_MS}",
                    },
                )
            if not isinstance(self.clock, SkewedClock):
                return _json(
                    409, {"error": "Conflict", "message": f"the clock of {self.region} cannot be skewed"}
                )
        if "cut" in wanted:
            refused = self._cut_refusal(wanted["cut"])
            if refused is not None:
                return refused
        if "slow" in wanted:
            refused = self._slow_refusal(wanted["slow"])
            if refused is not None:
                return refused
        if replication is not None:
            # "ok" is accepted everywhere: the supervisor sends every switch when a region (re)starts.
            if replication not in ("paused", "ok"):
                return _json(400, {"error": "BadRequest", "message": 'replication is "paused" or "ok"'})
            if replication == "paused" and not self.test_faults:
                return _json(
                    403,
                    {
                        "error": "Forbidden",
                        "message": "pausing replication is a test-only fault: start the region with "
                        f"{TEST_FAULTS_ENV}=1 to allow it",
                    },
                )
            if replication == "paused" and self.replicator is None:
                return _json(409, {"error": "Conflict", "message": f"{self.region} runs no replicator"})
        return None

    def _cut_refusal(self, peers: Any) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        """The 400 answer to a cut that is not a list of other regions' ids, else None."""
        if not isinstance(peers, list):
            peers = None
        return self._peers_refusal(
            "cut", peers, f"cut is a list of at most {MAX_PEERS} peer region ids ([] heals every link)"
        )

    def _slow_refusal(self, delays: Any) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        """The 400 answer to a slow switch that is not {other region's id: ms within bounds}, else None."""
        shape = (
            f'slow is {{"peer region id": ms, ...}}, at most {MAX_PEERS} peers, each a whole number of ms '
            f"from 0 to {MAX_SLOW_MS} ({{}} lifts every delay)"
        )
        valid = isinstance(delays, dict) and all(
            not isinstance(ms, bool) and isinstance(ms, int) and 0 <= ms <= MAX_SLOW_MS
            for ms in delays.values()
        )
        return self._peers_refusal("slow", list(delays) if valid else None, shape)

    def _peers_refusal(
        self, switch: str, peers: list[Any] | None, shape: str
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        """The 400 answer (saying `shape`) unless `peers` is a list of other regions' ids, else None."""
        if (
            peers is None
            or len(peers) > MAX_PEERS
            or not all(isinstance(p, str) and _REGION_ID.fullmatch(p) for p in peers)
        ):
            return _json(400, {"error": "BadRequest", "message": shape})
        if self.region in peers or OPERATOR in peers:
            return _json(
                400,
                {
                    "error": "BadRequest",
                    "message": f"{switch} names peers, not {self.region} or the operator",
                },
            )
        return None
