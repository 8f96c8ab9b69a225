"""Expect: 100-continue: a request that will be refused is refused before its body is asked for.

The server sends `100 Continue` when the app first reads the body, so a refusal found before (a bad
signature, a bucket that does not exist) must neither read nor drain it: the answer goes alone, and
the connection closes, since the client may still send the body it held back.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response

from bookstore.objectstore.context import S3Context
from bookstore.objectstore.errors import NoSuchBucket


def waits(headers: Mapping[str, str]) -> bool:
    """Whether the client holds its body back until the server asks for it."""
    return headers.get("expect", "").strip().lower() == "100-continue"


def unread(request: Request) -> bool:
    """Whether a client waiting for 100 Continue has not been asked for its body yet."""
    # Starlette marks the stream consumed on its first read, which is when the server sends 100.
    return waits(request.headers) and not getattr(request, "_stream_consumed", False)


def close_after(response: Response) -> None:
    """End the connection after an answer sent without reading the request's body."""
    response.headers["Connection"] = "close"


async def check_bucket(ctx: S3Context, method: str, raw_path: str) -> None:
    """Refuse an object write (or a POST) to a bucket that does not exist before its body is read.

    A bucket another region owns is left to that region; a bucket being created is no object write.
    """
    bucket, _, key = raw_path.lstrip("/").partition("/")
    if not bucket or (method == "PUT" and not key):
        return
    name = unquote(bucket)
    if ctx.cluster is None:
        if ctx.store.runs_inline:  # a quick local look-up; over S3 it would cost a call per PUT
            await ctx.run(ctx.store.get_bucket, name)
        return
    if await ctx.cluster.owner(name) is None:
        raise NoSuchBucket("The specified bucket does not exist")
