"""The machine's ceiling: a bare Starlette app answering a small JSON object, served like a region."""

from __future__ import annotations

import argparse
import importlib.util
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bookstore.runtime.coalescing import CoalescingHttpToolsProtocol
from bookstore.runtime.region import listening_socket

PATH = "/ceiling"


async def _answer(request: Request) -> JSONResponse:
    return JSONResponse({"id": "ceiling", "ok": True})


app = Starlette(routes=[Route(PATH, _answer)])


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


# Mirrors the uvicorn.Config and the sockets of bookstore.runtime.region.serve (loop at "auto", the
# same http protocol, one worker, no access log); change both together or the ratios stop comparing
# like with like.
FLAGS = ServerFlags()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the ceiling app the way a region is served.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    config = uvicorn.Config(
        app,
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
