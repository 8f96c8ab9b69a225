"""How a region reaches a peer's blog replication: the BlogPeer protocol, over HTTP, and what it heard."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import orjson

from bookstore.domain import errors
from bookstore.kernel.stream import follower_timeout, object_lines
from bookstore.replication.blog.wire import PREFIX


class BlogPeer(Protocol):
    """How a region reaches one peer's blog replication endpoints (over HTTP through the link)."""

    region: str

    def follow(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]: ...

    async def call(self, path: str, body: dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


class PeerRefused(errors.BookstoreError):
    """A peer answered a request with an error: it did not do what was asked."""

    code = "PeerRefused"

    def __init__(self, region: str, status: int, body: Any) -> None:
        message = body.get("message") if isinstance(body, dict) else None
        super().__init__(f"{region} answered {status}: {message or body!r:.300}")
        self.region = region
        self.status = status


class HttpBlogPeer:
    """A peer region's blog replication over HTTP (through the link simulator), signed as `me`."""

    def __init__(
        self,
        region: str,
        base_url: str,
        *,
        auth: httpx.Auth,
        connect_timeout_s: float = 2.0,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.region = region
        self.client = httpx.AsyncClient(
            base_url=base_url, auth=auth, timeout=follower_timeout(connect_timeout_s), verify=verify
        )

    async def follow(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        async with self.client.stream("POST", f"{PREFIX}/follow", content=orjson.dumps(body)) as response:
            if response.status_code != 200:
                raise PeerRefused(self.region, response.status_code, orjson.loads(await response.aread()))
            async for parsed in object_lines(response, self.region):
                yield parsed

    async def call(self, path: str, body: dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]:
        response = await self.client.post(
            f"{PREFIX}/{path}", content=orjson.dumps(body), timeout=httpx.Timeout(timeout_s, connect=2.0)
        )
        try:
            parsed: Any = orjson.loads(response.content) if response.content else {}
        except orjson.JSONDecodeError:
            parsed = None
        if response.status_code != 200:
            raise PeerRefused(self.region, response.status_code, parsed or response.text[:300])
        if not isinstance(parsed, dict):
            raise errors.StorageError(f"{self.region} answered {path} with something not a JSON object")
        return parsed

    async def aclose(self) -> None:
        await self.client.aclose()


@dataclass
class PeerView:
    """What this region last heard from a peer."""

    connected: bool = False
    epoch: int | None = None
    primary: str | None = None
    read_only: bool | None = None
    head_lsn: int | None = None
    heard_ms: int | None = None
    error: str | None = None
    failed: bool = False
