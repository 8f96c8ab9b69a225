"""The link simulator's TCP proxy: one connection between two regions, carried with delay, loss and cuts.

The model, per directed pair (src -> dst) and whatever the port:
- Bytes flowing src -> dst (requests of connections src opened, responses of connections dst opened)
  are released `delay + uniform(-jitter, +jitter)` ms after they reached the proxy, never before bytes
  read earlier on the same connection: a TCP stream is never reordered, jitter only bunches it.
- A new connection pays the TCP handshake: its first bytes leave one round trip after the accept, and
  the proxy opens its upstream connection one one-way delay after the accept (when the SYN arrives).
- Loss is modelled as TCP sees it: with probability `loss` a chunk (one read from the socket) is lost
  and retransmitted one RTO later (RTO = max(200 ms, RTT + 4 x jitter), doubling on each further loss,
  as Linux does); everything behind it on that connection waits for it (head-of-line blocking).
- A cut blackholes the direction: connections are still accepted, but no byte crosses, so requests
  stall until the caller's timeout; bytes sent meanwhile are held (as TCP keeps retransmitting) and
  delivered one delay after the heal. Held bytes are bounded: past 1 MiB the sender stops being read.
  A cut with `reset=True` instead resets every connection crossing the pair, and every new one.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("bookstore.links")

# Bytes held per direction of a connection before the sender is no longer read (a TCP window, roughly).
HIGH_WATER = 1 << 20
LOW_WATER = 1 << 18
# asyncio may run a timer up to one clock tick early; a chunk due within that tick is due now.
_TICK = time.get_clock_info("monotonic").resolution


class Links(Protocol):
    """What a proxied connection asks of the simulator that carries it (netsim.simulator.LinkSimulator)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def handshake(self) -> bool: ...
    def link(self, src: str, dst: str) -> Link: ...
    def resets(self, src: str, dst: str) -> bool: ...
    def transit_s(self, link: Link, reverse: Link) -> float: ...


class _End(enum.Enum):
    """How a direction of a connection ends once its bytes are delivered."""

    EOF = "eof"  # half-close: the sender will send no more
    CLOSE = "close"
    ABORT = "abort"  # reset


@dataclass(eq=False)
class Link:
    """The state of one directed pair, shared by all its ports and connections."""

    src: str
    dst: str
    delay_ms: float
    jitter_ms: float = 0.0
    loss: float = 0.0
    cut: bool = False
    reset: bool = False
    bytes: int = 0
    connections: int = 0
    retransmits: int = 0
    listen: list[str] = field(default_factory=list)
    # Connections opened src -> dst and still open.
    conns: set[_Connection] = field(default_factory=set)
    healed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.healed.set()

    def state(self) -> dict[str, Any]:
        return {
            "src": self.src,
            "dst": self.dst,
            "delayMs": self.delay_ms,
            "jitterMs": self.jitter_ms,
            "loss": self.loss,
            "cut": self.cut,
            "reset": self.reset,
            "bytes": self.bytes,
            "connections": self.connections,
            "open": len(self.conns),
            "retransmits": self.retransmits,
            "listen": list(self.listen),
        }


