"""The region process: one region's API on its loopback address, its stream consumers, its replicator."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp

from bookstore import tables
from bookstore.api.app import create_app
from bookstore.api.responses import JSON
from bookstore.bootstrap import RegionServices, build_region
from bookstore.config import Topology
from bookstore.replication.auth import PeerAuth, PeerAuthMiddleware
from bookstore.replication.http import ChangeFeed, HttpPeer, replication_routes
from bookstore.replication.tables import ReplicationMetrics, Replicator
from bookstore.runtime import logs
from bookstore.runtime.links import link_url
from bookstore.runtime.secret import deployment_secret

log = logging.getLogger("bookstore.region")


def build_replicator(services: RegionServices, secret: str, registry: CollectorRegistry) -> Replicator | None:
    """The replicator following every other region, or None where the engine replicates natively."""
    if services.replica is None:
        return None
    topology, me = services.topology, services.region.id
    schemas = {s.name: s for s in tables.ALL if s.name in topology.replication.tables}
    regions = [r.id for r in topology.regions]
    peers = [
        HttpPeer(
            r.id,
            link_url(topology, me, r.id, r.api_port),
            me=me,
            auth=PeerAuth(secret, me, services.clock),
            schemas=schemas,
            regions=regions,
        )
        for r in topology.regions
        if r.id != me
    ]
    return Replicator(
        services.replica,
        me,
        peers,
        clock=services.clock,
        metrics=ReplicationMetrics(registry, me),
        anti_entropy_s=topology.replication.anti_entropy_s,
        retention_ms=int(topology.replication.retention_s * 1000),
        tables=tuple(schemas),
        active_peers=[r for r in topology.active if r != me],
    )


def region_app(services: RegionServices, secret: str | None = None) -> ASGIApp:
    """The region's whole HTTP surface: the API, /status, and (with a secret) the replication endpoints."""
    registry = CollectorRegistry()
    app = create_app(services, registry)
    replicator = build_replicator(services, secret, registry) if secret else None
    feed = ChangeFeed()
    if replicator is not None and services.replica is not None:
        schemas = {s.name: s for s in tables.ALL if s.name in replicator.tables}
        app.router.routes.extend(
            replication_routes(services.replica, feed, schemas, [r.id for r in services.topology.regions])
        )
        services.replica.add_listener(feed.notify)

    @app.get("/status", tags=["operations"])
    async def status(digest: bool = False) -> JSON:
        """Replication and consumers; with ?digest=true a digest of every replicated table's live items."""
        now = services.clock.now_ms()
        body: dict[str, object] = {
            "regionId": services.region.id,
            "replication": replicator.status() if replicator else None,
            "consumers": {n: {"lagSeconds": c.lag_seconds(now)} for n, c in services.consumers.items()},
        }
        if digest and replicator is not None and services.replica is not None:
            body["stateDigest"] = await asyncio.to_thread(services.replica.state_digest, replicator.tables)
        return JSON(body)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        services.identity.ensure_signing_key()
        feed.bind(asyncio.get_running_loop())
        stop = asyncio.Event()
        jobs = {n: c.run(stop) for n, c in services.consumers.items()}
        if replicator is not None:
            jobs["replicator"] = replicator.run(stop)
        tasks = [asyncio.create_task(job, name=name) for name, job in jobs.items()]
        log.info("serving %s (%s) at %s", services.region.name, services.region.id, services.region.api_url)
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            log.info("stopped")

    app.router.lifespan_context = lifespan
    app.state.replicator = replicator
    if secret is None:
        return app
    return PeerAuthMiddleware(app, secret, services.clock, protected_prefix="/replication/")


def serve(topology: Topology, region_id: str, data_dir: Path) -> None:
    """Serve one region until SIGINT/SIGTERM."""
    logs.configure(region_id)
    services = build_region(topology, region_id, data_dir)
    region = services.region
    try:
        config = uvicorn.Config(
            region_app(services, deployment_secret(data_dir)),
            host=region.address,
            port=region.api_port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=3,
        )
        uvicorn.Server(config).run()
    finally:
        services.close()
