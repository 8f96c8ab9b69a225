"""The link simulator: TCP proxies that carry all traffic between regions, with delay, jitter, loss and cuts.

Every directed pair of regions gets a proxy endpoint per service port, at the address the topology
gives it (config.link_address); the proxy's model of delay, loss and cuts is in netsim.proxy, the
operator's HTTP control over it in netsim.control.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any

from bookstore.config import DEFAULT_DELAYS_MS, Topology, link_address
from bookstore.domain.errors import NotFound, ValidationError
from bookstore.netsim.proxy import ClientSide, Link

log = logging.getLogger("bookstore.links")

MAX_DELAY_MS = 60_000.0
MIN_RTO_MS = 200.0
MAX_RTO_MS = 120_000.0


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
        self._links: dict[tuple[str, str], Link] = {}
        # (listen host, port) -> (src, dst, target host, target port)
        self._endpoints: dict[tuple[str, int], tuple[str, str, str, int]] = {}
        own = {(r.address, p) for r in topology.regions for p in (r.api_port, r.s3_port)}
        for src in self.regions:
            for dst in self.regions:
                # A direct pair reaches the other's own address (config.link_address): nothing to proxy.
                if src == dst or topology.is_direct(src, dst):
                    continue
                delay = (delays or {}).get(
                    (src, dst), DEFAULT_DELAYS_MS.get(frozenset({src, dst}), default_delay_ms)
                )
                link = Link(src, dst, checked_ms("delay", delay))
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
            ) -> ClientSide:
                return ClientSide(self, src, dst, target_host, target_port)

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

    def link(self, src: str, dst: str) -> Link:
        try:
            return self._links[(src, dst)]
        except KeyError:
            known = ", ".join(self.regions)
            if src == dst and src in self.regions:
                raise ValidationError(f"{src} -> {dst}: a region does not cross a link to itself") from None
            if src in self.regions and dst in self.regions and self.topology.is_direct(src, dst):
                raise ValidationError(
                    f"{src} <-> {dst} is a direct link in the topology: no simulator carries it, so it "
                    "cannot be cut, healed or slowed from here (cut the network between the hosts instead)"
                ) from None
            raise NotFound(f"no link {src} -> {dst}; known regions: {known}") from None

    def resets(self, src: str, dst: str) -> bool:
        """Whether a connection src -> dst is reset: either of its directions is cut with reset."""
        return any(link.cut and link.reset for link in (self.link(src, dst), self.link(dst, src)))

    def transit_s(self, link: Link, reverse: Link) -> float:
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
        delay = checked_ms("delay", delay_ms) if delay_ms is not None else None
        jitter = checked_ms("jitter", jitter_ms) if jitter_ms is not None else None
        new_loss = checked_loss(loss) if loss is not None else None
        if delay is not None:
            link.delay_ms = delay
        if jitter is not None:
            link.jitter_ms = jitter
        if new_loss is not None:
            link.loss = new_loss
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


def checked_ms(what: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_DELAY_MS:
        raise ValidationError(
            f"{what} must be a number of milliseconds from 0 to {MAX_DELAY_MS:g}, not {value!r}"
        )
    return float(value)


def checked_loss(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValidationError(
            f"loss must be a probability from 0 up to (not including) 1, not {value!r}; use cut"
        )
    return float(value)
