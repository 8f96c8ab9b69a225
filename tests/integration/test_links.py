"""The link simulator on real loopback sockets: bytes, delays, cuts, heals, loss, state, control API."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bookstore.config import Region, Topology, link_address, link_url
from bookstore.domain.errors import NotFound, ValidationError
from bookstore.netsim.control import create_control_app, serve
from bookstore.netsim.simulator import LinkSimulator
from bookstore.supervisor.launch import free_port
from tests.support.regions import loopback_network

EU, AP, US = "eu-west-1", "ap-southeast-1", "us-east-1"
# Each test process takes its own /16 (127.(50+worker) by default), and each region a /24 of it.
# 50 below the run's region networks (tests/support/regions.py), so two runs on one machine never meet.
_NETWORK = loopback_network(-50)
_subnets = itertools.count(1)


def loopback_topology(ids: tuple[str, ...] = (EU, AP, US)) -> Topology:
    regions = []
    for region_id in ids:
        address = f"127.{_NETWORK}.{next(_subnets) % 250 + 1}.1"
        regions.append(
            Region(
                id=region_id,
                name=region_id,
                flag="",
                address=address,
                api_port=free_port(address),
                s3_port=free_port(address),
            )
        )
    return Topology(regions=tuple(regions), active=ids[:2], home_region=ids[0])


@dataclass
class Echo:
    """A TCP echo service on a region's address that remembers what it received."""

    received: bytearray = field(default_factory=bytearray)
    server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                self.received += data
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


@asynccontextmanager
async def running(
    topology: Topology, *, delay_ms: float = 0.0, serve_echo: tuple[str, ...] = (EU, AP, US)
) -> AsyncIterator[tuple[LinkSimulator, dict[str, Echo]]]:
    """Links between the topology's regions with every delay at `delay_ms`, and echo services on API ports."""
    ids = [r.id for r in topology.regions]
    delays = {(a, b): delay_ms for a in ids for b in ids if a != b}
    # A short minimum RTO keeps the loss test quick; the model is the same.
    links = LinkSimulator(topology, delays=delays, min_rto_ms=5, seed=7)
    echoes: dict[str, Echo] = {}
    for region_id in serve_echo:
        if region_id in ids:
            region = topology.region(region_id)
            echo = Echo()
            echo.server = await asyncio.start_server(echo.handle, region.address, region.api_port)
            echoes[region_id] = echo
    await links.start()
    try:
        yield links, echoes
    finally:
        await links.stop()
        for echo in echoes.values():
            assert echo.server is not None
            echo.server.close()


async def connect(
    topology: Topology, src: str, dst: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(link_address(topology, src, dst), topology.region(dst).api_port)


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> bytes:
    writer.write(data)
    await writer.drain()
    return await reader.readexactly(len(data))


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=30))


def test_link_addresses_follow_the_scheme() -> None:
    default = Topology()
    assert link_address(default, EU, AP) == "127.0.1.102"
    assert link_address(default, AP, EU) == "127.0.2.101"
    assert link_address(default, US, AP) == "127.0.3.102"
    assert link_address(default, EU, EU) == "127.0.1.1"
    assert link_url(default, EU, AP) == "http://127.0.1.102:8000"
    assert link_url(default, AP, US, 9000) == "http://127.0.2.103:9000"
    custom = Topology(
        regions=(
            Region(id=EU, name="Ireland", flag="", address="127.101.5.1"),
            Region(id=AP, name="Singapore", flag="", address="127.101.9.1"),
        ),
        active=(EU, AP),
        home_region=EU,
    )
    assert link_address(custom, EU, AP) == "127.101.5.102"
    assert link_address(custom, AP, EU) == "127.101.9.101"
    with pytest.raises(KeyError, match="known"):
        link_address(custom, EU, US)
    named = Topology(
        regions=(Region(id=EU, name="Ireland", flag="", address="localhost"), *custom.regions[1:]),
        active=(EU, AP),
        home_region=EU,
    )
    with pytest.raises(ValueError, match="IPv4"):
        link_address(named, EU, AP)


def test_regions_sharing_a_subnet_are_refused_when_endpoints_collide() -> None:
    shared = Topology(
        regions=tuple(
            Region(id=r, name=r, flag="", address=f"127.60.0.{i}") for i, r in enumerate((EU, AP, US), 1)
        ),
        active=(EU, AP),
        home_region=EU,
    )
    with pytest.raises(ValueError, match="/24"):
        LinkSimulator(shared)


