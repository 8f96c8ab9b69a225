"""The machine's ceilings, served like a region: a raw ASGI app and a bare Starlette app answering a book.

Both answer the bytes GET /books/{id} answers (the book given by `--book`, a JSON file the bench fetched
from the region): the raw app is the strictest anchor for Python on this server (no framework, orjson
per request, the whole answer in one call of the server's WHOLE_ANSWER extension, as the region's hot
paths answer), the Starlette one what a framework route costs on top.

Served as a region is served, by the same code (region.process: `server_settings`, the listener's
protocol and limits, no proxy-headers layer, and `settle`, the collector's and malloc's tuning): the
ratios then compare the apps alone. Before, the ceilings ran on uvicorn's defaults, which put a
proxy-headers layer and a keep-alive timer armed and cancelled per request in front of them that the
region does not pay, and without the region's tuning of the collector.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from bookstore.region.process import server_settings, settle
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


def describe() -> str:
    """The server settings of the ceilings and the region, for the report."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    config = server_settings(raw_app({}))
    return (
        f"uvicorn {uvicorn.__version__}, 1 worker, loop {loop}, http httptools with the region's bounds and "
        f"one send per response (runtime/listeners.py, runtime/coalescing.py), keep-alive "
        f"{config.timeout_keep_alive} s, proxy headers off, access log off, a TCP listening socket as the "
        "region's (TCP_NODELAY), the collector frozen after start-up and its thresholds raised (all "
        "taken from bookstore.region.process, the code that serves a region)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a ceiling app the way a region is served.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--book", type=Path, required=True, help="a JSON file: the book to answer")
    args = parser.parse_args()
    book = orjson.loads(args.book.read_bytes())
    config = server_settings(raw_app(book) if args.kind == "raw" else starlette_app(book))
    settle()
    uvicorn.Server(config).run(sockets=[listening_socket(args.host, args.port)])


if __name__ == "__main__":
    main()
