"""A listener made by the shared factory (runtime.listeners) in a thread, answering 200 "ok" to anything."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from bookstore.runtime.listeners import Limits, server_config
from bookstore.runtime.region import listening_socket


async def _ok(scope: dict[str, object], receive: object, send: object) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]


@contextmanager
def ok_listener(limits: Limits) -> Iterator[tuple[str, int]]:
    """The (host, port) of a listener with `limits`, until the block ends."""
    sock = listening_socket("127.0.0.1", 0)
    server = uvicorn.Server(server_config(_ok, limits=limits, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    try:
        yield sock.getsockname()
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
