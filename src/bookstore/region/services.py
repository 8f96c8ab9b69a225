"""What one region serves: its services wired to their adapters (built by region.compose.build_region)."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from bookstore.blog.service import BlogService
from bookstore.config import Region, Topology
from bookstore.objectstore.port import ObjectStore
from bookstore.objectstore.sse_keys import KeyRotation
from bookstore.ports import Clock, Table
from bookstore.replication.tables.ports import ReplicaStore
from bookstore.services.bestsellers import BestSellers
from bookstore.services.cart import Cart
from bookstore.services.catalog import Catalog
from bookstore.services.checkout import Checkout
from bookstore.services.identity import Identity
from bookstore.services.search import BookSearch
from bookstore.services.streams import StreamConsumer
from bookstore.services.writes import GroupCommit


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
    # The object store's SSE-S3 keys when it keeps them (the local store); S3 rotates its own.
    sse_keys: KeyRotation | None = None
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
