"""The blog replication's HTTP endpoints under /replication/blog/ (behind PeerAuthMiddleware)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

import orjson
from pydantic import BaseModel
from pydantic import ValidationError as PydanticError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from bookstore.domain import errors
from bookstore.kernel.http import CountedRoute, json_response, status_of
from bookstore.kernel.stream import NDJSON
from bookstore.replication.blog.state import Adoption, BlogState, Epoch
from bookstore.replication.blog.store import BlogStore
from bookstore.replication.blog.wire import (
    OPERATOR,
    PREFIX,
    EmptyRequest,
    FollowRequest,
    PromoteRequest,
    SwitchoverRequest,
    parse_history,
)

log = logging.getLogger("bookstore.blog.replication")


class BlogNode(Protocol):
    """What the endpoints need of a region's blog replication: the embedded one (node.BlogReplication)
    or MariaDB's (mariadb_node.MariaDbBlog)."""

    region: str
    regions: set[str]
    store: BlogStore

    async def refresh(self) -> BlogState: ...

    async def adopt(
        self, epoch: int, primary: str, history: Sequence[Epoch], source: str
    ) -> Adoption | None: ...

    def serve_follow(self, body: FollowRequest) -> AsyncIterator[bytes]: ...

    async def promote(
        self,
        *,
        min_epoch: int = 0,
        wait_for_lsn: int | None = None,
        timeout_s: float = ...,
        force: bool = False,
    ) -> BlogState: ...

    async def switchover(self, target: str, timeout_s: float = ...) -> dict[str, Any]: ...

    async def rejoin(self) -> dict[str, Any]: ...


def blog_routes(replication: BlogNode) -> list[Route]:
    """POST follow (NDJSON stream), GET state, POST snapshot|promote|switchover|rejoin, GET diverged."""

    def signer(request: Request) -> str:
        region = getattr(request.state, "peer_region", None)
        if region != OPERATOR and region not in replication.regions:
            raise errors.Forbidden(f"{region!r} is neither a region of this deployment nor the operator")
        return str(region)

    async def parsed(request: Request, model: type[BaseModel]) -> Any:
        raw = await request.body()
        try:
            return model.model_validate(orjson.loads(raw or b"{}"))
        except (orjson.JSONDecodeError, PydanticError) as exc:
            raise errors.ValidationError(f"malformed request: {str(exc)[:300]}") from None

    async def follow(request: Request) -> Response:
        body: FollowRequest = await parsed(request, FollowRequest)
        if body.region != signer(request):
            raise errors.Forbidden("a region may only follow the blog as itself")
        if body.primaryRegion not in replication.regions:
            raise errors.ValidationError(f"unknown primary region {body.primaryRegion!r}")
        await replication.adopt(body.epoch, body.primaryRegion, parse_history(body.history), body.region)
        return StreamingResponse(
            replication.serve_follow(body), media_type=NDJSON, headers={"Cache-Control": "no-store"}
        )

    async def state(request: Request) -> Response:
        signer(request)
        return json_response((await replication.refresh()).json())

    async def snapshot(request: Request) -> Response:
        signer(request)
        await parsed(request, EmptyRequest)
        return json_response(await asyncio.to_thread(replication.store.snapshot))

    async def promote(request: Request) -> Response:
        signer(request)
        body: PromoteRequest = await parsed(request, PromoteRequest)
        started = time.monotonic()
        state = await replication.promote(
            min_epoch=body.minEpoch, wait_for_lsn=body.waitForLsn, timeout_s=body.timeoutS, force=body.force
        )
        return json_response({**state.json(), "tookMs": round((time.monotonic() - started) * 1000, 1)})

    async def switchover(request: Request) -> Response:
        signer(request)
        body: SwitchoverRequest = await parsed(request, SwitchoverRequest)
        return json_response(await replication.switchover(body.target, body.timeoutS))

    async def rejoin(request: Request) -> Response:
        signer(request)
        await parsed(request, EmptyRequest)
        return json_response(await replication.rejoin())

    async def diverged(request: Request) -> Response:
        signer(request)
        try:
            limit = int(request.query_params.get("limit", "1000"))
        except ValueError:
            raise errors.ValidationError("limit must be an integer") from None
        if not 1 <= limit <= 100_000:
            raise errors.ValidationError("limit must be between 1 and 100000")
        records = await asyncio.to_thread(replication.store.diverged, limit)
        return json_response(
            {
                "region": replication.region,
                "total": await asyncio.to_thread(replication.store.diverged_count),
                "diverged": [d.json() for d in records],
            }
        )

    def guarded(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                response: Response = await handler(request)
                return response
            except errors.BookstoreError as exc:
                status = status_of(exc)
                if status == 500:
                    log.error(
                        "region=%s event=blog_endpoint_failed error=%s", replication.region, exc.message
                    )
                return json_response({"error": exc.code, "message": exc.message}, status)

        return endpoint

    return [
        CountedRoute(f"{PREFIX}/follow", guarded(follow), methods=["POST"]),
        CountedRoute(f"{PREFIX}/state", guarded(state), methods=["GET", "POST"]),
        CountedRoute(f"{PREFIX}/snapshot", guarded(snapshot), methods=["POST"]),
        CountedRoute(f"{PREFIX}/promote", guarded(promote), methods=["POST"]),
        CountedRoute(f"{PREFIX}/switchover", guarded(switchover), methods=["POST"]),
        CountedRoute(f"{PREFIX}/rejoin", guarded(rejoin), methods=["POST"]),
        CountedRoute(f"{PREFIX}/diverged", guarded(diverged), methods=["GET"]),
    ]
