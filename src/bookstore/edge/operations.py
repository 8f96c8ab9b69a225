"""The edge's own pages under /edge/: status, metrics, the system's overview, control actions, operator UI.

Control actions are passed to the supervisor's control API with the operator token (the edge holds no
process): POST /edge/control/regions/{id}/{kill|stop|start}, /edge/control/api/{id}/{break|repair},
/edge/control/s3/{id}/{break|repair}, /edge/control/links/{a}/{b} (the JSON body passed on) and
/edge/control/blog/promote/{id}.

Everything here but the operator page's files (/edge/ui/) and its sign-in (POST /edge/login, which
redeems a one-time login code for a session: bookstore.runtime.operator) takes only a caller presenting
the operator token or a session as `Authorization: Bearer ...`, which no other page can read or send
without a preflight the edge never grants. A request from a page of another origin (its Origin, or a
Sec-Fetch-Site other than same-origin) is refused, actions take only `Content-Type: application/json`
(which a cross-site form cannot send), and only region ids of the topology are accepted. The operator
page is served under a strict Content-Security-Policy and may not be framed (no clickjacking).
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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bookstore.edge.metrics import prometheus_text
from bookstore.edge.status import edge_status
from bookstore.kernel.http import error_response, json_response
from bookstore.runtime.operator import bearer, control_call_async

if TYPE_CHECKING:
    from bookstore.edge.app import EdgeApp

OPERATOR_DIR = Path(__file__).resolve().parent.parent / "web" / "operator"
MAX_CONTROL_BODY = 4096
REGION_ACTIONS = frozenset({"kill", "stop", "start"})
FAULT_ACTIONS = frozenset({"break", "repair"})
OPERATOR_PAGE_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
SIGN_IN = (
    "sign in as the operator: open the one-time link `bookstore up` printed, or make one with "
    "`bookstore operator-link`; tools send 'Authorization: Bearer <DATA_DIR/operator-token>'"
)


# Operator answers are never cached: they hold state and sessions.
NO_STORE = {"Cache-Control": "no-store"}


def operations_app(edge: EdgeApp, operator_dir: Path = OPERATOR_DIR) -> Starlette:
    topology = edge.topology
    regions = set(edge.regions)
    own_origins = {f"http://{h.decode()}" for h in edge.allowed_hosts if b":" in h}

    def foreign(request: Request) -> Response | None:
        """A refusal for a request a page of another origin sent, else None."""
        origin = request.headers.get("origin")
        if origin is not None and origin not in own_origins:
            return error_response(
                403, "Forbidden", f"operator requests are not taken from pages of {origin[:100]!r}", NO_STORE
            )
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return error_response(
                403, "Forbidden", f"operator requests are not taken from {site[:20]} pages", NO_STORE
            )
        return None

    def refused(request: Request) -> Response | None:
        """A refusal unless the request comes from no other page and presents the token or a session."""
        return foreign(request) or (
            None
            if edge.access.allows(bearer(request.headers))
            else error_response(401, "Unauthorized", SIGN_IN, NO_STORE)
        )

    def json_body(request: Request) -> Response | None:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return error_response(
                415, "UnsupportedMediaType", "this takes Content-Type: application/json", NO_STORE
            )
        return None

    async def status(request: Request) -> Response:
        return refused(request) or json_response(edge_status(edge), headers=NO_STORE)

    async def metrics(request: Request) -> Response:
        return refused(request) or Response(
            prometheus_text(edge.collector), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    async def overview(request: Request) -> Response:
        from bookstore.runtime.status import collect

        if (refusal := refused(request)) is not None:
            return refusal
        report = await asyncio.to_thread(collect, topology, edge.operator_token)
        report["edge"] = edge_status(edge)
        return json_response(report, headers=NO_STORE)

    async def login(request: Request) -> Response:
        """Redeem a one-time login code ({"code": ...}) for a session ({"session", "expiresAtMs"})."""
        if (refusal := foreign(request) or json_body(request)) is not None:
            return refusal
        body = await request.body()
        try:
            code = orjson.loads(body).get("code") if len(body) <= MAX_CONTROL_BODY else None
        except (orjson.JSONDecodeError, AttributeError):
            code = None
        if not isinstance(code, str):
            return error_response(400, "BadRequest", 'send {"code": "<the code of a login link>"}', NO_STORE)
        redeemed = edge.access.redeem(code)
        if redeemed is None:
            return error_response(
                401,
                "Unauthorized",
                "this sign-in link has expired or was used already: "
                "make a new one with `bookstore operator-link`",
                NO_STORE,
            )
        session, expires = redeemed
        return json_response({"session": session, "expiresAtMs": expires * 1000}, headers=NO_STORE)

    async def forward(request: Request, path: str, body: dict[str, Any] | None = None) -> Response:
        if (refusal := refused(request) or json_body(request)) is not None:
            return refusal
        if not topology.supervised:
            return error_response(
                409,
                "Conflict",
                "this topology has no supervisor (supervised = false): regions run on their own hosts, "
                "so nothing can start, stop, kill or cut them from here",
                NO_STORE,
            )
        try:
            answer = await control_call_async(
                topology.control_url, edge.operator_token, "POST", path, body, timeout_s=60.0
            )
        except httpx.HTTPError:
            return error_response(
                503, "Unavailable", f"the supervisor does not answer at {topology.control_url}", NO_STORE
            )
        return Response(answer.content, status_code=answer.status_code, media_type="application/json")

    def known(*ids: str) -> Response | None:
        for rid in ids:
            if rid not in regions:
                return error_response(
                    404,
                    "NotFound",
                    f"unknown region {rid[:70]!r}; known: {', '.join(sorted(regions))}",
                    NO_STORE,
                )
        return None

    async def region_action(request: Request) -> Response:
        rid, action = request.path_params["region"], request.path_params["action"]
        if action not in REGION_ACTIONS:
            return error_response(404, "NotFound", "use kill, stop or start", NO_STORE)
        return known(rid) or await forward(request, f"/regions/{rid}/{action}")

    async def fault_action(request: Request) -> Response:
        kind, rid, action = (
            request.path_params["kind"],
            request.path_params["region"],
            request.path_params["action"],
        )
        if kind not in ("api", "s3") or action not in FAULT_ACTIONS:
            return error_response(404, "NotFound", "use api or s3, then break or repair", NO_STORE)
        return known(rid) or await forward(request, f"/{kind}/{rid}/{action}")

    async def small_object(request: Request) -> dict[str, Any] | Response:
        """The request's body as a small JSON object, or the error answer."""
        if (refusal := refused(request) or json_body(request)) is not None:
            return refusal
        body = await request.body()
        if len(body) > MAX_CONTROL_BODY:
            return error_response(
                413, "PayloadTooLarge", "a control request's body is a small JSON object", NO_STORE
            )
        try:
            parsed = orjson.loads(body or b"{}")
        except orjson.JSONDecodeError:
            return error_response(400, "BadRequest", "the body is not JSON", NO_STORE)
        if not isinstance(parsed, dict):
            return error_response(400, "BadRequest", "the body must be a JSON object", NO_STORE)
        return parsed

    async def link_action(request: Request) -> Response:
        a, b = request.path_params["a"], request.path_params["b"]
        unknown = known(a, b)
        if unknown is not None:
            return unknown
        parsed = await small_object(request)
        if isinstance(parsed, Response):
            return parsed
        return await forward(request, f"/links/{a}/{b}", parsed)

    async def blog_promote(request: Request) -> Response:
        rid = request.path_params["region"]
        if (unknown := known(rid)) is not None:
            return unknown
        parsed = await small_object(request)
        if isinstance(parsed, Response):
            return parsed
        return await forward(request, f"/blog/promote/{rid}", parsed)

    async def not_found(request: Request, _: Exception) -> Response:
        return error_response(
            404, "NotFound", f"nothing at {request.url.path[:200]} on the edge; see /edge/status", NO_STORE
        )

    async def not_allowed(request: Request, _: Exception) -> Response:
        return error_response(405, "MethodNotAllowed", f"{request.method} is not allowed here", NO_STORE)

    async def home(_: Request) -> Response:
        return RedirectResponse("/edge/ui/", status_code=302)

    return Starlette(
        routes=[
            Route("/edge", home, methods=["GET"]),
            Route("/edge/", home, methods=["GET"]),
            Route("/edge/status", status, methods=["GET"]),
            Route("/edge/metrics", metrics, methods=["GET"]),
            Route("/edge/overview", overview, methods=["GET"]),
            Route("/edge/login", login, methods=["POST"]),
            Route("/edge/control/regions/{region}/{action}", region_action, methods=["POST"]),
            Route("/edge/control/blog/promote/{region}", blog_promote, methods=["POST"]),
            Route("/edge/control/links/{a}/{b}", link_action, methods=["POST"]),
            Route("/edge/control/{kind}/{region}/{action}", fault_action, methods=["POST"]),
            Mount(
                "/edge/ui",
                app=_with_headers(
                    StaticFiles(directory=operator_dir, html=True, check_dir=False), OPERATOR_PAGE_HEADERS
                ),
            ),
        ],
        exception_handlers={404: not_found, 405: not_allowed},
    )


def _with_headers(app: ASGIApp, extra: list[tuple[bytes, bytes]]) -> ASGIApp:
    """`app` with `extra` headers on every answer it starts."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await app(scope, receive, sending)

    return wrapped
