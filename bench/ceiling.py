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

PATH = "/ceiling"


async def _answer(request: Request) -> JSONResponse:
    return JSONResponse({"id": "ceiling", "ok": True})


app = Starlette(routes=[Route(PATH, _answer)])


@dataclass(frozen=True)
class ServerFlags:
    """The uvicorn settings the ceiling shares with the region process, so only the app differs."""

    loop: str = "auto"
    http: str = "auto"
    workers: int = 1
    access_log: bool = False

    def resolved(self) -> tuple[str, str]:
        """The implementations uvicorn's "auto" picks here: uvloop/httptools when installed."""
        loop = self.loop
        if loop == "auto":
            loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
        http = self.http
        if http == "auto":
            http = "httptools" if importlib.util.find_spec("httptools") else "h11"
        return loop, http

    def describe(self) -> str:
        loop, http = self.resolved()
        access = "on" if self.access_log else "off"
        return (
            f"uvicorn {uvicorn.__version__}, {self.workers} worker, loop {loop}, http {http}, "
            f"access log {access}"
        )


# Mirrors the uvicorn.Config of bookstore.runtime.region.serve (loop and http left at "auto", one
# worker, no access log); change both together or the ratios stop comparing like with like.
FLAGS = ServerFlags()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the ceiling app the way a region is served.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        loop=FLAGS.loop,
        http=FLAGS.http,
        workers=FLAGS.workers,
        log_config=None,
        access_log=FLAGS.access_log,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