def test_bytes_cross_unchanged_both_ways_even_large_payloads() -> None:
    topology = loopback_topology()
    payload = os.urandom(6 << 20)

    async def scenario() -> None:
        async with running(topology) as (links, echoes):
            reader, writer = await connect(topology, EU, AP)
            assert await exchange(reader, writer, b"hello, Singapore") == b"hello, Singapore"

            async def send() -> None:
                writer.write(payload)
                await writer.drain()

            sender = asyncio.create_task(send())
            back = await reader.readexactly(len(payload))
            await sender
            assert back == payload
            assert bytes(echoes[AP].received) == b"hello, Singapore" + payload
            writer.close()
            state = {(s["src"], s["dst"]): s for s in links.state()["links"]}
            assert state[(EU, AP)]["bytes"] == len(payload) + 16
            assert state[(AP, EU)]["bytes"] == len(payload) + 16
            assert state[(EU, AP)]["connections"] == 1
            assert state[(AP, EU)]["connections"] == 0

    run(scenario)


def test_a_round_trip_takes_at_least_both_delays_and_a_new_connection_a_handshake_more() -> None:
    topology = loopback_topology()

    async def scenario() -> None:
        async with running(topology, delay_ms=50) as (_, _echoes):
            started = time.monotonic()
            reader, writer = await connect(topology, EU, AP)
            await exchange(reader, writer, b"first")
            # Handshake (one round trip) then the data there and back.
            assert time.monotonic() - started >= 0.2 - 0.002
            for _ in range(3):
                started = time.monotonic()
                await exchange(reader, writer, b"ping")
                assert time.monotonic() - started >= 0.1 - 0.002
            writer.close()

    run(scenario)


def test_http_crosses_a_link_with_its_delay() -> None:
    topology = loopback_topology((EU, AP))
    singapore = topology.region(AP)

    async def hello(_: Request) -> PlainTextResponse:
        return PlainTextResponse("hello from Singapore")

    app = Starlette(routes=[Route("/books", hello)])

    async def scenario() -> None:
        server = uvicorn.Server(
            uvicorn.Config(
                app, host=singapore.address, port=singapore.api_port, log_level="warning", lifespan="off"
            )
        )
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        try:
            async with running(topology, delay_ms=30, serve_echo=()) as (links, _):
                async with httpx.AsyncClient(base_url=link_url(topology, EU, AP)) as client:
                    for _ in range(2):
                        started = time.monotonic()
                        response = await client.get("/books")
                        assert time.monotonic() - started >= 0.06 - 0.002
                        assert response.text == "hello from Singapore"
                assert links.pair_state(EU, AP)["connections"] == 1  # the client kept its connection
        finally:
            server.should_exit = True
            await task

    run(scenario)


def test_a_cut_stalls_requests_until_healed() -> None:
    topology = loopback_topology()

    async def scenario() -> None:
        async with running(topology, delay_ms=5) as (links, echoes):
            reader, writer = await connect(topology, EU, AP)
            assert await exchange(reader, writer, b"before") == b"before"
            links.cut(EU, AP)
            assert links.pair_state(EU, AP)["cut"] is True
            writer.write(b"during")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.readexactly(6), timeout=0.3)
            assert bytes(echoes[AP].received) == b"before"

            # A new connection is accepted, but nothing reaches the other side.
            r2, w2 = await connect(topology, EU, AP)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(exchange(r2, w2, b"new"), timeout=0.3)
            # Singapore's requests to Ireland still arrive; only their answers cross the cut direction.
            r3, w3 = await connect(topology, AP, EU)
            w3.write(b"the other way")
            for _ in range(100):
                if echoes[EU].received == b"the other way":
                    break
                await asyncio.sleep(0.02)
            assert echoes[EU].received == b"the other way"
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(r3.readexactly(3), timeout=0.1)

            links.heal(EU, AP)
            # Bytes held during the cut arrive after the heal, in order, on the same connection.
            assert await asyncio.wait_for(reader.readexactly(6), timeout=5) == b"during"
            assert await asyncio.wait_for(r2.readexactly(3), timeout=5) == b"new"
            assert await asyncio.wait_for(r3.readexactly(13), timeout=5) == b"the other way"
            r4, w4 = await connect(topology, EU, AP)
            assert await exchange(r4, w4, b"after") == b"after"
            for w in (writer, w2, w3, w4):
                w.close()

    run(scenario)