class _Pipe:
    """One direction of one proxied connection: chunks queued with release times, delivered in order."""

    def __init__(self, conn: _Connection, link: Link, reverse: Link, send_after: float) -> None:
        self.conn = conn
        self.sim = conn.sim
        self.link = link
        self.reverse = reverse
        self.loop = conn.sim.loop
        self.queue: deque[tuple[float, bytes | _End]] = deque()
        self.queued = 0
        self.last = 0.0
        self.send_after = send_after
        self.timer: asyncio.TimerHandle | None = None
        self.source: asyncio.Transport | None = None
        self.sink: asyncio.Transport | None = None
        self.held_by_queue = False
        self.held_by_sink = False
        self.done = False
        self.eof_delivered = False

    def feed(self, data: bytes) -> None:
        if self.done:
            return
        self._enqueue(self.sim.transit_s(self.link, self.reverse), data)
        self.queued += len(data)
        if self.queued > HIGH_WATER and not self.held_by_queue:
            self.held_by_queue = True
            self._flow()

    def end(self, kind: _End) -> None:
        if not self.done:
            self._enqueue(self.link.delay_ms / 1000, kind)

    def attach_sink(self, sink: asyncio.Transport) -> None:
        self.sink = sink
        self._schedule()

    def sink_full(self, full: bool) -> None:
        self.held_by_sink = full
        self._flow()

    def sink_gone(self) -> None:
        """The receiving side is closed: nothing queued can be delivered any more."""
        self.done = True
        self.queue.clear()
        self.queued = 0
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def healed(self, now: float) -> None:
        """Bytes held by a cut cross one delay after the heal, as TCP's next retransmission would."""
        floor = now + self.link.delay_ms / 1000
        if self.queue and self.queue[0][0] < floor:
            self.queue = deque((max(release, floor), item) for release, item in self.queue)
            self.last = max(self.last, floor)
        self._schedule()

    def _enqueue(self, transit_s: float, item: bytes | _End) -> None:
        release = max(self.last, max(self.loop.time(), self.send_after) + transit_s)
        self.last = release
        self.queue.append((release, item))
        self._schedule()

    def _schedule(self) -> None:
        idle = self.timer is None and self.sink is not None
        if idle and self.queue and not self.link.cut and not self.done:
            self.timer = self.loop.call_at(self.queue[0][0], self._deliver)

    def _deliver(self) -> None:
        self.timer = None
        sink = self.sink
        if sink is None or self.link.cut or self.done:
            return
        due = self.loop.time() + _TICK
        chunks: list[bytes] = []
        while self.queue and self.queue[0][0] <= due:
            _, item = self.queue.popleft()
            if isinstance(item, bytes):
                chunks.append(item)
                continue
            self._write(sink, chunks)
            chunks = []
            if item is _End.EOF:
                self.eof_delivered = True
                if sink.can_write_eof():
                    try:
                        sink.write_eof()
                    except OSError:
                        # The receiver is gone (its process killed, the socket reset) before the
                        # half-close reached it: nothing more can be delivered on this side.
                        self.sink_gone()
                        sink.abort()
                        return
                self.conn.eof_crossed()
            else:
                self.sink_gone()
                if item is _End.CLOSE:
                    sink.close()
                else:
                    sink.abort()
                return
        self._write(sink, chunks)
        self._schedule()

    def _write(self, sink: asyncio.Transport, chunks: list[bytes]) -> None:
        if not chunks:
            return
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if not sink.is_closing():
            sink.write(data)
        self.link.bytes += len(data)
        self.queued -= len(data)
        if self.held_by_queue and self.queued <= LOW_WATER:
            self.held_by_queue = False
            self._flow()

    def _flow(self) -> None:
        source = self.source
        if source is None or source.is_closing():
            return
        hold = self.held_by_queue or self.held_by_sink
        if hold and source.is_reading():
            source.pause_reading()
        elif not hold and not source.is_reading():
            source.resume_reading()


