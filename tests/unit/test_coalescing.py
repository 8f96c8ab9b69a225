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


def _serve_raw(app: object, requests: bytes) -> bytes:
    """What a real server on the protocol writes back for the raw `requests`, until it closes."""
    from bookstore.runtime.coalescing import CoalescingHttpToolsProtocol

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        http=CoalescingHttpToolsProtocol,
        log_config=None,
        lifespan="off",
        date_header=False,
    )
    server = uvicorn.Server(config)

    async def scenario() -> bytes:
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(requests)
        received = await asyncio.wait_for(reader.read(), timeout=10)
        writer.close()
        server.should_exit = True
        await serving
        return received

    return asyncio.run(scenario())


def _answering(whole: bool):  # type: ignore[no-untyped-def]
    from bookstore.kernel.http import WHOLE_ANSWER

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        body = scope["path"].encode()
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
        extension = scope.get("extensions", {}).get(WHOLE_ANSWER)
        if whole and extension["write"](send, 201, headers, body):
            return
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def test_a_whole_answer_is_written_as_the_two_messages_are_keep_alive_pipelining_and_close_kept() -> None:
    # Two pipelined requests on a kept-alive connection, then one asking to close it: every answer in
    # order, byte for byte what uvicorn's send writes, and the connection closed after the last.
    requests = (
        b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    written = _serve_raw(_answering(whole=True), requests)
    assert written == _serve_raw(_answering(whole=False), requests)
    assert written.count(b"HTTP/1.1 201 Created\r\n") == 3
    assert written.endswith(b"connection: close\r\n\r\n/three")
    assert written.index(b"/one") < written.index(b"/two") < written.index(b"/three")