def test_a_one_way_cut_lets_requests_in_but_holds_their_answers() -> None:
    topology = loopback_topology()

    async def scenario() -> None:
        async with running(topology) as (links, echoes):
            reader, writer = await connect(topology, EU, AP)
            await exchange(reader, writer, b"x")
            links.cut(AP, EU)
            writer.write(b"request")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.readexactly(7), timeout=0.3)
            assert bytes(echoes[AP].received) == b"xrequest"
            links.heal_all()
            assert await asyncio.wait_for(reader.readexactly(7), timeout=5) == b"request"
            writer.close()

    run(scenario)


def test_a_resetting_cut_breaks_connections_at_once() -> None:
    topology = loopback_topology()

    async def scenario() -> None:
        async with running(topology) as (links, _):
            reader, writer = await connect(topology, EU, AP)
            await exchange(reader, writer, b"x")
            links.cut_both(EU, AP, reset=True)
            assert await asyncio.wait_for(reader.read(10), timeout=5) == b""
            r2, w2 = await connect(topology, EU, AP)
            w2.write(b"y")
            with suppress(ConnectionResetError):
                assert await asyncio.wait_for(r2.read(10), timeout=5) == b""
            links.heal_both(EU, AP)
            r3, w3 = await connect(topology, EU, AP)
            assert await exchange(r3, w3, b"z") == b"z"
            for w in (writer, w2, w3):
                w.close()

    run(scenario)


def test_a_destination_that_is_down_resets_the_caller() -> None:
    topology = loopback_topology()

    async def scenario() -> None:
        async with running(topology, serve_echo=(EU, AP)) as _:
            reader, writer = await connect(topology, EU, US)
            writer.write(b"anyone there?")
            with suppress(ConnectionResetError):
                assert await asyncio.wait_for(reader.read(10), timeout=5) == b""
            writer.close()

    run(scenario)


def test_a_delay_set_at_run_time_applies() -> None:
    topology = loopback_topology()

    async def scenario() -> None:
        async with running(topology) as (links, _):
            reader, writer = await connect(topology, AP, US)
            await exchange(reader, writer, b"warm")
            links.set_both(AP, US, delay_ms=60)
            assert links.pair_state(US, AP)["delayMs"] == 60
            started = time.monotonic()
            await exchange(reader, writer, b"slow")
            assert time.monotonic() - started >= 0.12 - 0.002
            links.set(AP, US, delay_ms=0)
            links.set(US, AP, delay_ms=0)
            assert await exchange(reader, writer, b"fast again") == b"fast again"
            writer.close()

    run(scenario)


def test_jitter_never_reorders_a_stream_and_loss_costs_retransmissions() -> None:
    topology = loopback_topology()

    async def scenario() -> None:
        async with running(topology) as (links, echoes):
            links.set_both(EU, US, delay_ms=2, jitter_ms=20)
            reader, writer = await connect(topology, EU, US)
            pieces = [f"<{i:03d}>".encode() for i in range(60)]
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.001)
            assert await asyncio.wait_for(reader.readexactly(5 * len(pieces)), timeout=10) == b"".join(pieces)

            links.set_both(EU, US, jitter_ms=0)
            links.set(EU, US, loss=0.2)
            started = time.monotonic()
            for i in range(50):
                assert await exchange(reader, writer, b"lossy %02d" % i) == b"lossy %02d" % i
            elapsed = time.monotonic() - started
            retransmits = links.pair_state(EU, US)["retransmits"]
            assert retransmits > 0
            assert links.pair_state(US, EU)["retransmits"] == 0
            # Each exchange waits for the last, so every lost chunk's RTO adds up.
            assert elapsed >= retransmits * 0.005 - 0.002
            assert bytes(echoes[US].received).endswith(b"lossy 49")
            writer.close()

    run(scenario)


def test_state_counts_connections_and_bytes_per_pair() -> None:
    topology = loopback_topology()

    async def scenario() -> None:
        async with running(topology) as (links, _):
            conns = [await connect(topology, EU, AP) for _ in range(3)]
            for reader, writer in conns:
                await exchange(reader, writer, b"12345")
            state = links.pair_state(EU, AP)
            assert (state["connections"], state["open"], state["bytes"]) == (3, 3, 15)
            assert links.pair_state(AP, EU)["bytes"] == 15
            assert len(links.state()["links"]) == 6
            assert state["listen"] == [
                f"{link_address(topology, EU, AP)}:{topology.region(AP).api_port}",
                f"{link_address(topology, EU, AP)}:{topology.region(AP).s3_port}",
            ]
            for _, writer in conns:
                writer.close()
            for _ in range(100):
                if links.pair_state(EU, AP)["open"] == 0:
                    break
                await asyncio.sleep(0.02)
            assert links.pair_state(EU, AP)["open"] == 0

    run(scenario)


