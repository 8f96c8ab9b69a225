"""The region process's composition root: the one place that chooses adapters and wires a region together.

`build_region` builds the services over the adapters the topology names; `region_app` wires them with
the replicators (tables, objects, the blog's), the operator's commands and /status into the region's
HTTP surface; `compose` puts the S3 API and the fault switches around it, and is what process.py serves.
Nothing else in the region picks an implementation.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack, asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Receive, Scope, Send

from bookstore import tables
from bookstore.api.app import create_app
from bookstore.api.models import RegionStatus
from bookstore.blog.port import SqlDatabase
from bookstore.blog.repository import BlogRepository
from bookstore.blog.service import BlogService
from bookstore.config import MysqlDsn, Region, Topology, link_url
from bookstore.extras import require
from bookstore.kernel.auth import PeerAuth, PeerAuthMiddleware
from bookstore.kernel.clock import SkewedClock, SystemClock
from bookstore.kernel.http import JSON
from bookstore.kernel.link_faults import LinkFaults
from bookstore.kernel.openapi import error_answers
from bookstore.kernel.stream import ChangeFeed
from bookstore.objectstore.namespace import BucketDirectory, Cluster, site_bucket
from bookstore.objectstore.port import ObjectStore
from bookstore.objectstore.sse_keys import KeyRotation, Reencryptor
from bookstore.objectstore.sweeper import LifecycleSweeper
from bookstore.ports import Clock, GroupRunner, Ranking, SearchIndex, SigningKeyStore, Table
from bookstore.region.commands import create_commands_router
from bookstore.region.faults import RegionFaults
from bookstore.region.native import NativeBuckets, NativeReplication, NativeTables
from bookstore.region.services import RegionServices
from bookstore.replication.blog.metrics import BlogMetrics
from bookstore.replication.blog.node import BlogReplication, build_blog_replication
from bookstore.replication.blog.routes import blog_routes
from bookstore.replication.objects.client import PeerS3
from bookstore.replication.objects.replicator import ObjectReplicator
from bookstore.replication.objects.server import create_region_s3_app
from bookstore.replication.tables.http import HttpPeer, replication_routes
from bookstore.replication.tables.ports import ReplicaStore
from bookstore.replication.tables.replicator import ReplicationMetrics, Replicator
from bookstore.runtime import tls
from bookstore.runtime.secret import deployment_secret, s3_access
from bookstore.runtime.tracing import Tracing
from bookstore.services.bestsellers import BestSellers
from bookstore.services.cart import Cart
from bookstore.services.catalog import Catalog
from bookstore.services.checkout import Checkout
from bookstore.services.identity import Identity
from bookstore.services.search import BookSearch
from bookstore.services.writes import GroupCommit
from bookstore.storage.local.keys import KeyFiles
from bookstore.storage.local.ownership import own

if TYPE_CHECKING:
    from bookstore.replication.blog.mariadb_node import MariaDbBlog

log = logging.getLogger("bookstore.region")
OWNERSHIP_WAIT_S = 15.0


def region_dir(data_dir: Path, region_id: str) -> Path:
    """A region's own data directory: regions share no file."""
    path = data_dir / region_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_region(
    topology: Topology,
    region_id: str,
    data_dir: Path,
    clock: Clock | None = None,
    *,
    holder: str | None = None,
    wait_s: float = 0.0,
    signing_keys: SigningKeyStore | None = None,
    blog_sql: SqlDatabase | None = None,
    search_index: SearchIndex | None = None,
    tracing: Tracing | None = None,
) -> RegionServices:
    """The region's services on its data directory, which it owns until `close()`.

    Ownership comes first (storage.local.ownership): start-up work such as the object store's sweep
    must never run beside another owner. Raises DataDirInUse when another process holds it after
    `wait_s` seconds; `holder` says who owns it, for that message. `signing_keys` (default: key files in
    the data directory) is where the region's private signing keys are kept; `blog_sql` a blog database
    whose engine replicates it (Aurora), used as it is: no replication of ours is set up on it.
    `search_index` an index another process feeds and shares (DynamoDB, fed by the search consumer
    function): searches ask it every time, where the region's own index caches answers between batches.
    `tracing` (None: off, nothing installed) traces the cart and checkout writes and stores each
    change's trace context with its change record.
    """
    region = topology.region(region_id)
    home = region_dir(data_dir, region_id)
    clock = clock or SystemClock()
    stack = ExitStack()
    ownership = own(home, holder or f"region {region_id}", wait_s=wait_s)
    stack.callback(ownership.release)
    try:
        table_map, replica, run_group = _tables(topology, region, home, clock, stack, tracing)
        objects, sse_keys = _objects(topology, region, home, clock, stack)
        catalog = Catalog(table_map["books"], region=region.id, clock=clock)
        blog = _blog(topology, region, home, clock, stack, catalog, blog_sql)
        ranking = _ranking(topology, region, home, stack)
        index = search_index or _search_index(home, stack)
        identity = Identity(
            table_map["users"],
            table_map["keys"],
            table_map["sessions"],
            revocations=table_map["revocations"],
            attempts=table_map["attempts"],
            region=region.id,
            signing_keys=signing_keys or KeyFiles(home / "keys", region=region.id),
            clock=clock,
            access_ttl=topology.access_token_ttl,
            refresh_ttl=topology.refresh_token_ttl,
            on_code=lambda email, code: log.info("confirmation code for %s: %s", email, code),
        )
        return RegionServices(
            region=region,
            topology=topology,
            data_dir=home,
            clock=clock,
            tables=table_map,
            catalog=catalog,
            cart=Cart(table_map["carts"], catalog),
            checkout=Checkout(table_map["orders"], table_map["carts"], catalog, clock, region.id),
            bestsellers=BestSellers(table_map["orders"], ranking, region.id, clock=clock),
            search=BookSearch(table_map["books"], index, region.id, clock=clock, cached=search_index is None),
            identity=identity,
            replica=replica,
            objects=objects,
            sse_keys=sse_keys,
            blog=blog,
            writes=GroupCommit(run_group, bind=tracing.bind if tracing is not None else None),
            _resources=stack,
        )
    except BaseException:
        stack.close()
        raise


