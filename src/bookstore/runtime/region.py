"""The region process: one region's API served on its loopback address, with its stream consumers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from bookstore.api.app import create_app
from bookstore.bootstrap import RegionServices, build_region
from bookstore.config import Topology
from bookstore.runtime import logs

log = logging.getLogger("bookstore.region")


def region_app(services: RegionServices) -> FastAPI:
    """The API app with the stream consumers running for as long as it is served."""
    app = create_app(services)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        services.identity.ensure_signing_key()
        stop = asyncio.Event()
        tasks = [asyncio.create_task(c.run(stop), name=n) for n, c in services.consumers.items()]
        log.info("serving %s (%s) at %s", services.region.name, services.region.id, services.region.api_url)
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            log.info("stopped")

    app.router.lifespan_context = lifespan
    return app


def serve(topology: Topology, region_id: str, data_dir: Path) -> None:
    """Serve one region until SIGINT/SIGTERM."""
    logs.configure(region_id)
    services = build_region(topology, region_id, data_dir)
    region = services.region
    try:
        config = uvicorn.Config(
            region_app(services),
            host=region.address,
            port=region.api_port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        uvicorn.Server(config).run()
    finally:
        services.close()