def test_settings_are_validated() -> None:
    links = LinkSimulator(loopback_topology())
    with pytest.raises(NotFound):
        links.set(EU, "mars-1", delay_ms=1)
    with pytest.raises(ValidationError):
        links.cut(EU, EU)
    for bad in ({"delay_ms": -1}, {"jitter_ms": 1e9}, {"loss": 1.0}, {"loss": True}):
        with pytest.raises(ValidationError):
            links.set(EU, AP, **bad)
    assert links.pair_state(EU, AP)["delayMs"] == 85  # the real Ireland-Singapore default


def test_the_control_api_reads_and_changes_links_and_refuses_bad_requests() -> None:
    topology = loopback_topology()
    links = LinkSimulator(topology)

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=create_control_app(links))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            listed = await c.get("/links")
            assert listed.status_code == 200
            assert {(x["src"], x["dst"]) for x in listed.json()["links"]} == {
                (a, b) for a in (EU, AP, US) for b in (EU, AP, US) if a != b
            }
            changed = await c.post(f"/links/{EU}/{AP}", json={"delayMs": 120, "jitterMs": 5, "loss": 0.01})
            assert changed.status_code == 200
            pair = changed.json()["links"][0]
            assert (pair["delayMs"], pair["jitterMs"], pair["loss"]) == (120, 5, 0.01)
            assert links.pair_state(AP, EU)["delayMs"] == 85

            cut = await c.post(f"/links/{EU}/{AP}", json={"cut": True, "both": True})
            assert [x["cut"] for x in cut.json()["links"]] == [True, True]
            assert links.pair_state(AP, EU)["cut"]
            healed = await c.post(f"/links/{AP}/{EU}", json={"cut": False})
            assert healed.json()["links"][0]["cut"] is False
            assert links.pair_state(EU, AP)["cut"] is True
            one = await c.get(f"/links/{EU}/{AP}")
            assert one.json()["delayMs"] == 120

            bad = {
                "unknown region": (f"/links/{EU}/mars-1", {"cut": True}, 404),
                "same region": (f"/links/{EU}/{EU}", {"cut": True}, 400),
                "negative delay": (f"/links/{EU}/{AP}", {"delayMs": -5}, 400),
                "string delay": (f"/links/{EU}/{AP}", {"delayMs": "85"}, 400),
                "loss of one": (f"/links/{EU}/{AP}", {"loss": 1}, 400),
                "cut not bool": (f"/links/{EU}/{AP}", {"cut": "yes"}, 400),
                "reset without cut": (f"/links/{EU}/{AP}", {"reset": True}, 400),
                "unknown field": (f"/links/{EU}/{AP}", {"delay": 5}, 400),
                "nothing to do": (f"/links/{EU}/{AP}", {}, 400),
                "not an object": (f"/links/{EU}/{AP}", [1], 400),
            }
            for name, (path, body, status) in bad.items():
                response = await c.post(path, json=body)
                assert response.status_code == status, name
                assert set(response.json()) == {"error", "message"}, name
            broken = await c.post(f"/links/{EU}/{AP}", content=b"{not json")
            assert broken.status_code == 400
            assert (await c.get("/nowhere")).json()["error"] == "NotFound"
            assert (await c.delete("/links")).status_code == 405
            # A refused request changes nothing, even in the fields that were valid.
            await c.post(f"/links/{EU}/{AP}", json={"delayMs": 10, "loss": 2})
            assert links.pair_state(EU, AP)["delayMs"] == 120

    run(scenario)


def test_serve_runs_the_links_and_the_control_api_on_real_sockets() -> None:
    topology = loopback_topology((EU, AP))
    control_host = f"127.{_NETWORK}.250.1"
    control_port = free_port(control_host)
    links = LinkSimulator(topology, delays={(EU, AP): 0, (AP, EU): 0})

    async def scenario() -> None:
        singapore = topology.region(AP)
        echo = Echo()
        echo_server = await asyncio.start_server(echo.handle, singapore.address, singapore.api_port)
        task = asyncio.create_task(serve(links, control_host, control_port))
        try:
            async with httpx.AsyncClient(base_url=f"http://{control_host}:{control_port}") as c:
                for _ in range(200):
                    try:
                        response = await c.post(f"/links/{EU}/{AP}", json={"delayMs": 40})
                        break
                    except httpx.ConnectError:
                        await asyncio.sleep(0.02)
                assert response.json()["links"][0]["delayMs"] == 40
            reader, writer = await connect(topology, EU, AP)
            assert await exchange(reader, writer, b"via serve") == b"via serve"
            writer.close()
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            echo_server.close()

    run(scenario)