def _tables(
    topology: Topology, region: Region, home: Path, clock: Clock, stack: ExitStack, tracing: Tracing | None
) -> tuple[dict[str, Table], ReplicaStore | None, GroupRunner | None]:
    """The region's tables, our replicator's store over them, and their group commit (DynamoDB: None)."""
    if topology.storage.tables == "dynamodb":
        from bookstore.storage.dynamodb.tables import DynamoTable

        client = _aws_client(topology, region, "dynamodb")
        streams = _aws_client(topology, region, "dynamodbstreams")
        result: dict[str, Table] = {}
        for schema in tables.ALL:
            table = DynamoTable(
                schema, client=client, streams_client=streams, prefix=topology.storage.table_prefix
            )
            table.ensure_table()
            result[schema.name] = table
        return result, None, None

    from bookstore.storage.sqlite.replica import SqliteReplica
    from bookstore.storage.sqlite.tables import SqliteDatabase

    db = SqliteDatabase(
        home / "tables.db",
        region.id,
        clock,
        durability=topology.storage.durability,
        trace_context=tracing.traceparent if tracing is not None else None,
    )
    stack.callback(db.close)
    table_map: dict[str, Table] = {schema.name: db.table(schema) for schema in tables.ALL}
    return table_map, SqliteReplica(db), db.run_group


# How often a region asks DynamoDB, S3 and CloudWatch about their replication (a few calls per table).
NATIVE_CHECK_S = 60.0


