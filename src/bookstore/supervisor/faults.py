"""The regions' fault switches and the blog's promotion, as the supervisor's control API serves them.

The control API gains:
- POST /api/{region}/{break|repair}: the region's API answers 403 (module 4's removed mapping) or not;
- POST /s3/{region}/{break|repair}: the region's S3 API answers 503 or not;
- POST /clock/{region} with {"skewMs": N}: the region's clock runs N ms off (0 sets it right);
- POST /replication/{region}/{pause|resume}: TEST-ONLY, the region stops (or goes on) applying the
  changes it receives; regions refuse it unless started with BOOKSTORE_TEST_FAULTS=1;
- GET /faults: every region's switches as the supervisor set them;
- POST /blog/promote/{region}: make a region the blog's primary (as `bookstore blog promote`; body
  `{"force": true}` to promote without reaching a majority of the regions, else 409 saying why).
The supervisor keeps the switches it set and sets them again when a region (re)starts, so a broken
API stays broken across a restart until it is repaired, as a removed mapping would.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bookstore.config import Topology
from bookstore.domain.errors import BookstoreError
from bookstore.kernel.clock import SystemClock
from bookstore.kernel.http import json_response
from bookstore.runtime.switches import MAX_SKEW_MS, switch_faults

log = logging.getLogger("bookstore.supervisor.faults")
SWITCHES = {"api": ("broken", "ok"), "s3": ("unavailable", "ok"), "replication": ("paused", "ok")}
NO_FAULTS: dict[str, Any] = {"api": "ok", "s3": "ok", "replication": "ok", "clockSkewMs": 0}


class SwitchRefused(Exception):
    """A region refused a fault switch (its message says why)."""


class FaultSwitches:
    """The regions' fault switches as the supervisor set them; runs on the supervisor's event loop."""

    def __init__(self, topology: Topology, secret: str) -> None:
        self.topology = topology
        self.secret = secret
        self.faults: dict[str, dict[str, Any]] = {r.id: dict(NO_FAULTS) for r in topology.regions}

    async def switch(self, region_id: str, kind: str, action: str) -> dict[str, Any]:
        """Set a region's API ("api"), S3 ("s3") or replication switch; remembered for its next start."""
        broken, ok = SWITCHES[kind]
        return await self._set(region_id, kind, broken if action in ("break", "pause") else ok)

    async def skew_clock(self, region_id: str, skew_ms: int) -> dict[str, Any]:
        """Run a region's clock `skew_ms` off; remembered for its next start."""
        return await self._set(region_id, "clockSkewMs", skew_ms)

    async def _set(self, region_id: str, name: str, value: str | int) -> dict[str, Any]:
        """Set one switch and apply it; a switch the region refuses is not kept (raises SwitchRefused)."""
        before = self.faults[region_id][name]
        self.faults[region_id][name] = value
        try:
            return await self._apply(region_id)
        except SwitchRefused:
            self.faults[region_id][name] = before
            raise

    async def _apply(self, region_id: str) -> dict[str, Any]:
        wanted = self.faults[region_id]
        region = self.topology.region(region_id)
        try:
            state = await switch_faults(region.api_url, region_id, self.secret, SystemClock(), wanted)
        except httpx.HTTPError:
            return {
                "regionId": region_id,
                **wanted,
                "applied": False,
                "message": "not running: applies when it starts",
            }
        except RuntimeError as exc:  # the region refused (e.g. a test-only fault without the opt-in)
            raise SwitchRefused(str(exc)) from None
        log.warning(
            "region %s switched: api %s, s3 %s, clock skew %s ms, replication %s",
            region_id,
            state["api"],
            state["s3"],
            state.get("clockSkewMs"),
            state.get("replication"),
        )
        return {**state, "applied": True}

    async def region_started(self, region_id: str) -> None:
        if self.faults[region_id] != NO_FAULTS:
            try:
                await self._apply(region_id)
            except SwitchRefused as exc:
                log.error("region %s refused its switches: %s", region_id, exc)

    async def promote_blog(self, region_id: str, *, force: bool = False) -> dict[str, Any]:
        from bookstore.replication.blog.operator import Operator

        urls = {r.id: r.api_url for r in self.topology.regions}

        def promote() -> dict[str, Any]:
            with Operator(urls, self.secret, SystemClock()) as operator:
                return operator.promote(region_id, force=force)

        return await asyncio.to_thread(promote)

    def routes(self) -> list[Route]:
        async def fault(request: Request) -> Response:
            kind = request.url.path.split("/")[1]
            region_id, action = request.path_params["region"], request.path_params["action"]
            if action not in ("break", "repair"):
                return json_response(
                    {"error": "NotFound", "message": f"no action {action!r}; use break or repair"}, 404
                )
            if region_id not in self.faults:
                known = ", ".join(self.faults)
                return json_response(
                    {"error": "NotFound", "message": f"unknown region {region_id!r}; known: {known}"}, 404
                )
            try:
                return json_response(await self.switch(region_id, kind, action))
            except SwitchRefused as exc:
                return json_response({"error": "Forbidden", "message": str(exc)}, 403)

        async def replication(request: Request) -> Response:
            region_id, action = request.path_params["region"], request.path_params["action"]
            if action not in ("pause", "resume"):
                return json_response(
                    {"error": "NotFound", "message": f"no action {action!r}; use pause or resume"}, 404
                )
            if region_id not in self.faults:
                return json_response({"error": "NotFound", "message": f"unknown region {region_id!r}"}, 404)
            try:
                return json_response(await self.switch(region_id, "replication", action))
            except SwitchRefused as exc:
                return json_response({"error": "Forbidden", "message": str(exc)}, 403)

        async def clock(request: Request) -> Response:
            region_id = request.path_params["region"]
            if region_id not in self.faults:
                return json_response({"error": "NotFound", "message": f"unknown region {region_id!r}"}, 404)
            try:
                body = orjson.loads(await request.body() or b"{}")
            except orjson.JSONDecodeError:
                return json_response({"error": "BadRequest", "message": "the body is not JSON"}, 400)
            skew = body.get("skewMs") if isinstance(body, dict) else None
            if isinstance(skew, bool) or not isinstance(skew, int) or abs(skew) > MAX_SKEW_MS:
                return json_response(
                    {"error": "BadRequest", "message": f'send {{"skewMs": N}}, N ms within +-{MAX_SKEW_MS}'},
                    400,
                )
            try:
                return json_response(await self.skew_clock(region_id, skew))
            except SwitchRefused as exc:
                return json_response({"error": "Conflict", "message": str(exc)}, 409)

        async def faults(_: Request) -> Response:
            return json_response({"faults": self.faults})

        async def promote(request: Request) -> Response:
            region_id = request.path_params["region"]
            if region_id not in self.faults:
                return json_response({"error": "NotFound", "message": f"unknown region {region_id!r}"}, 404)
            try:
                body = orjson.loads(await request.body() or b"{}")
            except orjson.JSONDecodeError:
                return json_response({"error": "BadRequest", "message": "the body is not JSON"}, 400)
            force = body.get("force", False) if isinstance(body, dict) else None
            if not isinstance(force, bool):
                return json_response({"error": "BadRequest", "message": 'send {} or {"force": true}'}, 400)
            try:
                return json_response(await self.promote_blog(region_id, force=force))
            except BookstoreError as exc:
                # A region's own refusal (PeerRefused; 409: no majority without force) keeps its status.
                refused = getattr(exc, "status", None)
                status = refused if isinstance(refused, int) and 400 <= refused < 500 else 503
                code = "Conflict" if status == 409 else exc.code
                return json_response({"error": code, "message": exc.message}, status)

        return [
            Route("/api/{region}/{action}", fault, methods=["POST"]),
            Route("/s3/{region}/{action}", fault, methods=["POST"]),
            Route("/replication/{region}/{action}", replication, methods=["POST"]),
            Route("/clock/{region}", clock, methods=["POST"]),
            Route("/faults", faults, methods=["GET"]),
            Route("/blog/promote/{region}", promote, methods=["POST"]),
        ]
