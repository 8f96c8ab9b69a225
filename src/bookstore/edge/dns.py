"""The edge's DNS server on loopback (Route 53's answers): A records from the same records and health.

Names in the zone (bookstore.test by default):
- api.<zone>: the latency record, for the client's location: the region whose /24 holds the source
  address of the query, else the edge's default location;
- blog.<zone>: the blog's failover record (its primary while healthy, else a replica);
- <zone> and www.<zone>: the origin group's current origin (the home bucket's region while it serves);
- edge.<zone>: the edge itself.
The answer is the region's loopback address, with the configured TTL (5 s by default), so
`dig @127.0.0.1 -p 5353 api.bookstore.test` shows a failover as it happens. Other names in the zone
get NXDOMAIN, other types NODATA (both with the zone's SOA), names outside it REFUSED. UDP only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

from dnslib import QTYPE, RCODE, RR, SOA, A, DNSRecord  # type: ignore[import-untyped]

log = logging.getLogger("bookstore.edge.dns")

# name -> the address it resolves to now for a client at `source`, or None (no healthy answer).
Resolve = Callable[[str, str], str | None]


class DnsServer(asyncio.DatagramProtocol):
    """Answers A queries for the zone's names through `resolve`."""

    def __init__(
        self,
        zone: str,
        ttl_s: int,
        resolve: Resolve,
        names: frozenset[str],
        count: Callable[[str, str], None],
    ) -> None:
        self.zone = zone.lower().rstrip(".")
        self.ttl_s = ttl_s
        self.resolve = resolve
        self.names = names
        self.count = count
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.DatagramTransport without subclassing it.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        try:
            reply = self.answer(data, str(addr[0]))
        except Exception:  # a malformed datagram gets no answer, as from a real server
            self.count("-", "FORMERR")
            return
        if self.transport is not None and reply is not None:
            self.transport.sendto(reply, addr)

    def _soa(self) -> RR:
        return RR(
            self.zone,
            QTYPE.SOA,
            ttl=self.ttl_s,
            rdata=SOA(f"edge.{self.zone}", f"hostmaster.{self.zone}", (1, 60, 60, 3600, self.ttl_s)),
        )

    def answer(self, data: bytes, source: str) -> bytes | None:
        request = DNSRecord.parse(data)
        if request.header.qr:
            return None
        reply = request.reply()
        reply.header.ra = 0
        if not request.questions:
            reply.header.rcode = RCODE.FORMERR
            return bytes(reply.pack())
        question = request.q
        name = str(question.qname).rstrip(".").lower()
        if name != self.zone and not name.endswith("." + self.zone):
            reply.header.aa = 0
            reply.header.rcode = RCODE.REFUSED
            self.count("-", "REFUSED")
            return bytes(reply.pack())
        if name not in self.names:
            reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(self._soa())
            self.count("-", "NXDOMAIN")
            return bytes(reply.pack())
        if question.qtype == QTYPE.SOA and name == self.zone:
            reply.add_answer(self._soa())
            self.count(name, "NOERROR")
            return bytes(reply.pack())
        if question.qtype not in (QTYPE.A, QTYPE.ANY):
            reply.add_auth(self._soa())
            self.count(name, "NODATA")
            return bytes(reply.pack())
        address = self.resolve(name, source)
        if address is None:
            reply.header.rcode = RCODE.SERVFAIL
            self.count(name, "SERVFAIL")
            return bytes(reply.pack())
        reply.add_answer(RR(question.qname, QTYPE.A, rdata=A(address), ttl=self.ttl_s))
        self.count(name, "NOERROR")
        return bytes(reply.pack())


async def start_dns(
    host: str,
    port: int,
    zone: str,
    ttl_s: int,
    resolve: Resolve,
    names: frozenset[str],
    count: Callable[[str, str], None],
) -> asyncio.DatagramTransport:
    """Listen on host:port (UDP); raises OSError when the port is taken."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: DnsServer(zone, ttl_s, resolve, names, count), local_addr=(host, port)
    )
    log.info("event=dns_listening address=%s:%d zone=%s", host, port, zone)
    return transport