def _aws_client(topology: Topology, region: Region, service: str) -> Any:
    """A boto3 client of `service` in the region, at the topology's endpoint for it (None: AWS itself)."""
    import boto3
    import botocore.config

    if service == "s3":
        return boto3.session.Session(region_name=region.id).client(
            "s3", endpoint_url=topology.storage.s3_endpoint
        )
    endpoint = topology.storage.dynamodb_endpoint if service.startswith("dynamodb") else None
    if service == "cloudwatch" and topology.storage.dynamodb_endpoint is not None:
        # Beside a DynamoDB-compatible endpoint (moto, local), CloudWatch is that service's too.
        endpoint = topology.storage.dynamodb_endpoint
    # Account-id endpoints are off: they break DynamoDB-compatible endpoints and moto, and AWS needs none.
    config = botocore.config.Config(account_id_endpoint_mode="disabled")
    return boto3.session.Session(region_name=region.id).client(service, endpoint_url=endpoint, config=config)


def build_native(services: RegionServices) -> NativeReplication | None:
    """The checks of the engines that replicate by themselves, or None when every engine is ours."""
    topology, region = services.topology, services.region
    storage = topology.storage
    if storage.tables != "dynamodb" and storage.objects != "s3" and storage.ranking != "redis":
        return None
    native = NativeReplication(region.id, list(topology.active))
    if storage.tables == "dynamodb":
        names = {schema.name: storage.table_prefix + schema.name for schema in tables.ALL}
        native.tables = NativeTables(
            _aws_client(topology, region, "dynamodb"), names, _aws_client(topology, region, "cloudwatch")
        )
    if storage.objects == "s3":
        native.buckets = NativeBuckets(_aws_client(topology, region, "s3"), site_bucket)
    if storage.ranking == "redis":
        native.redis_url = storage.redis_url
    return native


def _objects(
    topology: Topology, region: Region, home: Path, clock: Clock, stack: ExitStack
) -> tuple[ObjectStore, KeyRotation | None]:
    """The region's object store, and its SSE-S3 keys when it keeps them (S3 rotates its own)."""
    if topology.storage.objects == "s3":
        from bookstore.storage.s3.objects import S3ObjectStore

        return S3ObjectStore(_aws_client(topology, region, "s3")), None

    from bookstore.storage.local.objects import LocalObjectStore

    store = LocalObjectStore(home / "objects", region.id, clock, durability=topology.storage.durability)
    stack.callback(store.close)
    return store, store


def _blog(
    topology: Topology,
    region: Region,
    home: Path,
    clock: Clock,
    stack: ExitStack,
    catalog: Catalog,
    given: SqlDatabase | None = None,
) -> BlogService:
    from bookstore.storage.sqlite.sql import SqliteSql

    if given is not None:
        repository = BlogRepository.open(
            given, region=region.id, primary_region=topology.home_region, clock=clock
        )
    elif topology.storage.blog == "mysql":
        # The region's MariaDB server, set up for MariaDB's own replication (replication.blog.mariadb_node).
        require("pymysql", '[storage] blog = "mysql"')
        from bookstore.replication.blog.mariadb_node import open_mysql_blog
        from bookstore.storage.mysql.sql import MysqlSql

        def connect(dsn: MysqlDsn) -> MysqlSql:
            return MysqlSql(dsn.host, dsn.port, dsn.user, dsn.password, dsn.database)

        repository = open_mysql_blog(topology, region, clock, connect)
        stack.callback(repository.db.close)
    else:
        db = SqliteSql(home / "blog.db", topology.storage.durability)
        stack.callback(db.close)
        repository = BlogRepository.open(
            db, region=region.id, primary_region=topology.home_region, clock=clock
        )
    blog = BlogService(repository, clock=clock, book_name=lambda book_id: str(catalog.get(book_id)["name"]))
    blog.seed()
    return blog