class _Connection:
    """One client connection accepted for a directed pair, and its connection to the destination."""

    def __init__(self, sim: Links, src: str, dst: str, client: asyncio.Transport) -> None:
        self.sim = sim
        self.link = sim.link(src, dst)
        back_link = sim.link(dst, src)
        now = sim.loop.time()
        rtt_s = (self.link.delay_ms + back_link.delay_ms) / 1000 if sim.handshake else 0.0
        self.fwd = _Pipe(self, self.link, back_link, send_after=now + rtt_s)
        self.back = _Pipe(self, back_link, self.link, send_after=now)
        self.fwd.source = client
        self.back.sink = client
        self.client: asyncio.Transport | None = client
        self.upstream: asyncio.Transport | None = None
        self.connect: asyncio.Task[None] | None = None
        self.link.conns.add(self)
        self.link.connections += 1

    def start(self, host: str, port: int) -> None:
        self.connect = self.sim.loop.create_task(self._connect(host, port))
        self.connect.add_done_callback(lambda _: self._maybe_finish())

    async def _connect(self, host: str, port: int) -> None:
        # The SYN needs one delay to arrive, and does not cross a blackholed link at all.
        if self.sim.handshake:
            await asyncio.sleep(self.link.delay_ms / 1000)
        while self.link.cut and not self.link.reset:
            await self.link.healed.wait()
        if self.client is None and self.fwd.queued == 0:
            return  # the caller gave up before sending anything
        try:
            await self.sim.loop.create_connection(lambda: _UpstreamSide(self), host, port)
        except OSError as exc:
            log.debug("link %s->%s: %s:%d refused: %s", self.link.src, self.link.dst, host, port, exc)
            # The refusal travels back to the caller like a reset.
            self.fwd.sink_gone()
            self.back.end(_End.ABORT)

    def upstream_made(self, transport: asyncio.Transport) -> None:
        self.upstream = transport
        self.back.source = transport
        self.fwd.attach_sink(transport)
        self.back._flow()

    def side_lost(self, client_side: bool, exc: Exception | None) -> None:
        end = _End.CLOSE if exc is None else _End.ABORT
        if client_side:
            self.client = None
            self.back.sink_gone()
            self.fwd.end(end)
        else:
            self.upstream = None
            self.fwd.sink_gone()
            self.back.end(end)
        self._maybe_finish()

    def eof_crossed(self) -> None:
        # Both sides half-closed: nothing more can flow either way.
        if self.fwd.eof_delivered and self.back.eof_delivered:
            for transport in (self.client, self.upstream):
                if transport is not None:
                    transport.close()

    def abort(self) -> None:
        for transport in (self.client, self.upstream):
            if transport is not None:
                transport.abort()
        if self.connect is not None and self.upstream is None:
            self.connect.cancel()

    def _maybe_finish(self) -> None:
        connecting = self.connect is not None and not self.connect.done()
        if self.client is None and self.upstream is None and not connecting:
            self.fwd.sink_gone()
            self.back.sink_gone()
            self.link.conns.discard(self)


class ClientSide(asyncio.Protocol):
    """The accepted end: a caller in region `src` talking to region `dst`."""

    def __init__(self, sim: Links, src: str, dst: str, host: str, port: int) -> None:
        self.sim = sim
        self.src, self.dst, self.host, self.port = src, dst, host, port
        self.conn: _Connection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self.sim.resets(self.src, self.dst):
            self.sim.link(self.src, self.dst).connections += 1
            transport.abort()
            return
        self.conn = _Connection(self.sim, self.src, self.dst, transport)
        self.conn.start(self.host, self.port)

    def data_received(self, data: bytes) -> None:
        if self.conn is not None:
            self.conn.fwd.feed(data)

    def eof_received(self) -> bool:
        if self.conn is not None:
            self.conn.fwd.end(_End.EOF)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.conn.side_lost(True, exc)

    def pause_writing(self) -> None:
        if self.conn is not None:
            self.conn.back.sink_full(True)

    def resume_writing(self) -> None:
        if self.conn is not None:
            self.conn.back.sink_full(False)


class _UpstreamSide(asyncio.Protocol):
    """The proxy's connection to the destination region's service."""

    def __init__(self, conn: _Connection) -> None:
        self.conn = conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.conn.upstream_made(transport)

    def data_received(self, data: bytes) -> None:
        self.conn.back.feed(data)

    def eof_received(self) -> bool:
        self.conn.back.end(_End.EOF)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.side_lost(False, exc)

    def pause_writing(self) -> None:
        self.conn.fwd.sink_full(True)

    def resume_writing(self) -> None:
        self.conn.fwd.sink_full(False)
