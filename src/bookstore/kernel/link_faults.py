"""Links between regions made faulty on purpose (a region's drill switches): peers cut off, peers slowed.

A region's fault switch (`{"cut": [...]}`, `{"slow": {...}}`, bookstore.region.faults) sets them. Every
request between regions passes the signer on the way out and the verifier on the way in
(bookstore.kernel.auth), which read them. A request to a cut peer fails as a connection that cannot be
opened fails, one from it is answered 503, and an answer streaming to it ends at its next chunk. A
request to a slowed peer waits the delay before it is sent, and every message of an answer to it is
written the delay after the app handed it over (`Lag`): what this region sends that peer is late by the
delay, each way a switch is on (the drill switches both regions: the link is slow both ways).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import httpx
from starlette.types import Message, Send

# Messages of one answer held for a slowed peer before its sender waits (as a TCP window bounds the bytes
# in flight): a large body crosses at about MAX_HELD chunks per delay, not one.
MAX_HELD = 64


class LinkFaults:
    """The peer regions one region is cut off from and those it is slow to (none at first); read on every
    request between regions."""

    def __init__(self) -> None:
        self.cut: frozenset[str] = frozenset()
        # Peer region -> the delay (ms, > 0) added to everything this region sends it.
        self.slow: Mapping[str, int] = {}

    def refuse(self, request: httpx.Request, destination: str) -> None:
        """Raises httpx.ConnectError, as an unreachable peer would, when the link to `destination` is cut."""
        if destination in self.cut:
            raise httpx.ConnectError(f"the link to {destination} is cut (fault switch)", request=request)

    def delay_s(self, peer: str) -> float:
        """The delay added to what this region sends `peer` (0 when the link is not slowed)."""
        return self.slow.get(peer, 0) / 1000


def _last(message: Message) -> bool:
    return message["type"] == "http.response.body" and not message.get("more_body", False)


class Lag:
    """An ASGI `send` that writes each message its delay after it was handed over, in order, from a task
    of its own: a link's latency, as the link simulator's, not a bandwidth. Waiting in the sender would
    hold each line of a stream up behind the delay of the one before (a line per delay at most).

    `send` returns at once (unless MAX_HELD messages wait), and once all is written for an answer's last
    message; a write's error is raised at the sender's next send. `close` drops what an abandoned answer
    still holds.
    """

    def __init__(self, send: Send) -> None:
        self._send = send
        self._held: asyncio.Queue[tuple[float, Message]] = asyncio.Queue(MAX_HELD)
        self._writer: asyncio.Task[None] | None = None
        self._error: Exception | None = None

    async def send(self, message: Message, delay_s: float) -> None:
        if self._error is not None:
            raise self._error
        loop = asyncio.get_running_loop()
        if self._writer is None:
            self._writer = loop.create_task(self._write())
        await self._held.put((loop.time() + delay_s, message))
        if _last(message):
            await self._writer
            if self._error is not None:
                raise self._error

    def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, message = await self._held.get()
            if self._error is None:
                try:
                    await asyncio.sleep(max(0.0, due - loop.time()))
                    await self._send(message)
                except Exception as exc:  # the connection's (the peer went away): its sender hears of it
                    self._error = exc
            if _last(message):
                return