def _ranking(topology: Topology, region: Region, home: Path, stack: ExitStack) -> Ranking:
    if topology.storage.ranking == "redis":
        require("redis", '[storage] ranking = "redis"')
        import redis
        import redis.cluster

        from bookstore.storage.redis.ranking import RedisRanking

        client: redis.Redis | redis.cluster.RedisCluster = redis.Redis.from_url(topology.storage.redis_url)
        try:
            # A cluster (ElastiCache in cluster mode) needs the cluster client, which follows slots.
            clustered = bool(client.info("cluster").get("cluster_enabled"))
        except redis.RedisError:
            clustered = False  # not reachable yet: the ranking reports StorageError until it is
        if clustered:
            client.close()
            client = redis.cluster.RedisCluster.from_url(topology.storage.redis_url)
        stack.callback(client.close)
        return RedisRanking(client, namespace=f"{region.id}:")

    from bookstore.storage.sqlite.ranking import SqliteRanking

    ranking = SqliteRanking(home / "ranking.db")
    stack.callback(ranking.close)
    return ranking


def _search_index(home: Path, stack: ExitStack) -> SearchIndex:
    from bookstore.storage.sqlite.search import SqliteSearchIndex

    index = SqliteSearchIndex(home / "search.db")
    stack.callback(index.close)
    return index


def build_replicator(
    services: RegionServices,
    secret: str,
    registry: CollectorRegistry,
    tracing: Tracing | None = None,
    verify: ssl.SSLContext | bool = True,
    links: LinkFaults | None = None,
) -> Replicator | None:
    """The replicator following every other region, or None where the engine replicates natively.

    `verify`: what its clients check the peers' certificates with (runtime.tls.verify); `links`: the
    region's links made faulty on purpose (kernel.link_faults), kept by its clients.
    """
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
            auth=PeerAuth(secret, me, services.clock, destination=r.id, links=links),
            schemas=schemas,
            regions=regions,
            verify=verify,
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
        on_applied=tracing.applied(me) if tracing is not None else None,
    )


def build_object_replicator(
    services: RegionServices,
    secret: str,
    verify: ssl.SSLContext | bool = True,
    links: LinkFaults | None = None,
) -> ObjectReplicator | None:
    """The object namespace (directory, peers' S3 ports through the links) and the replicator over it.

    None unless objects are on the local store: S3 itself has one namespace and replicates natively.
    """
    store, topology, me = services.objects, services.topology, services.region.id
    if store is None or topology.storage.objects != "local":
        return None
    peers = {
        r.id: PeerS3(
            r.id,
            link_url(topology, me, r.id, r.s3_port),
            me=me,
            secret=secret,
            clock=services.clock,
            verify=verify,
            links=links,
        )
        for r in topology.regions
        if r.id != me
    }
    # The tables' listeners hear of every committed change, local or replicated: the directory caches.
    watch = services.replica.add_listener if services.replica is not None else None
    directory = BucketDirectory(services.tables[tables.BUCKETS.name], me, watch)
    cluster = Cluster(me, store, directory, peers, tuple(r.id for r in topology.regions))
    return ObjectReplicator(cluster, store, services.clock, watch=[r for r in topology.active if r != me])


