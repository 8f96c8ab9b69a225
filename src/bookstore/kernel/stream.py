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
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import httpx
import orjson

from bookstore.domain import errors

log = logging.getLogger("bookstore.stream")

NDJSON: Final = "application/x-ndjson"
# A stream sends a line at least this often (a heartbeat when nothing changed).
HEARTBEAT_S: Final = 1.0
# A follower's read waits this long for a line: three heartbeats missed, plus room for a slow link.
READ_TIMEOUT_S: Final = 3 * HEARTBEAT_S + 2.0


class ChangeFeed:
    """Wakes streams when this process commits; other writers' commits are seen by polling.

    One poll serves every stream of the process: while any stream waits (`wait`), a timer on the loop
    calls the watched probe (`watch`: e.g. the log's head) every poll and wakes the streams when its
    value changed. Each stream polling for itself cost an asyncio.wait_for (a task and a timer) and a
    read per stream every 2 ms: about 50 ms of CPU a second per idle stream.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event = asyncio.Event()
        self.closed = False
        self._probe: Callable[[], object] | None = None
        self._poll_s = 0.0
        self._seen: object = None
        self._waiting = 0
        self._timer: asyncio.TimerHandle | None = None
        # The futures of the streams waiting for the current event.
        self._waiters: set[asyncio.Future[None]] = set()

    def watch(self, probe: Callable[[], object], poll_s: float) -> None:
        """Poll `probe` every `poll_s` while a stream waits: a new value (another process committed)
        wakes the streams. `probe` runs on the loop: it must be cheap (a read of one row)."""
        self._probe, self._poll_s = probe, poll_s

    async def wait(self, wake: asyncio.Event, timeout_s: float) -> bool:
        """Wait until `wake` (taken from `current()` before the stream read) is set, or `timeout_s` passed."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        if wake is not self._event:
            # Set already (the feed sets an event as it replaces it), or not one of this feed's.
            return wake.is_set() or await wait_for(wake, timeout_s)
        # A future and a timer of our own, woken with the event: asyncio.wait_for would add a task per
        # wait, and every stream waits once per write.
        waiter = loop.create_future()
        self._waiters.add(waiter)
        self._waiting += 1
        if self._timer is None and self._probe is not None:
            self._timer = self._loop.call_later(self._poll_s, self._poll)
        timer = loop.call_later(timeout_s, _settle, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiters.discard(waiter)
            self._waiting -= 1
        return wake.is_set()

    def _poll(self) -> None:
        self._timer = None
        if self._probe is None or self._loop is None or self.closed or not self._waiting:
            return
        try:
            value = self._probe()
        except Exception as exc:  # a busy or closing database: the next poll, or a heartbeat, will do
            log.debug("change feed probe failed: %s", exc)
        else:
            # `_seen` is not reset while nobody waits: a change made meanwhile wakes the next waiters
            # (perhaps for nothing), rather than becoming the new baseline unseen.
            if value != self._seen:
                self._seen = value
                self._wake()
        self._timer = self._loop.call_later(self._poll_s, self._poll)

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
        waiters, self._waiters = self._waiters, set()
        event.set()
        for waiter in waiters:
            _settle(waiter)

    def current(self) -> asyncio.Event:
        return self._event


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


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


class Lines:
    """Splits a stream's bytes into its lines, at b"\\n" only, as they come in chunks.

    Not httpx's aiter_lines: it decodes every byte to text and splits as str.splitlines does, at
    U+2028, U+2029, U+0085 and control characters too, which orjson writes raw inside strings (a line
    holding one came in two broken halves); and the decoding and splitting cost about 0.25 us per
    entry of a catch-up's lines, which orjson reads as well from bytes.
    """

    def __init__(self) -> None:
        self._pending: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines `chunk` completes (without their b"\\n"); what follows the last one is kept."""
        if b"\n" not in chunk:
            if chunk:
                self._pending.append(chunk)
            return []
        lines = chunk.split(b"\n")
        if self._pending:
            self._pending.append(lines[0])
            lines[0] = b"".join(self._pending)
        rest = lines.pop()
        self._pending = [rest] if rest else []
        return lines

    def end(self) -> list[bytes]:
        """The last line, when the stream ended without its b"\\n"."""
        rest, self._pending = b"".join(self._pending), []
        return [rest] if rest else []


async def object_lines(response: httpx.Response, leader: str) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects of a stream's lines; a line that is not an object is refused (ValidationError).
    Blank lines are skipped."""
    lines = Lines()
    async for chunk in response.aiter_bytes():
        for line in lines.feed(chunk):
            if line and not line.isspace():
                yield _object(line, leader)
    for line in lines.end():
        if not line.isspace():
            yield _object(line, leader)


def _object(line: bytes, leader: str) -> dict[str, Any]:
    parsed = orjson.loads(line)
    if not isinstance(parsed, dict):
        raise errors.ValidationError(f"{leader} sent a line that is not an object")
    return parsed
