"""The long-poll NDJSON stream between regions: the one both table and blog replication follow.

The leader answers a follow request with a stream of JSON objects, one a line: at once (so the
follower knows it is connected), then whenever something changed, and at least every HEARTBEAT_S (a
heartbeat tells the follower the leader lives). A ChangeFeed wakes the streams of this process when it
commits; a stream ends after its own protocol's duration and the follower asks again. The follower
reads the lines with `object_lines` and gives up on a read after `follower_timeout`'s read time:
not even a heartbeat came, so the link is cut or the leader hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Final

import httpx
import orjson

from bookstore.domain import errors

NDJSON: Final = "application/x-ndjson"
# A stream sends a line at least this often (a heartbeat when nothing changed).
HEARTBEAT_S: Final = 1.0
# A follower's read waits this long for a line: three heartbeats missed, plus room for a slow link.
READ_TIMEOUT_S: Final = 3 * HEARTBEAT_S + 2.0


class ChangeFeed:
    """Wakes streams when this process commits; other writers' commits are seen by polling."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event = asyncio.Event()
        self.closed = False

    def close(self) -> None:
        """End every open stream (the region is shutting down): followers reconnect elsewhere or later."""
        self.closed = True
        self.notify()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def notify(self) -> None:
        """Called from any thread after a commit that appended to the log."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    def current(self) -> asyncio.Event:
        return self._event


async def wait_for(wake: asyncio.Event, timeout_s: float) -> bool:
    """Wait until `wake` is set or `timeout_s` passed; whether it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wake.wait(), timeout=timeout_s)
    return wake.is_set()


def ndjson_line(payload: dict[str, Any]) -> bytes:
    """One line of a stream."""
    return orjson.dumps(payload) + b"\n"


def follower_timeout(connect_timeout_s: float, request_s: float = 10.0) -> httpx.Timeout:
    """A follower's client timeouts: a stream's read fails when not even a heartbeat came."""
    return httpx.Timeout(request_s, connect=connect_timeout_s, read=READ_TIMEOUT_S)


async def object_lines(response: httpx.Response, leader: str) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects of a stream's lines; a line that is not an object is refused (ValidationError)."""
    async for line in response.aiter_lines():
        if line:
            parsed = orjson.loads(line)
            if not isinstance(parsed, dict):
                raise errors.ValidationError(f"{leader} sent a line that is not an object")
            yield parsed