def region_app(
    services: RegionServices,
    secret: str | None = None,
    objects: ObjectReplicator | None = None,
    feed: ChangeFeed | None = None,
    on_replicator: Callable[[Replicator], None] | None = None,
    tracing: Tracing | None = None,
    verify: ssl.SSLContext | bool = True,
    links: LinkFaults | None = None,
    on_feed: Callable[[ChangeFeed], None] | None = None,
) -> ASGIApp:
    """The region's whole HTTP surface: the API, /status, and (with a secret) the replication endpoints.

    `objects` (build_object_replicator) adds object replication: its metrics, its /status section, its loop.
    `on_replicator` is handed the table replicator once built (the fault switches hold it).
    `on_feed` is handed every other feed whose streams must end as shutdown begins (the blog's).
    `tracing` traces the changes the replicator applies (their spans join the writing request's trace).
    `verify`: what the clients to peers check their certificates with (runtime.tls.verify); `links`: the
    links made faulty on purpose (the fault switch's), which they and the verifier keep.
    """
    registry = CollectorRegistry()
    app = create_app(services, registry, secret=secret, access_log=services.topology.observability.access_log)
    if objects is not None:
        objects.metrics.register(registry)
    replicator = build_replicator(services, secret, registry, tracing, verify, links) if secret else None
    if replicator is not None and on_replicator is not None:
        on_replicator(replicator)
    # The blog's single-primary replication (bookstore.replication.blog): its own endpoints and loop.
    blog: BlogReplication | MariaDbBlog | None = None
    if secret and services.blog is not None and services.topology.storage.blog == "mysql":
        # MariaDB's replication drives the server with pymysql: only a region on MariaDB imports it.
        from bookstore.replication.blog.mariadb_node import MariaDbBlog, MysqlBlogTopology

        blog = MariaDbBlog(
            services.blog.repository,
            MysqlBlogTopology.of(services.topology, services.region),
            clock=services.clock,
            metrics=BlogMetrics(registry, services.region.id),
            regions=services.topology.active,
        )
        app.router.routes.extend(blog_routes(blog))
    elif secret and services.blog is not None:
        me, topology = services.region.id, services.topology
        blog = build_blog_replication(
            services.blog.repository,
            region=me,
            peer_urls={r.id: link_url(topology, me, r.id) for r in topology.regions if r.id != me},
            secret=secret,
            clock=services.clock,
            registry=registry,
            confirm_peers=[r for r in topology.active if r != me],
            verify=verify,
            links=links,
        )
        app.router.routes.extend(blog_routes(blog))
        if on_feed is not None:
            on_feed(blog.feed)
    # Re-encryption after a key rotation runs in the background of the process that owns the store.
    reencryptor = Reencryptor(services.sse_keys) if services.sse_keys is not None else None
    if secret:
        # The operator's commands (`bookstore users add`...), signed: the CLI never opens this directory.
        app.include_router(create_commands_router(services, reencryptor))
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
                holds=replicator.holds,
            )
        )
        services.replica.add_listener(feed.notify)

    native = build_native(services)

    @app.get("/status", tags=["operations"], response_model=RegionStatus, responses=error_answers(400))
    async def status(digest: bool = False) -> JSON:
        """Replication and consumers; with ?digest=true a digest of every replicated table's live items."""
        now = services.clock.now_ms()
        body: dict[str, object] = {
            "regionId": services.region.id,
            "replication": replicator.status() if replicator else None,
            "consumers": {n: c.status(now) for n, c in services.consumers.items()},
            "objects": objects.status() if objects is not None else None,
            "blog": blog.status() if blog is not None else None,
            "native": native.report() if native is not None else None,
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
        if native is not None:
            # Before serving: the warnings are in the log at start, and /status never answers without them.
            await asyncio.to_thread(native.check)
            jobs["native"] = _check_native(native, stop)
        if services.objects is not None and services.topology.storage.objects == "local":
            # S3's lifecycle rules, carried out here (S3 itself runs them for the "s3" backend).
            day_ms = int(services.topology.storage.lifecycle_day_seconds * 1000)
            jobs["lifecycle"] = LifecycleSweeper(services.objects, services.clock, day_ms=day_ms).run(stop)
        if reencryptor is not None:
            jobs["reencryption"] = reencryptor.run(stop)
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
    # Peer authentication guards /replication/, which the API's hot paths never take: behind them.
    return app.guarded(
        lambda stack: PeerAuthMiddleware(
            stack,
            secret,
            services.clock,
            destination=services.region.id,
            protected_prefix="/replication/",
            links=links,
        )
    )


async def _check_native(native: NativeReplication, stop: asyncio.Event) -> None:
    """Ask the native engines again every NATIVE_CHECK_S until `stop`."""
    while True:
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), NATIVE_CHECK_S)
        if stop.is_set():
            return
        await asyncio.to_thread(native.check)


