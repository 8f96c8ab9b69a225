"""The edge's HTTP/1.1 client (edge/upstream.py) against a scripted origin: pooling and deadlines."""

from __future__ import annotations

import asyncio
import time

import pytest

from bookstore.edge.upstream import Origin, UpstreamError

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-a: 1\r\n\r\nok"


async def _origin(silent_after: int) -> tuple[asyncio.Server, list[int]]:
    """An origin on loopback that answers the first `silent_after` requests of each connection, then
    none; returns the server and the count of connections it accepted."""
    accepted: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        served = 0
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            served += 1
            if served <= silent_after:
                writer.write(ANSWER)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, accepted


def test_a_pooled_connection_keeps_each_requests_own_deadline() -> None:
    async def scenario() -> None:
        server, accepted = await _origin(silent_after=2)
        port = server.sockets[0].getsockname()[1]
        origin = Origin("127.0.0.1", port)
        try:
            # Two answers on one connection, the first with a long deadline (its timer outlives it).
            for _ in range(2):
                answer = await origin.request("GET", b"/", [], timeout_s=30)
                assert (answer.status, answer.body, answer.header(b"x-a")) == (200, b"ok", b"1")
            assert len(accepted) == 1
            # The third, on the same connection, gets no answer: its own, shorter deadline holds.
            started = time.monotonic()
            with pytest.raises(UpstreamError) as caught:
                await origin.request("GET", b"/", [], timeout_s=0.3)
            assert caught.value.timeout and 0.25 < time.monotonic() - started < 2.0
            # A timed-out connection is not reused: the next request opens another one.
            assert not origin.idle
        finally:
            origin.close()
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


def test_send_calls_back_once_with_the_answer_or_the_error() -> None:
    async def scenario() -> None:
        server, _ = await _origin(silent_after=1)
        port = server.sockets[0].getsockname()[1]
        calls: list[tuple[int | None, str | None]] = []
        done = asyncio.Event()

        def record(answer: object, error: UpstreamError | None) -> None:
            calls.append((getattr(answer, "status", None), None if error is None else str(error)))
            done.set()

        try:
            Origin("127.0.0.1", port).send("GET", b"/", [], b"", 5.0, record)
            assert not calls  # never from within the call
            await asyncio.wait_for(done.wait(), 5)
            done.clear()
            Origin("127.0.0.1", 1).send("GET", b"/", [], b"", 5.0, record)  # nothing listens on port 1
            await asyncio.wait_for(done.wait(), 5)
            await asyncio.sleep(0.1)
            assert calls[0] == (200, None)
            assert calls[1][0] is None and "could not connect" in str(calls[1][1])
            assert len(calls) == 2
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())
