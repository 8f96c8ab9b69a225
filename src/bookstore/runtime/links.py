"""The link simulator: TCP proxies that carry all traffic between regions, with delay, jitter, loss and cuts.

Addresses. Region i (its 1-based position in the topology) listens on its own address. Region `src`
reaches region `dst` at `link_address(topology, src, dst)`: the source region's address with its last
octet replaced by 100 + i(dst), on the same port as dst's service. With the default topology Ireland
(127.0.1.1) reaches Singapore's API at http://127.0.1.102:8000, which the proxy for the directed pair
eu-west-1 -> ap-southeast-1 forwards to 127.0.2.1:8000. Every region therefore needs a /24 of its own
(its first three octets): the simulator refuses a topology whose listening endpoints would collide.

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
import contextlib
import enum
import ipaddress
import logging
import random
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bookstore.config import Topology
from bookstore.domain.errors import BookstoreError, NotFound, ValidationError
from bookstore.runtime.listeners import Limits, server_config

log = logging.getLogger("bookstore.links")

# One-way delays from real round trips between the AWS regions (half the RTT).
DEFAULT_DELAYS_MS: Mapping[frozenset[str], float] = {
    frozenset({"eu-west-1", "ap-southeast-1"}): 85.0,
    frozenset({"eu-west-1", "us-east-1"}): 35.0,
    frozenset({"ap-southeast-1", "us-east-1"}): 110.0,
}
LINK_HOST_BASE = 100
CONTROL_PORT = 7070
MAX_DELAY_MS = 60_000.0
MIN_RTO_MS = 200.0
MAX_RTO_MS = 120_000.0
# Bytes held per direction of a connection before the sender is no longer read (a TCP window, roughly).
HIGH_WATER = 1 << 20
LOW_WATER = 1 << 18
# asyncio may run a timer up to one clock tick early; a chunk due within that tick is due now.
_TICK = time.get_clock_info("monotonic").resolution


def region_index(topology: Topology, region_id: str) -> int:
    """The 1-based position of `region_id` in the topology; raises KeyError for an unknown region."""
    for index, region in enumerate(topology.regions, start=1):
        if region.id == region_id:
            return index
    raise KeyError(f"unknown region {region_id!r}; known: {', '.join(r.id for r in topology.regions)}")


def link_address(topology: Topology, src: str, dst: str) -> str:
    """The address at which region `src` reaches region `dst` through the link simulator.

    The source region's IPv4 address with its last octet replaced by 100 + the destination's 1-based
    position in the topology (127.0.1.1 -> 127.0.1.102 for the second region); a region reaches itself
    at its own address. Raises KeyError for an unknown region, ValueError for an address that is not
    IPv4 or a topology too large for the scheme (more than 154 regions).
    """
    source = topology.region(src)
    if src == dst:
        return source.address
    index = region_index(topology, dst)
    try:
        ip = ipaddress.IPv4Address(source.address)
    except ValueError as exc:
        raise ValueError(
            f"region {src}: address {source.address!r} is not an IPv4 address; "
            "the link simulator derives link addresses from it"
        ) from exc
    last = LINK_HOST_BASE + index
    if last > 254:
        raise ValueError(
            f"region {dst} is number {index}; link addresses allow at most {254 - LINK_HOST_BASE}"
        )
    return ".".join([*str(ip).split(".")[:3], str(last)])


def link_url(topology: Topology, src: str, dst: str, port: int | None = None) -> str:
    """The base URL at which region `src` reaches `dst`'s service on `port` (default: dst's API port)."""
    target = topology.region(dst)
    return f"http://{link_address(topology, src, dst)}:{port if port is not None else target.api_port}"


class _End(enum.Enum):
    """How a direction of a connection ends once its bytes are delivered."""

    EOF = "eof"  # half-close: the sender will send no more
    CLOSE = "close"
    ABORT = "abort"  # reset


@dataclass(eq=False)
class _Link:
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

    def __init__(self, conn: _Connection, link: _Link, reverse: _Link, send_after: float) -> None:
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

    def __init__(self, sim: LinkSimulator, src: str, dst: str, client: asyncio.Transport) -> None:
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


class _ClientSide(asyncio.Protocol):
    """The accepted end: a caller in region `src` talking to region `dst`."""

    def __init__(self, sim: LinkSimulator, src: str, dst: str, host: str, port: int) -> None:
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


class LinkSimulator:
    """TCP proxies for every directed pair of regions and every service port, with settable link state.

    `ports` are the destination ports proxied for every region; None takes each region's own API and
    S3 ports. Delays default to DEFAULT_DELAYS_MS (else `default_delay_ms`), overridden per directed
    pair by `delays`. `min_rto_ms` is the least a lost chunk costs (Linux: 200 ms); `handshake=False`
    lets new connections skip the handshake's round trip. `seed` makes jitter and loss reproducible.
    Call every method from the thread running the event loop that ran `start()`.
    """

    def __init__(
        self,
        topology: Topology,
        ports: Sequence[int] | None = None,
        *,
        regions: Sequence[str] | None = None,
        delays: Mapping[tuple[str, str], float] | None = None,
        default_delay_ms: float = 0.0,
        handshake: bool = True,
        min_rto_ms: float = MIN_RTO_MS,
        seed: int | None = None,
    ) -> None:
        self.topology = topology
        self.regions = tuple(regions) if regions is not None else tuple(r.id for r in topology.regions)
        for region_id in self.regions:
            topology.region(region_id)
        self.handshake = handshake
        self.min_rto_ms = min_rto_ms
        self._random = random.Random(seed)
        self._links: dict[tuple[str, str], _Link] = {}
        # (listen host, port) -> (src, dst, target host, target port)
        self._endpoints: dict[tuple[str, int], tuple[str, str, str, int]] = {}
        own = {(r.address, p) for r in topology.regions for p in (r.api_port, r.s3_port)}
        for src in self.regions:
            for dst in self.regions:
                if src == dst:
                    continue
                delay = (delays or {}).get(
                    (src, dst), DEFAULT_DELAYS_MS.get(frozenset({src, dst}), default_delay_ms)
                )
                link = _Link(src, dst, _checked_ms("delay", delay))
                self._links[(src, dst)] = link
                target = topology.region(dst)
                host = link_address(topology, src, dst)
                for port in ports if ports is not None else (target.api_port, target.s3_port):
                    endpoint = (host, port)
                    if endpoint in self._endpoints or endpoint in own:
                        raise ValueError(
                            f"link {src}->{dst} would listen on {host}:{port}, which is taken; "
                            "give every region an address in a /24 of its own (third octet)"
                        )
                    self._endpoints[endpoint] = (src, dst, target.address, port)
                    link.listen.append(f"{host}:{port}")
        self._servers: list[asyncio.Server] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the link simulator is not started")
        return self._loop

    async def start(self) -> None:
        """Listen on every link endpoint; raises OSError naming the endpoint that could not be bound."""
        self._loop = asyncio.get_running_loop()
        for link in self._links.values():
            # An event belongs to the loop that first waits on it: a fresh one for each start.
            link.healed = asyncio.Event()
            if not link.cut:
                link.healed.set()
        for (host, port), (src, dst, target_host, target_port) in self._endpoints.items():

            def factory(
                src: str = src, dst: str = dst, target_host: str = target_host, target_port: int = target_port
            ) -> _ClientSide:
                return _ClientSide(self, src, dst, target_host, target_port)

            try:
                server = await self._loop.create_server(factory, host, port, reuse_address=True)
            except OSError as exc:
                await self.stop()
                raise OSError(exc.errno, f"link {src}->{dst}: cannot listen on {host}:{port}: {exc}") from exc
            self._servers.append(server)
        log.info("links up: %d endpoints for %d regions", len(self._endpoints), len(self.regions))

    async def stop(self) -> None:
        """Stop listening and reset every open connection."""
        for server in self._servers:
            server.close()
        for link in self._links.values():
            for conn in list(link.conns):
                conn.abort()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()
        # Let the transports run their connection_lost callbacks.
        for _ in range(3):
            await asyncio.sleep(0)

    def link(self, src: str, dst: str) -> _Link:
        try:
            return self._links[(src, dst)]
        except KeyError:
            known = ", ".join(self.regions)
            if src == dst and src in self.regions:
                raise ValidationError(f"{src} -> {dst}: a region does not cross a link to itself") from None
            raise NotFound(f"no link {src} -> {dst}; known regions: {known}") from None

    def resets(self, src: str, dst: str) -> bool:
        """Whether a connection src -> dst is reset: either of its directions is cut with reset."""
        return any(link.cut and link.reset for link in (self.link(src, dst), self.link(dst, src)))

    def transit_s(self, link: _Link, reverse: _Link) -> float:
        """Seconds one chunk takes across `link`: delay, jitter, and retransmissions when it is lost."""
        ms = link.delay_ms
        if link.jitter_ms:
            ms = max(0.0, ms + self._random.uniform(-link.jitter_ms, link.jitter_ms))
        if link.loss:
            rtt = link.delay_ms + reverse.delay_ms
            rto = max(self.min_rto_ms, rtt + 4 * max(link.jitter_ms, reverse.jitter_ms))
            while self._random.random() < link.loss:
                ms += rto
                rto = min(rto * 2, MAX_RTO_MS)
                link.retransmits += 1
        return ms / 1000

    def set(
        self,
        src: str,
        dst: str,
        delay_ms: float | None = None,
        jitter_ms: float | None = None,
        loss: float | None = None,
    ) -> None:
        """Change the link src -> dst; None leaves a setting as it is. Applies to bytes sent from now on."""
        link = self.link(src, dst)
        delay = _checked_ms("delay", delay_ms) if delay_ms is not None else None
        jitter = _checked_ms("jitter", jitter_ms) if jitter_ms is not None else None
        checked_loss = _checked_loss(loss) if loss is not None else None
        if delay is not None:
            link.delay_ms = delay
        if jitter is not None:
            link.jitter_ms = jitter
        if checked_loss is not None:
            link.loss = checked_loss
        log.info("link %s->%s: %s", src, dst, link.state())

    def cut(self, src: str, dst: str, *, reset: bool = False) -> None:
        """Stop every byte from src to dst (blackhole), or with `reset` reset the connections crossing it."""
        link = self.link(src, dst)
        reverse = self.link(dst, src)
        link.cut = True
        link.reset = reset
        link.healed.clear()
        if reset:
            for conn in [*link.conns, *reverse.conns]:
                conn.abort()
        log.warning("link %s->%s cut (%s)", src, dst, "reset" if reset else "blackhole")

    def heal(self, src: str, dst: str) -> None:
        """Let bytes flow from src to dst again; held bytes cross one delay from now."""
        link = self.link(src, dst)
        reverse = self.link(dst, src)
        if not link.cut:
            return
        link.cut = False
        link.reset = False
        link.healed.set()
        if self._loop is not None:
            now = self._loop.time()
            for conn in link.conns:
                conn.fwd.healed(now)
            for conn in reverse.conns:
                conn.back.healed(now)
        log.warning("link %s->%s healed", src, dst)

    def set_both(
        self,
        a: str,
        b: str,
        delay_ms: float | None = None,
        jitter_ms: float | None = None,
        loss: float | None = None,
    ) -> None:
        self.link(b, a)
        self.set(a, b, delay_ms, jitter_ms, loss)
        self.set(b, a, delay_ms, jitter_ms, loss)

    def cut_both(self, a: str, b: str, *, reset: bool = False) -> None:
        self.link(b, a)
        self.cut(a, b, reset=reset)
        self.cut(b, a, reset=reset)

    def heal_both(self, a: str, b: str) -> None:
        self.link(b, a)
        self.heal(a, b)
        self.heal(b, a)

    def heal_all(self) -> None:
        for src, dst in self._links:
            self.heal(src, dst)

    def pair_state(self, src: str, dst: str) -> dict[str, Any]:
        return self.link(src, dst).state()

    def state(self) -> dict[str, Any]:
        """Every directed pair: delay, jitter, loss, cut, bytes delivered, connections opened and open."""
        return {"links": [link.state() for link in self._links.values()]}


def _checked_ms(what: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_DELAY_MS:
        raise ValidationError(
            f"{what} must be a number of milliseconds from 0 to {MAX_DELAY_MS:g}, not {value!r}"
        )
    return float(value)


def _checked_loss(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValidationError(
            f"loss must be a probability from 0 up to (not including) 1, not {value!r}; use cut"
        )
    return float(value)


class _JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


_CHANGE_FIELDS = {"delayMs", "jitterMs", "loss", "cut", "reset", "both"}
_STATUS = {ValidationError: 400, NotFound: 404}


def create_control_app(links: LinkSimulator) -> Starlette:
    """The control API: GET /links, GET /links/{src}/{dst}, POST /links/{src}/{dst}.

    POST takes a JSON object with any of delayMs, jitterMs, loss (0 <= loss < 1), cut (bool; true with
    reset: true resets connections instead of blackholing them) and both (bool: apply to dst -> src
    too); it answers the new state of the pair(s). Nothing changes when the body is refused.
    """

    async def one(request: Request) -> Response:
        src, dst = request.path_params["src"], request.path_params["dst"]
        if request.method == "GET":
            return _JSON(links.pair_state(src, dst))
        body = await _object(request)
        for name in ("cut", "reset", "both"):
            if name in body and not isinstance(body[name], bool):
                raise ValidationError(f"{name} must be true or false, not {body[name]!r}")
        links.link(src, dst)
        if body.get("both"):
            links.link(dst, src)
        delay = _checked_ms("delayMs", body["delayMs"]) if "delayMs" in body else None
        jitter = _checked_ms("jitterMs", body["jitterMs"]) if "jitterMs" in body else None
        loss = _checked_loss(body["loss"]) if "loss" in body else None
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
        return _JSON({"links": [links.pair_state(a, b) for a, b in pairs]})

    async def all_links(_: Request) -> Response:
        return _JSON(links.state())

    async def known_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, BookstoreError)
        status = next((s for cls, s in _STATUS.items() if isinstance(exc, cls)), 500)
        return _JSON({"error": exc.code, "message": exc.message}, status_code=status)

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HttpError")
        return _JSON({"error": code, "message": str(exc.detail)}, status_code=exc.status_code)

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