class PortRouter:
    """One server, two sockets: the S3 API on the region's S3 port, everything else on the API port."""

    def __init__(self, api: ASGIApp, s3: ASGIApp | None, s3_port: int) -> None:
        self.api = api
        self.s3 = s3
        self.s3_port = s3_port

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine, so a request meets no frame of this layer: it awaits its app's own. (Only as
        # the outermost app would it need to be one: uvicorn takes a plain __call__ for ASGI 2.)
        server = scope.get("server")
        if (
            self.s3 is not None
            and scope["type"] == "http"
            and server is not None
            and server[1] == self.s3_port
        ):
            return self.s3(scope, receive, send)
        return self.api(scope, receive, send)


def s3_staging(data_dir: Path) -> Path:
    """The directory where the S3 API spools request bodies: on the data's disk, emptied at each start."""
    staging = data_dir / "s3-staging"
    # Spools are unnamed files; a named one is left only by a crash on a filesystem without O_TMPFILE.
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True, exist_ok=True)
    return staging


@dataclass
class ComposedRegion:
    """A region ready to serve: its services (close them after), its whole ASGI app, its change feeds."""

    services: RegionServices
    app: ASGIApp
    # Closed as shutdown begins (end_streams): they end the long-lived replication streams, the tables'
    # first; a stream left open would hold shutdown for its whole graceful timeout, then be cancelled.
    feeds: tuple[ChangeFeed, ...]
    # Whether the app answers the S3 API on the region's S3 port.
    serves_s3: bool
    # Shut down (flushing its spans) when the region stops; None when not tracing.
    tracing: Tracing | None = None

    def end_streams(self) -> None:
        """End every replication stream this region serves (shutdown begins): followers reconnect later."""
        for feed in self.feeds:
            feed.close()


def compose(
    topology: Topology, region_id: str, data_dir: Path, tracing: Tracing | None = None
) -> ComposedRegion:
    """The region process's whole app: services, replicators, the S3 API, the fault switches.

    `tracing` (runtime.tracing.configure; None: off) is wired here once: a span per request around the
    whole app, the writes' spans and trace contexts, the replicator's spans. Off, nothing is installed.
    """
    # Skewed by 0 until a drill moves it (the clockSkewMs fault switch): every part reads this clock.
    clock = SkewedClock(SystemClock())
    # A command finishing its work on the directory has it for a moment: wait rather than fail.
    services = build_region(topology, region_id, data_dir, clock, wait_s=OWNERSHIP_WAIT_S, tracing=tracing)
    region = services.region
    try:
        secret = deployment_secret(data_dir)
        # With TLS between hosts, every client to a peer trusts the deployment's CA alone.
        verify = tls.verify(topology, data_dir)
        s3 = None
        # The peers the fault switch cuts this region off from or slows: its clients, its verifiers and the
        # switch share them.
        links = LinkFaults()
        objects = build_object_replicator(services, secret, verify, links)
        if services.objects is not None:
            access = s3_access(topology, data_dir)
            credentials = {access.access_key_id: access.secret_access_key}
            s3 = create_region_s3_app(
                services.objects,
                credentials,
                region.id,
                clock=services.clock,
                cluster=objects.cluster if objects is not None else None,
                secret=secret,
                staging=s3_staging(data_dir),
                links=links,
            )
        feeds = [ChangeFeed()]
        replicators: list[Replicator] = []
        api = region_app(
            services,
            secret,
            objects,
            feeds[0],
            on_replicator=replicators.append,
            tracing=tracing,
            verify=verify,
            links=links,
            on_feed=feeds.append,
        )
        app: ASGIApp = PortRouter(api, s3, region.s3_port)
        # The fault switches the edge's drills flip (`bookstore api break`, clock skew...), signed.
        app = RegionFaults(
            app,
            region.id,
            secret,
            clock,
            region.s3_port if s3 else None,
            replicator=replicators[0] if replicators else None,
            links=links,
        )
        if tracing is not None:
            app = tracing.middleware(app)
        return ComposedRegion(services, app, tuple(feeds), serves_s3=s3 is not None, tracing=tracing)
    except BaseException:
        services.close()
        raise
