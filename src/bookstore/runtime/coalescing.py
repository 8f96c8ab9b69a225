"""uvicorn's httptools protocol sending each response in one write: its head and body no longer go apart.

uvicorn writes a response's status line and headers, then its body, each straight to the socket: two
send() calls per small response, a third of a busy proxy's time. Writes made in one turn of the event
loop are gathered here and sent together at the end of that turn, in order, before any close: joined
into one buffer when they are small, handed over as they are (one vectored write under uvloop) when not.

An app that has its whole answer at once may also hand it over in one call, through the ASGI extension
kernel.http.WHOLE_ANSWER (`whole_answer`): uvicorn's send checks and lowers each header in Python (12% of
the event loop's samples of a GET /books/{id} in a region, py-spy).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from bookstore.kernel.http import WHOLE_ANSWER

# Above this many bytes a turn's writes are not joined: joining copies every byte into fresh memory,
# whose pages the kernel must fault in. A streamed GET hands over 4 MiB a turn (objectstore.objects),
# and that copy was about a tenth of an 8 MiB GET's CPU; uvloop sends a list in one writev uncopied.
_JOIN_MAX = 64 * 1024


class CoalescingTransport:
    """A transport whose writes within one event-loop turn leave in one send; everything else delegated."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def write_now(self, data: bytes) -> None:
        """Send `data` at once (one whole answer), after any writes still gathered, keeping the order."""
        if self._pending:
            self.write(data)
        elif not self._transport.is_closing():
            self._transport.write(data)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        if self._transport.is_closing():
            return
        if len(pending) > 1 and sum(map(len, pending)) > _JOIN_MAX:
            self._transport.writelines(pending)
        else:
            self._transport.write(b"".join(pending))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(p) for p in self._pending)

    def __getattr__(self, name: str) -> Any:
        # is_closing, pause_reading, resume_reading, get_extra_info, abort, set_protocol...
        return getattr(self._transport, name)


def whole_answer(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
    """Answer the request of `send` (uvicorn's) with `status`, `headers` and `body`, in one write.

    What uvicorn's send writes for a start and a last body message, without checking each header:
    the caller vouches that `headers` hold their content-length and only names and values valid on the
    wire. False when it cannot (`send` is wrapped by a middleware, an answer was begun, the access log
    is on, the transport's buffer is full): then send the messages as usual.
    """
    cycle = getattr(send, "__self__", None)
    if (
        type(cycle) is not RequestResponseCycle
        or cycle.response_started
        or cycle.access_log
        or cycle.flow.write_paused
    ):
        return False
    if cycle.disconnected:
        return True
    cycle.response_started = cycle.response_complete = True
    cycle.waiting_for_100_continue = False
    transport = cycle.transport
    # map over a C method: no Python frame per header.
    lines = b"\r\n".join(map(b": ".join, [*cycle.default_headers, *headers]))
    end = b"\r\n\r\n" if cycle.keep_alive else b"\r\nconnection: close\r\n\r\n"
    transport.write(
        b"".join((STATUS_LINE[status], lines, end, b"" if cycle.scope["method"] == "HEAD" else body))
    )
    cycle.message_event.set()
    if not cycle.keep_alive:
        transport.close()
    cycle.on_response()
    return True


# uvicorn's httptools protocol gives no extension of its own: the scope's is ours alone.
_EXTENSIONS = {WHOLE_ANSWER: {"write": whole_answer}}


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a CoalescingTransport, offering the WHOLE_ANSWER extension."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = _EXTENSIONS  # type: ignore[typeddict-item]
