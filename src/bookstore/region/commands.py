"""The operator's commands a running region performs for the command line, under /replication/commands/.

`bookstore users add`, `users confirm-code`, `conflicts`, `seed`, `s3 rotate-key` and `s3 keys` must not
open a running region's data directory themselves (its owner's start-up work would run twice, see
storage.local.ownership): they ask the region here (a rotation's re-encryption then runs in the region's
background). The region puts PeerAuthMiddleware in front of /replication/, and these endpoints answer
only requests the operator signed (source "operator"), not the other regions.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr
from starlette.concurrency import run_in_threadpool

from bookstore.domain.errors import Forbidden, ValidationError
from bookstore.kernel.http import JSON
from bookstore.objectstore.sse_keys import KeyRotation, Reencryptor
from bookstore.region.services import RegionServices
from bookstore.replication.blog.wire import OPERATOR
from bookstore.services.catalog import seed_books

PREFIX = "/replication/commands"
SHORT = 256


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewUser(_Body):
    email: StrictStr = Field(max_length=SHORT)
    password: StrictStr = Field(max_length=SHORT)
    role: StrictStr = Field(default="customer", max_length=32)


class Email(_Body):
    email: StrictStr = Field(max_length=SHORT)


class Rotation(_Body):
    reencrypt: StrictBool = False


def _operator_only(request: Request) -> None:
    signer = getattr(request.state, "peer_region", None)
    if signer != OPERATOR:
        raise Forbidden(f"only the operator may run commands; this request is signed by {signer!r}")


def conflict_json(record: Any) -> dict[str, Any]:
    """A conflict record as JSON (versions as [ms, region] pairs)."""
    return dataclasses.asdict(record)


def _sse_keys(services: RegionServices) -> KeyRotation:
    if services.sse_keys is None:
        raise ValidationError(
            f"{services.region.id} keeps its objects on S3, which rotates its SSE-S3 keys itself: "
            "nothing to rotate"
        )
    return services.sse_keys


def create_commands_router(services: RegionServices, reencryptor: Reencryptor | None = None) -> APIRouter:
    """POST users, POST confirmation-code, GET conflicts, POST seed, POST s3/rotate-key, GET s3/keys: each
    what its CLI command does (`reencryptor` is woken after a rotation that asks for re-encryption)."""
    router = APIRouter(prefix=PREFIX, include_in_schema=False)

    @router.post("/users")
    async def add_user(request: Request, body: NewUser) -> JSON:
        _operator_only(request)
        user = await run_in_threadpool(services.identity.add_user, body.email, body.password, body.role)
        return JSON({"email": user.email, "role": user.role, "userId": user.user_id})

    @router.post("/confirmation-code")
    async def confirmation_code(request: Request, body: Email) -> JSON:
        _operator_only(request)
        code = await run_in_threadpool(services.identity.confirmation_code, body.email)
        return JSON({"email": body.email, "code": code})

    @router.get("/conflicts")
    async def conflicts(request: Request, limit: int = Query(default=20, ge=1, le=10_000)) -> JSON:
        _operator_only(request)
        replica = services.replica
        if replica is None:
            return JSON({"region": services.region.id, "native": True, "conflicts": []})
        records = await run_in_threadpool(replica.conflicts, limit)
        return JSON(
            {"region": services.region.id, "native": False, "conflicts": [conflict_json(c) for c in records]}
        )

    @router.post("/seed")
    async def seed(request: Request) -> JSON:
        _operator_only(request)
        written = await run_in_threadpool(services.catalog.load, seed_books())
        return JSON({"region": services.region.id, "written": written})

    @router.post("/s3/rotate-key")
    async def rotate_key(request: Request, body: Rotation) -> JSON:
        _operator_only(request)
        keys = _sse_keys(services)
        status = await run_in_threadpool(lambda: keys.rotate_key(reencrypt=body.reencrypt))
        if body.reencrypt and reencryptor is not None:
            reencryptor.wake()
        return JSON({"region": services.region.id, **status.to_json()})

    @router.get("/s3/keys")
    async def sse_keys(request: Request) -> JSON:
        _operator_only(request)
        status = await run_in_threadpool(_sse_keys(services).key_status)
        return JSON({"region": services.region.id, **status.to_json()})

    return router
