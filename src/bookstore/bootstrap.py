"""Builds a region's services from the topology: the one place that chooses adapters."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from bookstore import tables
from bookstore.blog.repository import BlogRepository
from bookstore.blog.service import BlogService
from bookstore.config import Region, Topology
from bookstore.objectstore.port import ObjectStore
from bookstore.ports import Clock, GroupRunner, Ranking, SearchIndex, Table
from bookstore.replication.clock import SystemClock
from bookstore.replication.tables import ReplicaStore
from bookstore.services.bestsellers import BestSellers
from bookstore.services.cart import Cart
from bookstore.services.catalog import Catalog
from bookstore.services.checkout import Checkout
from bookstore.services.identity import Identity
from bookstore.services.search import BookSearch
from bookstore.services.streams import StreamConsumer
from bookstore.services.writes import GroupCommit
from bookstore.storage.local.ownership import own

log = logging.getLogger("bookstore.bootstrap")


@dataclass
class RegionServices:
    """Everything one region serves, wired to its adapters; `close()` releases them."""

    region: Region
    topology: Topology
    data_dir: Path
    clock: Clock
    tables: dict[str, Table]
    catalog: Catalog
    cart: Cart
    checkout: Checkout
    bestsellers: BestSellers
    search: BookSearch
    identity: Identity
    # Our replicator's store on the embedded default; None where the engine replicates natively (DynamoDB).
    replica: ReplicaStore | None = None
    objects: ObjectStore | None = None
    blog: BlogService | None = None
    # Cart and checkout writes of concurrent requests, committed in shared transactions where possible.
    writes: GroupCommit = field(default_factory=GroupCommit)
    _resources: ExitStack = field(default_factory=ExitStack)

    @property
    def consumers(self) -> dict[str, StreamConsumer]:
        return {
            "bestsellers": self.bestsellers.consumer,
            "search": self.search.consumer,
            "catalog": self.catalog.consumer,
        }

    def close(self) -> None:
        self._resources.close()


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
) -> RegionServices:
    """The region's services on its data directory, which it owns until `close()`.

    Ownership comes first (storage.local.ownership): start-up work such as the object store's sweep
    must never run beside another owner. Raises DataDirInUse when another process holds it after
    `wait_s` seconds; `holder` says who owns it, for that message.
    """
    region = topology.region(region_id)
    home = region_dir(data_dir, region_id)
    clock = clock or SystemClock()
    stack = ExitStack()
    ownership = own(home, holder or f"region {region_id}", wait_s=wait_s)
    stack.callback(ownership.release)
    try:
        table_map, replica, run_group = _tables(topology, region, home, clock, stack)
        objects = _objects(topology, region, home, clock, stack)
        catalog = Catalog(table_map["books"], region=region.id, clock=clock)
        blog = _blog(topology, region, home, clock, stack, catalog)
        ranking = _ranking(topology, region, home, stack)
        index = _search_index(home, stack)
        identity = Identity(
            table_map["users"],
            table_map["keys"],
            table_map["sessions"],
            revocations=table_map["revocations"],
            attempts=table_map["attempts"],
            region=region.id,
            key_dir=home / "keys",
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
            search=BookSearch(table_map["books"], index, region.id, clock=clock),
            identity=identity,
            replica=replica,
            objects=objects,
            blog=blog,
            writes=GroupCommit(run_group),
            _resources=stack,
        )
    except BaseException:
        stack.close()
        raise


def _tables(
    topology: Topology, region: Region, home: Path, clock: Clock, stack: ExitStack
) -> tuple[dict[str, Table], ReplicaStore | None, GroupRunner | None]:
    """The region's tables, our replicator's store over them, and their group commit (DynamoDB: None)."""
    if topology.storage.tables == "dynamodb":
        import boto3
        import botocore.config

        from bookstore.storage.dynamodb.tables import DynamoTable

        session = boto3.session.Session(region_name=region.id)
        endpoint = topology.storage.dynamodb_endpoint
        # Account-id endpoints are off: they break DynamoDB-compatible endpoints and moto, and AWS needs none.
        config = botocore.config.Config(account_id_endpoint_mode="disabled")
        client = session.client("dynamodb", endpoint_url=endpoint, config=config)
        streams = session.client("dynamodbstreams", endpoint_url=endpoint, config=config)
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

    db = SqliteDatabase(home / "tables.db", region.id, clock, durability=topology.storage.durability)
    stack.callback(db.close)
    table_map: dict[str, Table] = {schema.name: db.table(schema) for schema in tables.ALL}
    return table_map, SqliteReplica(db), db.run_group


def _objects(topology: Topology, region: Region, home: Path, clock: Clock, stack: ExitStack) -> ObjectStore:
    if topology.storage.objects == "s3":
        import boto3

        from bookstore.storage.s3.objects import S3ObjectStore

        client = boto3.session.Session(region_name=region.id).client(
            "s3", endpoint_url=topology.storage.s3_endpoint
        )
        return S3ObjectStore(client)

    from bookstore.storage.local.objects import LocalObjectStore

    store = LocalObjectStore(home / "objects", region.id, clock, durability=topology.storage.durability)
    stack.callback(store.close)
    return store


def _blog(
    topology: Topology, region: Region, home: Path, clock: Clock, stack: ExitStack, catalog: Catalog
) -> BlogService:
    from bookstore.storage.sqlite.sql import SqliteSql

    db = SqliteSql(home / "blog.db", topology.storage.durability)
    stack.callback(db.close)
    repository = BlogRepository.open(db, region=region.id, primary_region=topology.home_region, clock=clock)
    blog = BlogService(repository, clock=clock, book_name=lambda book_id: str(catalog.get(book_id)["name"]))
    blog.seed()
    return blog


def _ranking(topology: Topology, region: Region, home: Path, stack: ExitStack) -> Ranking:
    if topology.storage.ranking == "redis":
        import redis

        from bookstore.storage.redis.ranking import RedisRanking

        client = redis.Redis.from_url(topology.storage.redis_url)
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
