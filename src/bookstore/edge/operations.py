"""The edge's own pages under /edge/: status, metrics, the system's overview, control actions, operator UI.

Control actions are passed to the supervisor's control API (the edge holds no secret and no process):
POST /edge/control/regions/{id}/{kill|stop|start}, /edge/control/api/{id}/{break|repair},
/edge/control/s3/{id}/{break|repair}, /edge/control/links/{a}/{b} (the JSON body passed on) and
/edge/control/blog/promote/{id}. A page of another site must not be able to press these buttons: the
actions take only `Content-Type: application/json` (which a cross-site form cannot send and a
cross-site script cannot send without a preflight the edge never grants), refuse an Origin that is
not the edge's own, and accept only region ids of the topology.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from bookstore.edge.metrics import prometheus_text
from bookstore.edge.status import edge_status

if TYPE_CHECKING:
    from bookstore.edge.app import EdgeApp

OPERATOR_DIR = Path(__file__).resolve().parent.parent / "web" / "operator"
MAX_CONTROL_BODY = 4096
REGION_ACTIONS = frozenset({"kill", "stop", "start"})
FAULT_ACTIONS = frozenset({"break", "repair"})


def _json(content: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(content),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _error(status: int, code: str, message: str) -> Response:
    return _json({"error": code, "message": message}, status)


def operations_app(edge: EdgeApp, operator_dir: Path = OPERATOR_DIR) -> Starlette:
    topology = edge.topology
    regions = set(edge.regions)
    own_origins = {f"http://{h.decode()}" for h in edge.allowed_hosts if b":" in h}

    async def status(_: Request) -> Response:
        return _json(edge_status(edge))

    async def metrics(_: Request) -> Response:
        return Response(
            prometheus_text(edge.collector), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    async def overview(_: Request) -> Response:
        from bookstore.runtime.status import collect

        report = await asyncio.to_thread(collect, topology)
        report["edge"] = edge_status(edge)
        return _json(report)

    async def forward(request: Request, path: str, body: bytes | None = None) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return _error(415, "UnsupportedMediaType", "control actions take Content-Type: application/json")
        origin = request.headers.get("origin")
        if origin is not None and origin not in own_origins:
            return _error(403, "Forbidden", f"control actions are not taken from pages of {origin[:100]!r}")
        try:
            async with httpx.AsyncClient(timeout=60.0) as client:
                answer = await client.post(
                    topology.control_url + path,
                    content=body or b"{}",
                    headers={"content-type": "application/json"},
                )
        except httpx.HTTPError:
            return _error(503, "Unavailable", f"the supervisor does not answer at {topology.control_url}")
        return Response(answer.content, status_code=answer.status_code, media_type="application/json")

    def known(*ids: str) -> Response | None:
        for rid in ids:
            if rid not in regions:
                return _error(
                    404, "NotFound", f"unknown region {rid[:70]!r}; known: {', '.join(sorted(regions))}"
                )
        return None

    async def region_action(request: Request) -> Response:
        rid, action = request.path_params["region"], request.path_params["action"]
        if action not in REGION_ACTIONS:
            return _error(404, "NotFound", "use kill, stop or start")
        return known(rid) or await forward(request, f"/regions/{rid}/{action}")

    async def fault_action(request: Request) -> Response:
        kind, rid, action = (
            request.path_params["kind"],
            request.path_params["region"],
            request.path_params["action"],
        )
        if kind not in ("api", "s3") or action not in FAULT_ACTIONS:
            return _error(404, "NotFound", "use api or s3, then break or repair")
        return known(rid) or await forward(request, f"/{kind}/{rid}/{action}")

    async def link_action(request: Request) -> Response:
        a, b = request.path_params["a"], request.path_params["b"]
        refused = known(a, b)
        if refused is not None:
            return refused
        body = await request.body()
        if len(body) > MAX_CONTROL_BODY:
            return _error(413, "PayloadTooLarge", "a link setting is a small JSON object")
        try:
            parsed = orjson.loads(body or b"{}")
        except orjson.JSONDecodeError:
            return _error(400, "BadRequest", "the body is not JSON")
        if not isinstance(parsed, dict):
            return _error(400, "BadRequest", "the body must be a JSON object")
        return await forward(request, f"/links/{a}/{b}", orjson.dumps(parsed))

    async def blog_promote(request: Request) -> Response:
        rid = request.path_params["region"]
        return known(rid) or await forward(request, f"/blog/promote/{rid}")

    async def not_found(request: Request, _: Exception) -> Response:
        return _error(404, "NotFound", f"nothing at {request.url.path[:200]} on the edge; see /edge/status")

    async def not_allowed(request: Request, _: Exception) -> Response:
        return _error(405, "MethodNotAllowed", f"{request.method} is not allowed here")

    async def home(_: Request) -> Response:
        return RedirectResponse("/edge/ui/", status_code=302)

    return Starlette(
        routes=[
            Route("/edge", home, methods=["GET"]),
            Route("/edge/", home, methods=["GET"]),
            Route("/edge/status", status, methods=["GET"]),
            Route("/edge/metrics", metrics, methods=["GET"]),
            Route("/edge/overview", overview, methods=["GET"]),
            Route("/edge/control/regions/{region}/{action}", region_action, methods=["POST"]),
            Route("/edge/control/blog/promote/{region}", blog_promote, methods=["POST"]),
            Route("/edge/control/links/{a}/{b}", link_action, methods=["POST"]),
            Route("/edge/control/{kind}/{region}/{action}", fault_action, methods=["POST"]),
            Mount("/edge/ui", app=StaticFiles(directory=operator_dir, html=True, check_dir=False)),
        ],
        exception_handlers={404: not_found, 405: not_allowed},
    )
