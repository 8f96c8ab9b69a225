"""The region process: one region's API on its loopback address, its stream consumers, its replicator."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType

import uvicorn
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Receive, Scope, Send

from bookstore import tables
from bookstore.api.app import create_app
from bookstore.api.commands import create_commands_router
from bookstore.api.responses import JSON
from bookstore.blog.replication import build_blog_replication
from bookstore.bootstrap import RegionServices, build_region
from bookstore.config import Topology
from bookstore.edge.faults import RegionFaults
from bookstore.objectstore.app import create_s3_app
from bookstore.objectstore.namespace import BucketDirectory, Cluster
from bookstore.objectstore.peers import PeerS3
from bookstore.objectstore.replication import ObjectReplicator
from bookstore.replication.auth import PeerAuth, PeerAuthMiddleware
from bookstore.replication.clock import SkewedClock, SystemClock
from bookstore.replication.http import ChangeFeed, HttpPeer, replication_routes
from bookstore.replication.tables import ReplicationMetrics, Replicator
from bookstore.runtime import logs
from bookstore.runtime.links import link_url
from bookstore.runtime.listeners import Limits, server_config
from bookstore.runtime.secret import deployment_secret, s3_access

log = logging.getLogger("bookstore.region")
OWNERSHIP_WAIT_S = 15.0


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
            auth=PeerAuth(secret, me, services.clock, destination=r.id),
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
        anti_entropy_settle_ms=int(topology.replication.anti_entropy_settle_s * 1000),
        retention_ms=int(topology.replication.retention_s * 1000),
        tables=tuple(schemas),
        active_peers=[r for r in topology.active if r != me],
        max_clock_offset_ms=topology.replication.max_clock_offset_ms,
    )


def build_object_replicator(services: RegionServices, secret: str) -> ObjectReplicator | None:
    """The object namespace (directory, peers' S3 ports through the links) and the replicator over it.

    None unless objects are on the local store: S3 itself has one namespace and replicates natively.
    """
    store, topology, me = services.objects, services.topology, services.region.id
    if store is None or topology.storage.objects != "local":
        return None
    peers = {
        r.id: PeerS3(
            r.id, link_url(topology, me, r.id, r.s3_port), me=me, secret=secret, clock=services.clock
        )
        for r in topology.regions
        if r.id != me
    }
    directory = BucketDirectory(services.tables[tables.BUCKETS.name], me)
    cluster = Cluster(me, store, directory, peers, tuple(r.id for r in topology.regions))
    return ObjectReplicator(cluster, services.clock, watch=[r for r in topology.active if r != me])


def region_app(
    services: RegionServices,
    secret: str | None = None,
    objects: ObjectReplicator | None = None,
    feed: ChangeFeed | None = None,
    on_replicator: Callable[[Replicator], None] | None = None,
) -> ASGIApp:
    """The region's whole HTTP surface: the API, /status, and (with a secret) the replication endpoints.

    `objects` (build_object_replicator) adds object replication: its metrics, its /status section, its loop.
    `on_replicator` is handed the table replicator once built (the fault switches hold it).
    """
    registry = CollectorRegistry()
    app = create_app(services, registry, secret=secret)
    if objects is not None:
        objects.metrics.register(registry)
    replicator = build_replicator(services, secret, registry) if secret else None
    if replicator is not None and on_replicator is not None:
        on_replicator(replicator)
    # The blog's single-primary replication (bookstore.blog.replication): its own endpoints and loop.
    blog = None
    if secret and services.blog is not None:
        me, topology = services.region.id, services.topology
        blog = build_blog_replication(
            services.blog.repository,
            region=me,
            peer_urls={r.id: link_url(topology, me, r.id) for r in topology.regions if r.id != me},
            secret=secret,
            clock=services.clock,
            registry=registry,
            confirm_peers=[r for r in topology.active if r != me],
        )
        app.router.routes.extend(blog.routes())
    if secret:
        # The operator's commands (`bookstore users add`...), signed: the CLI never opens this directory.
        app.include_router(create_commands_router(services))
    feed = feed or ChangeFeed()
    if replicator is not None and services.replica is not None:
        schemas = {s.name: s for s in tables.ALL if s.name in replicator.tables}
        app.router.routes.extend(
            replication_routes(
                services.replica,
                feed,
                schemas,
                [r.id for r in services.topology.regions],
                clock=services.clock,
                max_clock_offset_ms=services.topology.replication.max_clock_offset_ms,
            )
        )
        services.replica.add_listener(feed.notify)

    @app.get("/status", tags=["operations"])
    async def status(digest: bool = False) -> JSON:
        """Replication and consumers; with ?digest=true a digest of every replicated table's live items."""
        now = services.clock.now_ms()
        body: dict[str, object] = {
            "regionId": services.region.id,
            "replication": replicator.status() if replicator else None,
            "consumers": {n: c.status(now) for n, c in services.consumers.items()},
            "objects": objects.status() if objects is not None else None,
            "blog": blog.status() if blog is not None else None,
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
        if blog is not None:
            jobs["blog"] = blog.run(stop)
        if objects is not None and services.objects is not None:
            await asyncio.to_thread(objects.cluster.directory.reconcile, services.objects)
            jobs["objects"] = objects.run(stop)
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
    return PeerAuthMiddleware(
        app, secret, services.clock, destination=services.region.id, protected_prefix="/replication/"
    )


class PortRouter:
    """One server, two sockets: the S3 API on the region's S3 port, everything else on the API port."""

    def __init__(self, api: ASGIApp, s3: ASGIApp | None, s3_port: int) -> None:
        self.api = api
        self.s3 = s3
        self.s3_port = s3_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        if (
            self.s3 is not None
            and scope["type"] == "http"
            and server is not None
            and server[1] == self.s3_port
        ):
            await self.s3(scope, receive, send)
        else:
            await self.api(scope, receive, send)


def s3_staging(data_dir: Path) -> Path:
    """The directory where the S3 API spools request bodies: on the data's disk, emptied at each start."""
    staging = data_dir / "s3-staging"
    # Spools are unnamed files; a named one is left only by a crash on a filesystem without O_TMPFILE.
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True, exist_ok=True)
    return staging


def listening_socket(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP given explicitly: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
    # and without it small responses wait ~40 ms for delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def serve(topology: Topology, region_id: str, data_dir: Path) -> None:
    """Serve one region (API and S3 API) until SIGINT/SIGTERM."""
    logs.configure(region_id)
    # Skewed by 0 until a drill moves it (the clockSkewMs fault switch): every part reads this clock.
    clock = SkewedClock(SystemClock())
    # A command finishing its work on the directory has it for a moment: wait rather than fail.
    services = build_region(topology, region_id, data_dir, clock, wait_s=OWNERSHIP_WAIT_S)
    region = services.region
    try:
        secret = deployment_secret(data_dir)
        s3 = None
        objects = build_object_replicator(services, secret)
        if services.objects is not None:
            access = s3_access(topology, data_dir)
            credentials = {access.access_key_id: access.secret_access_key}
            s3 = create_s3_app(
                services.objects,
                credentials,
                region.id,
                clock=services.clock,
                cluster=objects.cluster if objects is not None else None,
                secret=secret,
                staging=s3_staging(data_dir),
            )
        feed = ChangeFeed()
        replicators: list[Replicator] = []
        api = region_app(services, secret, objects, feed, on_replicator=replicators.append)
        app: ASGIApp = PortRouter(api, s3, region.s3_port)
        # The fault switches the edge's drills flip (`bookstore api break`, clock skew...), signed.
        app = RegionFaults(
            app,
            region.id,
            secret,
            clock,
            region.s3_port if s3 else None,
            replicator=replicators[0] if replicators else None,
        )
        sockets = [listening_socket(region.address, region.api_port)]
        if s3 is not None:
            sockets.append(listening_socket(region.address, region.s3_port))
        # Idle connections stay open 65 s (uvicorn's default is 5): peers reach this region through
        # links where every new connection costs a round trip (objectstore.peers.KEEPALIVE_S is below).
        config = server_config(
            app,
            limits=Limits(keep_alive_s=65),
            lifespan="on",
            timeout_graceful_shutdown=3,
            # X-Forwarded-For is anyone's to send: the client address comes from the edge's signed header.
            proxy_headers=False,
        )
        _RegionServer(config, on_exit=feed.close).run(sockets=sockets)
    finally:
        services.close()


class _RegionServer(uvicorn.Server):
    """Ends the long-lived replication streams as soon as shutdown begins, so it need not wait for them."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.on_exit()
        super().handle_exit(sig, frame)
