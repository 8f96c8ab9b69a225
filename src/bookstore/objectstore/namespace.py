"""One bucket namespace across regions: the bucket -> region directory and the peers that own the rest.

The directory is the replicated `buckets` table (tables.BUCKETS: name -> region, createdMs), so every
region knows where every bucket lives once table replication has carried the entry. A region writes
entries for its own buckets only: on CreateBucket (conditionally, so a name already listed for another
region is refused with BucketAlreadyExists) and at start for buckets its store already holds. A name
the directory does not list yet (created elsewhere moments ago) is asked of the peers, which answer
from their own stores. Two regions creating the same name at the same moment, before either entry
has crossed the link, both succeed locally; the directory's last writer then wins and the loser's
bucket is only reachable at its own endpoint (S3 itself is strongly consistent here; we are not).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

from bookstore.domain.errors import ConditionFailed
from bookstore.objectstore.errors import BucketAlreadyExists, InvalidBucketName, NoSuchBucket
from bookstore.objectstore.peer import PeerRefused, PeerUnavailable, RegionPeer
from bookstore.objectstore.port import Bucket, Buckets, check_bucket_name
from bookstore.ports import ItemAbsent, Table

log = logging.getLogger("bookstore.objectstore")


def site_bucket(region_id: str) -> str:
    """The name of a region's storefront bucket (the website the edge serves from)."""
    return f"bookstore-web-{region_id}"


class BucketDirectory:
    """The `buckets` table as a directory: which region owns which bucket.

    Every S3 request asks it where its bucket lives. With `watch` (a way to be called after each
    committed change of the tables, local or replicated: SqliteReplica.add_listener) the answers are
    kept in memory and all dropped at each change, so the next request after a change reads the table.
    """

    def __init__(
        self, table: Table, region: str, watch: Callable[[Callable[[], None]], None] | None = None
    ) -> None:
        self.table = table
        self.region = region
        self._known: dict[str, Bucket | None] | None = None
        if watch is not None:
            self._known = {}
            # Bumped at each change: a lookup that read the table before it must not keep that answer.
            self._generation = 0
            self._lock = threading.Lock()
            watch(self._changed)

    def _changed(self) -> None:
        with self._lock:
            self._generation += 1
            self._known = {}

    def get(self, name: str) -> Bucket | None:
        known = self._known
        if known is None:
            return self._read(name)
        if name in known:
            return known[name]
        generation = self._generation
        found = self._read(name)
        with self._lock:
            if generation == self._generation:
                known[name] = found  # still the directory's map: no change came in between
        return found

    def _read(self, name: str) -> Bucket | None:
        item = self.table.get({"name": name})
        if item is None:
            return None
        return Bucket(name, str(item["region"]), int(item.get("createdMs", 0)))

    def claim(self, name: str, created_ms: int) -> None:
        """List `name` as this region's; BucketAlreadyExists when the directory gives it to another region."""
        try:
            self.table.put(
                {"name": name, "region": self.region, "createdMs": created_ms}, condition=ItemAbsent()
            )
        except ConditionFailed:
            current = self.get(name)
            if current is not None and current.region != self.region:
                raise BucketAlreadyExists(
                    f"The requested bucket name {name!r} is not available: it exists in {current.region}"
                ) from None

    def release(self, name: str) -> None:
        current = self.get(name)
        if current is not None and current.region == self.region:
            self.table.delete({"name": name})

    def all(self) -> list[Bucket]:
        out: list[Bucket] = []
        cursor: str | None = None
        while True:
            page = self.table.scan(limit=1000, cursor=cursor)
            out.extend(
                Bucket(str(i["name"]), str(i["region"]), int(i.get("createdMs", 0))) for i in page.items
            )
            cursor = page.cursor
            if cursor is None:
                return out

    def reconcile(self, store: Buckets) -> None:
        """List every bucket of this region's store (entries lost or written before the directory existed)."""
        for bucket in store.list_buckets():
            current = self.get(bucket.name)
            if current is None:
                self.claim(bucket.name, bucket.created_ms)
            elif current.region != self.region:
                log.warning(
                    "bucket %s is in this region's store, but the directory gives it to %s",
                    bucket.name,
                    current.region,
                )


P = TypeVar("P", bound=RegionPeer)


class Cluster(Generic[P]):
    """What one region's S3 API needs to serve every bucket: its store, the directory and its peers."""

    def __init__(
        self,
        region: str,
        store: Buckets,
        directory: BucketDirectory,
        peers: Mapping[str, P],
        regions: tuple[str, ...],
    ) -> None:
        self.region = region
        self.store = store
        self.directory = directory
        self.peers = dict(peers)
        # Every region of the topology, for LocationConstraint; only `peers` are reachable.
        self.regions = regions

    async def owner(self, name: str) -> Bucket | None:
        """Where bucket `name` lives: the directory's answer, else the first peer that holds it, else None."""
        try:
            check_bucket_name(name)
        except InvalidBucketName:
            return None
        listed = self.directory.get(name)
        if listed is not None:
            return listed
        try:
            return self.store.get_bucket(name)
        except NoSuchBucket:
            return await self.ask_peers(name)

    async def ask_peers(self, name: str) -> Bucket | None:
        if not self.peers:
            return None

        async def ask(peer: P) -> Bucket | None:
            try:
                return await peer.bucket(name)
            except (PeerUnavailable, PeerRefused) as exc:
                log.info("bucket lookup of %s at %s failed: %s", name, peer.region, exc.message)
                return None

        for found in await asyncio.gather(*(ask(p) for p in self.peers.values())):
            if found is not None:
                return found
        return None

    def all_buckets(self) -> list[Bucket]:
        """Every bucket the directory lists, with this region's own (listed or not)."""
        found = {b.name: b for b in self.directory.all()}
        for bucket in self.store.list_buckets():
            found.setdefault(bucket.name, bucket)
        return sorted(found.values(), key=lambda b: b.name)

    async def aclose(self) -> None:
        for peer in self.peers.values():
            await peer.aclose()
