"""Writes within one event-loop turn leave in one send, in order; a close sends what is pending first."""

from __future__ import annotations

import asyncio
import os
import socket

import httpx
import pytest
import uvicorn

from bookstore.runtime.coalescing import CoalescingTransport


class RecordingTransport:
    """Just enough of a transport to see what reaches the socket."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def writelines(self, lines: list[bytes]) -> None:
        self.sent.append(lines)  # type: ignore[arg-type]

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def test_writes_of_one_turn_go_out_together_and_a_close_flushes_first() -> None:
    async def scenario() -> tuple[list[bytes], list[bytes], bool, str]:
        raw = RecordingTransport()
        transport = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(b"body")
        assert raw.sent == []  # nothing yet: the turn is not over
        await asyncio.sleep(0)
        first = list(raw.sent)
        transport.write(b"last")
        transport.close()
        return first, raw.sent, raw.closed, transport.get_extra_info("peername")

    first, sent, closed, info = asyncio.run(scenario())
    assert first == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    assert sent == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"last"] and closed
    assert info == "info:peername"


def test_large_writes_of_one_turn_are_handed_over_uncopied_in_one_call() -> None:
    head, first, second = b"HTTP/1.1 200 OK\r\n\r\n", os.urandom(1 << 20), os.urandom(1 << 20)

    async def scenario() -> list[bytes]:
        raw = RecordingTransport()
        transport = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
        for data in (head, first, second):
            transport.write(data)
        await asyncio.sleep(0)
        return raw.sent

    (lines,) = asyncio.run(scenario())
    # The very objects, in order: joining them would copy 2 MiB into fresh memory.
    assert [id(p) for p in lines] == [id(head), id(first), id(second)]


@pytest.mark.parametrize("size", [10, 300_000])
def test_a_real_server_on_the_protocol_answers_whole(size: int) -> None:
    from bookstore.runtime.coalescing import CoalescingHttpToolsProtocol

    body = b"x" * size

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": body[: size // 2], "more_body": True})
        await send({"type": "http.response.body", "body": body[size // 2 :]})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, http=CoalescingHttpToolsProtocol, log_config=None, lifespan="off")
    server = uvicorn.Server(config)

    async def scenario() -> list[bytes]:
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            answers = [(await client.get("/")).content for _ in range(3)]
        server.should_exit = True
        await serving
        return answers

    assert asyncio.run(scenario()) == [body] * 3
