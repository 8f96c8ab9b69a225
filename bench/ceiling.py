"""The machine's ceilings, served like a region: a raw ASGI app and a bare Starlette app answering a book.

Both answer the bytes GET /books/{id} answers (the book given by `--book`, a JSON file the bench fetched
from the region): the raw app is the strictest anchor for Python on this server (no framework, orjson
per request, the whole answer in one call of the server's WHOLE_ANSWER extension, as the region's hot
paths answer), the Starlette one what a framework route costs on top.
"""

from __future__ import annotations

import argparse
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from bookstore.runtime.coalescing import CoalescingHttpToolsProtocol
from bookstore.runtime.listeners import listening_socket

try:
    from bookstore.kernel.http import WHOLE_ANSWER
except ImportError:  # a tree from before the extension (bench.api_cpu --against): two sends, as its region
    WHOLE_ANSWER = ""

PATH = "/ceiling"
KINDS = ("raw", "starlette")


def raw_app(book: dict[str, Any]) -> Any:
    """The least an ASGI app can do to answer the book: orjson per request, no routing, no framework."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = orjson.dumps(book)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        # The server's whole-answer extension when it offers it, as the region's hot paths use it: the
        # anchor takes every shortcut the thing compared with it takes, or it would flatter the region.
        whole = scope.get("extensions", {}).get(WHOLE_ANSWER)
        if whole is not None and whole["write"](send, 200, headers, body):
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def starlette_app(book: dict[str, Any]) -> Starlette:
    """A Starlette route answering the book, as a framework route with a JSON response does."""

    async def answer(request: Request) -> Response:
        return Response(orjson.dumps(book), media_type="application/json")

    return Starlette(routes=[Route(PATH, answer)])


@dataclass(frozen=True)
class ServerFlags:
    """The uvicorn settings the ceiling shares with the region process, so only the app differs."""

    loop: str = "auto"
    workers: int = 1
    access_log: bool = False

    def resolved_loop(self) -> str:
        """The event loop uvicorn's "auto" picks here: uvloop when installed."""
        if self.loop == "auto":
            return "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
        return self.loop

    def describe(self) -> str:
        access = "on" if self.access_log else "off"
        return (
            f"uvicorn {uvicorn.__version__}, {self.workers} worker, loop {self.resolved_loop()}, http "
            f"httptools writing each response in one send (runtime/coalescing.py), a TCP listening "
            f"socket as the region's (TCP_NODELAY), access log {access}"
        )


# Mirrors the uvicorn.Config and the sockets of bookstore.region.process.serve (loop at "auto", the
# same http protocol, one worker, no access log); change both together or the ratios stop comparing
# like with like.
FLAGS = ServerFlags()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a ceiling app the way a region is served.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--book", type=Path, required=True, help="a JSON file: the book to answer")
    args = parser.parse_args()
    book = orjson.loads(args.book.read_bytes())
    config = uvicorn.Config(
        raw_app(book) if args.kind == "raw" else starlette_app(book),
        loop=FLAGS.loop,
        http=CoalescingHttpToolsProtocol,
        workers=FLAGS.workers,
        log_config=None,
        access_log=FLAGS.access_log,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run(sockets=[listening_socket(args.host, args.port)])


if __name__ == "__main__":
    main()
