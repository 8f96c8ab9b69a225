"""The link simulator's control API (GET/POST /links/...), and a server running links plus that API alone."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bookstore.domain.errors import BookstoreError, ValidationError
from bookstore.kernel.http import JSON, error_for, error_response
from bookstore.netsim.simulator import LinkSimulator, checked_loss, checked_ms
from bookstore.runtime.listeners import Limits, server_config

CONTROL_PORT = 7070


_CHANGE_FIELDS = {"delayMs", "jitterMs", "loss", "cut", "reset", "both"}


def create_control_app(links: LinkSimulator) -> Starlette:
    """The control API: GET /links, GET /links/{src}/{dst}, POST /links/{src}/{dst}.

    POST takes a JSON object with any of delayMs, jitterMs, loss (0 <= loss < 1), cut (bool; true with
    reset: true resets connections instead of blackholing them) and both (bool: apply to dst -> src
    too); it answers the new state of the pair(s). Nothing changes when the body is refused.
    """

    async def one(request: Request) -> Response:
        src, dst = request.path_params["src"], request.path_params["dst"]
        if request.method == "GET":
            return JSON(links.pair_state(src, dst))
        body = await _object(request)
        for name in ("cut", "reset", "both"):
            if name in body and not isinstance(body[name], bool):
                raise ValidationError(f"{name} must be true or false, not {body[name]!r}")
        links.link(src, dst)
        if body.get("both"):
            links.link(dst, src)
        delay = checked_ms("delayMs", body["delayMs"]) if "delayMs" in body else None
        jitter = checked_ms("jitterMs", body["jitterMs"]) if "jitterMs" in body else None
        loss = checked_loss(body["loss"]) if "loss" in body else None
        if body.get("reset") and body.get("cut") is not True:
            raise ValidationError('reset applies to a cut: send {"cut": true, "reset": true}')
        pairs = [(src, dst), (dst, src)] if body.get("both") else [(src, dst)]
        for a, b in pairs:
            if (delay, jitter, loss) != (None, None, None):
                links.set(a, b, delay, jitter, loss)
            if body.get("cut") is True:
                links.cut(a, b, reset=bool(body.get("reset")))
            elif body.get("cut") is False:
                links.heal(a, b)
        return JSON({"links": [links.pair_state(a, b) for a, b in pairs]})

    async def all_links(_: Request) -> Response:
        return JSON(links.state())

    async def known_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, BookstoreError)
        return error_for(exc)

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HttpError")
        return error_response(exc.status_code, code, str(exc.detail))

    return Starlette(
        routes=[
            Route("/links", all_links, methods=["GET"]),
            Route("/links/{src}/{dst}", one, methods=["GET", "POST"]),
        ],
        exception_handlers={BookstoreError: known_error, HTTPException: http_error},
    )


async def _object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValidationError('the body must be a JSON object such as {"delayMs": 85}')
    unknown = sorted(set(body) - _CHANGE_FIELDS)
    if unknown:
        raise ValidationError(
            f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(_CHANGE_FIELDS))}"
        )
    if not body.keys() - {"both"}:
        raise ValidationError("nothing to change: give delayMs, jitterMs, loss or cut")
    return body


async def serve(links: LinkSimulator, host: str = "127.0.0.1", port: int = CONTROL_PORT) -> None:
    """Start the links, serve the control API on host:port until cancelled, then stop the links."""
    await links.start()
    config = server_config(
        create_control_app(links), limits=Limits(keep_alive_s=5), host=host, port=port, lifespan="off"
    )
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve())
    try:
        await asyncio.shield(serving)
    except asyncio.CancelledError:
        # A cancelled uvicorn leaves its socket open: ask it to shut down instead.
        server.should_exit = True
        await serving
        raise
    finally:
        await links.stop()
