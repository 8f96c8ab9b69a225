"""uvicorn servers run in a thread of the test process: any config on a given socket, or an "ok" listener."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from bookstore.runtime.listeners import Limits, listening_socket, server_config


@contextmanager
def serving(config: uvicorn.Config, sock: socket.socket, wait_s: float = 10.0) -> Iterator[tuple[str, int]]:
    """Serves `config` on `sock` (bound) in a thread; yields its (host, port) once started; stops and
    closes the socket when the block ends."""
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + wait_s
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield sock.getsockname()
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


async def _ok(scope: dict[str, object], receive: object, send: object) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]


@contextmanager
def ok_listener(limits: Limits) -> Iterator[tuple[str, int]]:
    """The (host, port) of a listener made by the shared factory with `limits`, answering 200 "ok"."""
    config = server_config(_ok, limits=limits, lifespan="off")
    with serving(config, listening_socket("127.0.0.1", 0)) as address:
        yield address
