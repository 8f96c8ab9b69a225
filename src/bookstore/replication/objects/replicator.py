"""Object replication (as S3 replication): PENDING versions are copied to their destination buckets' regions.

Each region runs one ObjectReplicator over its store. Woken by the store right after a write queued a
version (and every `poll_s` anyway), it lists the PENDING versions, works out each one's destination
buckets from the bucket's replication rules (every destination an enabled rule covering the version
names; delete markers only where the rule replicates them), finds the region that owns each
destination bucket (namespace.Cluster) and copies the version there through the link: a signed PUT
to the peer's internal endpoint (client.PeerS3.put_replica), which writes it with `put_replica` (same
version id, times, metadata, ETag; status REPLICA; idempotent, so a copy sent twice is harmless). The
source version becomes COMPLETED once every destination holds it. Replicas are written REPLICA and
never queued again, so nothing replicates twice or in a loop. Deleting a version by id queues nothing.

Retries, and what FAILED means:
- A destination that does not answer (link cut, region down or restarting, timeout, 5xx) is not the
  version's fault: the version stays PENDING and is retried, forever, with backoff per destination
  region (`base_backoff_s` doubling up to `max_backoff_s`). While a destination is failing only one
  copy at a time probes it; a heartbeat (every `heartbeat_s`) notices when it answers again and lets the
  queue flow at once. So replication resumes by itself after a heal or a restart.
- A refusal (the destination answers 4xx: no such bucket, versioning off, bad digest) or a version no
  rule or known bucket covers any more is retried `max_refusals` times with the same backoff (the
  directory or the destination may be catching up), then the version is marked FAILED with the
  reason. FAILED is final, as in S3: the worker never retries it; a new PUT of the object, or `aws s3
  sync`/copy, replicates the content again. The reason is in `bookstore status` and the metrics.

Not replicated: tag changes (PutObjectTagging) of sources and replicas alike, so a rule's
ReplicaModifications is stored but has nothing to carry; ExistingObjectReplication is stored, and
versions written before a rule stay where they are (`aws s3 sync` copies them), as in S3.
Small versions (up to 256 KiB, delete markers included) travel in batches: the copies waiting for the
same destination region go in one signed request (client.PeerS3.put_replicas, up to 256 of them and a
MiB of content), at most `batch_requests` of them in flight per region while the next one fills, and
the destination writes them in one commit with a result per version, so a refused one is retried alone
and a failed request leaves all of its versions PENDING. A burst of small objects then costs a request
and a commit per batch instead of per object; their COMPLETED statuses are written in batches too.
A version in a batch carries what it would alone: a multipart version's parts (sizes, checksums) and
an SSE-C version's sealed content and seal, so small SSE-C and multipart versions are batched as well.
A bigger version travels alone: up to a MiB it is read into memory (at most `max_inflight_bytes` of
them at once); beyond, it is streamed from the store's file as the link takes it (bodies.Stored: its
SHA-256 is read first, for the signature, then its pieces), so no copy holds a body whole, on either
side: the destination spools what arrives before its store takes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from bookstore.domain.errors import BookstoreError
from bookstore.objectstore.bodies import READ_BYTES, Stored
from bookstore.objectstore.configs import ReplicationConfiguration
from bookstore.objectstore.encryption import SSE_C
from bookstore.objectstore.errors import (
    NoSuchBucket,
    NoSuchKey,
    NoSuchVersion,
    ReplicationConfigurationNotFoundError,
)
from bookstore.objectstore.namespace import Cluster
from bookstore.objectstore.peer import PeerRefused, PeerUnavailable
from bookstore.objectstore.port import (
    Buckets,
    Objects,
    ObjectVersion,
    Part,
    Replica,
    ReplicationQueue,
    ReplicationStatus,
    Seal,
    StatusChange,
)
from bookstore.ports import Clock
from bookstore.replication.objects.client import PeerS3
from bookstore.replication.objects.metrics import ObjectReplicationMetrics
from bookstore.replication.tables.replicator import LagWindow

log = logging.getLogger("bookstore.replication.objects")


def _settle(waiting: Sequence[asyncio.Future[None]], errors: Sequence[BaseException | None]) -> None:
    """Each future still waiting done: with its error, or with None when it has none."""
    for done, error in zip(waiting, errors, strict=True):
        if done.done():
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)


class ReplicatedStore(Buckets, Objects, ReplicationQueue, Protocol):
    """What the replicator uses of its region's store: replication rules, versions' content, the queue,
    and the parts a multipart version was completed from (which travel with its copy)."""

    runs_inline: bool

    def completed_parts(self, bucket: str, key: str, *, version_id: str | None = None) -> list[Part]: ...


class _SealedStored(Stored):
    """An SSE-C version's sealed content in this region's store, streamed as Stored streams a clear one."""

    def __init__(self, store: ReplicatedStore, version: ObjectVersion, seal: Seal) -> None:
        super().__init__(store, version)
        self.sealed_store = store
        self.size = sum(seal.pieces)

    def chunks(self) -> Iterator[bytes]:
        v = self.version
        _, body = self.sealed_store.read_sealed(v.bucket, v.key, v.version_id)
        try:
            yield from body
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()


# Versions up to this size are read on the event loop (they are in SQLite rows); larger ones in a thread.
_INLINE_READ = 64 * 1024
# Versions up to this size travel from memory; larger ones stream from the store (a piece at a time).
_BUFFERED = 1024 * 1024
# Versions up to this size travel in batches; larger ones one per request.
_BATCHED = 256 * 1024
# A batch carries at most this many versions and this much content (the wire allows more: headroom for
# the versions' fields).
_BATCH_VERSIONS = 256
_BATCH_BYTES = 1024 * 1024
# Statuses written in one commit at most.
_STATUS_BATCH = 1000
_RECENT_FAILURES = 20


def destinations(config: ReplicationConfiguration, version: ObjectVersion) -> list[str]:
    """The destination bucket names of the enabled rules that replicate `version`, sorted."""
    names = set()
    for rule in config.rules:
        if not rule.enabled or not rule.matches(version.key, version.tags):
            continue
        if version.is_delete_marker and not rule.replicates_delete_markers:
            continue
        names.add(rule.destination_bucket_name)
    return sorted(names)


def _small(version: ObjectVersion) -> bool:
    """True when the version's copies travel in batches."""
    return version.is_delete_marker or version.size <= _BATCHED


def _held(version: ObjectVersion) -> int:
    """The memory a copy of `version` holds: its content when buffered, else about two pieces."""
    return version.size if version.size <= _BUFFERED else 2 * READ_BYTES


class _Refused(Exception):
    """A copy that cannot succeed as things stand (the reason says why); retried a few times, then FAILED."""

    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


@dataclass
class _Job:
    """A PENDING version being replicated: the destination buckets still to write, and retry state."""

    version: ObjectVersion
    remaining: list[str] | None = None
    # Destination bucket -> owning region, as resolved.
    regions: dict[str, str] = field(default_factory=dict)
    refusals: int = 0
    not_before: float = 0.0
    reason: str = ""


@dataclass
class _Outbox:
    """Small copies waiting to go to one destination region in the next batch, and the batches in flight."""

    waiting: list[tuple[Replica, asyncio.Future[None]]] = field(default_factory=list)
    size: int = 0
    sending: int = 0
    scheduled: bool = False


@dataclass
class _Route:
    """One destination region: its health as copies and heartbeats see it, and its figures."""

    failures: int = 0
    retry_at: float = 0.0
    probing: bool = False
    reachable: bool | None = None
    last_error: str = ""
    last_contact: float = 0.0
    # The error that last counted as a failed attempt (the copies of one batch share theirs).
    last_cause: BaseException | None = None
    completed: int = 0
    failed: int = 0
    bytes: int = 0


class ObjectReplicator:
    """Replicates one region's PENDING versions to their destinations; see the module docstring."""

    def __init__(
        self,
        cluster: Cluster[PeerS3],
        store: ReplicatedStore,
        clock: Clock,
        *,
        concurrency: int = 32,
        batched: int = 1024,
        batch_requests: int = 4,
        max_inflight_bytes: int = 64 * 1024 * 1024,
        poll_s: float = 1.0,
        relist_s: float = 0.05,
        base_backoff_s: float = 0.05,
        max_backoff_s: float = 5.0,
        max_refusals: int = 8,
        heartbeat_s: float = 1.0,
        idle_ping_s: float = 20.0,
        warm_connections: int = 2,
        watch: Iterable[str] | None = None,
    ) -> None:
        self.cluster = cluster
        self.store = store
        self.region = cluster.region
        self.clock = clock
        # Versions copied one per request (big ones), in flight at once.
        self.concurrency = concurrency
        # Small versions in flight at once: enough to fill `batch_requests` batches per destination region
        # while the next ones gather.
        self.batched = batched
        self.batch_requests = batch_requests
        self._small_active = 0
        # True when the last pass over the known jobs left some that were due for want of a free slot;
        # and how long until the next of those waiting out a backoff is due.
        self._held_back = False
        self._next_due_s = 0.0
        self._outboxes: dict[str, _Outbox] = {}
        self._statuses: list[tuple[StatusChange, asyncio.Future[None]]] = []
        self._writing_statuses = False
        # Small copies hold their content in memory, streamed ones a piece or two: past this many bytes
        # in flight, the next ones wait their turn.
        self.max_inflight_bytes = max_inflight_bytes
        self._inflight_bytes = 0
        self.poll_s = poll_s
        # While copies run, the queue is listed again at most this often (new versions wait that long
        # for a free slot at most); an idle replicator lists it at once when a version is queued.
        self.relist_s = relist_s
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_refusals = max_refusals
        self.heartbeat_s = heartbeat_s
        # A quiet peer is pinged this often (well within the connections' keep-alive); a failing one at
        # every heartbeat. Rarely, so that a ping seldom holds a connection a copy could have used.
        self.idle_ping_s = idle_ping_s
        # Connections the heartbeat keeps open to each peer: a copy that starts while another is still
        # waiting for its answer then finds one ready instead of paying a round trip to open one.
        self.warm_connections = warm_connections
        # The peers the heartbeat pings (the regions expected to run); None: every peer.
        self.watch = set(cluster.peers) if watch is None else set(watch) & set(cluster.peers)
        self.metrics = ObjectReplicationMetrics(self.region)
        self.lags = LagWindow()
        self.pending_operations = 0
        self.pending_bytes = 0
        # False when the last listing hit its limit: the figures above are then lower bounds.
        self.pending_exact = True
        self.recent_failures: deque[dict[str, Any]] = deque(maxlen=_RECENT_FAILURES)
        self._jobs: dict[tuple[str, str, str], _Job] = {}
        self._active: set[tuple[str, str, str]] = set()
        # Versions finished (COMPLETED, FAILED or gone) while the queue was being listed: a listing read
        # before their status changed still shows them PENDING.
        self._finished: set[tuple[str, str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._routes: dict[str, _Route] = {}
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # When the queue was last listed, and how many listed jobs were waiting out a backoff then.
        self._listed_at = float("-inf")
        self._waiting = 0
        add_listener = getattr(self.store, "add_listener", None)
        if add_listener is not None:
            add_listener(self.wake)

    # Waking and running.

    def wake(self) -> None:
        """Look at the queue now; safe to call from any thread (the store calls it after a commit)."""
        loop, event = self._loop, self._event
        if loop is None or event is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:
            # The loop closed between the check and the call: the process is stopping.
            return

    async def run(self, stop: asyncio.Event) -> None:
        """Replicate until `stop` is set; copies in flight then end with the loop."""
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        stopping = asyncio.create_task(stop.wait())
        heartbeats = [asyncio.create_task(self._heartbeat(region, stop)) for region in sorted(self.watch)]
        try:
            while not stop.is_set():
                self._event.clear()
                try:
                    delay = await self._tick()
                except BookstoreError as exc:
                    log.warning("object replication: cannot read the queue: %s", exc.message)
                    delay = self.poll_s
                woken = asyncio.create_task(self._event.wait())
                await asyncio.wait({woken, stopping}, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
                woken.cancel()
        finally:
            stopping.cancel()
            for task in [*heartbeats, *self._tasks]:
                task.cancel()
            await asyncio.gather(*heartbeats, *self._tasks, return_exceptions=True)
            await self.cluster.aclose()

    async def _tick(self) -> float:
        """Start the copies that are due; returns how long to wait before the next look at most."""
        now = time.monotonic()
        # Listing again finds nothing that could start while the known jobs lack free slots, nor while the
        # last listing did not reach the end of the queue (versions queued since are behind its own).
        if self._start_known(now) and (
            now < self._listed_at + self.relist_s or not self.pending_exact or self._held_back
        ):
            # Copies finishing in a burst free their slots one by one: refilled from the jobs listed
            # last time, instead of listing hundreds of queued versions again for each copy.
            if now < self._listed_at + self.relist_s:
                return max(0.005, self._listed_at + self.relist_s - now)
            # Until a copy finishes (it wakes the loop) or a job waiting out a backoff is due.
            return self._next_due_s
        # The listing reaches past the versions waiting out a backoff, so a failing destination at the
        # head of the queue does not hide the versions behind it.
        limit = min(20_000, max(256, self._waiting + len(self._active) + self.batched + 4 * self.concurrency))
        self._finished.clear()
        pending = await asyncio.to_thread(self.store.pending_replications, limit=limit)
        self._listed_at = now = time.monotonic()
        self.pending_operations = len(pending)
        self.pending_bytes = sum(v.size for v in pending)
        self.pending_exact = len(pending) < limit
        self.metrics.pending.set(self.pending_operations)
        self.metrics.pending_bytes.set(self.pending_bytes)
        listed = {(v.bucket, v.key, v.version_id): v for v in pending}
        if self.pending_exact:
            for gone in [k for k in self._jobs if k not in listed and k not in self._active]:
                del self._jobs[gone]
        for ident, version in listed.items():
            if ident not in self._jobs and ident not in self._active and ident not in self._finished:
                self._jobs[ident] = _Job(version)
        return self._start_due([i for i in listed if i in self._jobs], now)

    def _start_known(self, now: float) -> bool:
        """Start due jobs from the last listing; False when there is a free slot and none to fill it."""
        if self._full(small=True) and self._full(small=False):
            self._held_back, self._next_due_s = True, self.poll_s
            return True
        started = len(self._active)
        self._next_due_s = self._start_due(list(self._jobs), now)
        # Known jobs held back only for want of a slot (small ones while big slots are free, or past the
        # bytes in flight): a new listing would find nothing that could start either.
        return len(self._active) > started or self._held_back

    def _start_due(self, idents: list[tuple[str, str, str]], now: float) -> float:
        """Start the jobs of `idents` (in queue order) that are due, up to the concurrency and bytes in
        flight; returns how long until the next of the others is due (at most poll_s)."""
        next_due = now + self.poll_s
        waiting = 0
        self._held_back = False
        for ident in idents:
            if ident in self._active or ident in self._finished:
                continue
            job = self._jobs[ident]
            due = max(job.not_before, self._blocked_until(job, now))
            if due > now:
                waiting += 1
                next_due = min(next_due, due)
                continue
            small = _small(job.version)
            if self._full(small):
                self._held_back = True
                if self._full(not small):
                    break
                continue
            held = _held(job.version)
            if self._inflight_bytes and self._inflight_bytes + held > self.max_inflight_bytes:
                self._held_back = True
                continue
            self._active.add(ident)
            self._small_active += small
            self._inflight_bytes += held
            task = asyncio.create_task(self._replicate(ident, job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._waiting = waiting
        return max(0.005, next_due - now)

    def _full(self, small: bool) -> bool:
        """No slot left for another small (batched) version, or for another big one."""
        if small:
            return self._small_active >= self.batched
        return len(self._active) - self._small_active >= self.concurrency

    def _blocked_until(self, job: _Job, now: float) -> float:
        """When the job's destinations let it try again: all of them failing and not yet due (or probed)."""
        if job.remaining is None or not job.remaining:
            return 0.0
        waits = []
        for bucket in job.remaining:
            region = job.regions.get(bucket)
            route = self._routes.get(region) if region is not None else None
            if route is None or route.failures == 0:
                return 0.0
            if route.probing:
                waits.append(now + self.base_backoff_s)
            else:
                waits.append(route.retry_at)
        return min(waits)

    # One version.

    async def _replicate(self, ident: tuple[str, str, str], job: _Job) -> None:
        version = job.version
        try:
            if job.remaining is None:
                job.remaining = await self._plan(version)
            for bucket in job.remaining:
                if bucket not in job.regions:
                    owner = await self.cluster.owner(bucket)
                    if owner is None:
                        raise _Refused(
                            f"destination bucket {bucket!r} does not exist in any region", "no-bucket"
                        )
                    job.regions[bucket] = owner.region
            now = time.monotonic()
            targets = []
            for bucket in job.remaining:
                route = self._route(job.regions[bucket])
                if not route.failures or not (route.probing or route.retry_at > now):
                    targets.append((bucket, job.regions[bucket]))
            if targets:
                probes = [self._route(r) for _, r in targets if self._route(r).failures]
                # A failing destination gets one copy at a time (the probe) until it answers again.
                for route in probes:
                    route.probing = True
                try:
                    body, seal = await self._read(version)
                    parts = await self._parts(version)
                except BaseException:
                    for route in probes:
                        route.probing = False
                    raise
                if len(targets) == 1:
                    # Most versions have one destination: no task of its own for the copy.
                    await self._copy(job, *targets[0], body, parts, seal)
                else:
                    outcomes = await asyncio.gather(
                        *(self._copy(job, bucket, region, body, parts, seal) for bucket, region in targets),
                        return_exceptions=True,
                    )
                    for outcome in outcomes:
                        if isinstance(outcome, BaseException):
                            raise outcome
            if not job.remaining:
                await self._finish(version, "COMPLETED", "")
                self._forget(ident)
        except _Refused as exc:
            await self._refused(ident, job, exc)
        except (NoSuchVersion, NoSuchKey, NoSuchBucket):
            # Deleted (by version id, or with its bucket) while it waited: there is nothing left to copy.
            self._forget(ident)
        except BookstoreError as exc:
            log.warning("object replication of %s/%s failed: %s", version.bucket, version.key, exc.message)
            job.not_before = time.monotonic() + self.max_backoff_s
        except Exception:
            log.exception("object replication of %s/%s failed", version.bucket, version.key)
            job.not_before = time.monotonic() + self.max_backoff_s
        finally:
            self._active.discard(ident)
            self._small_active -= _small(version)
            self._inflight_bytes -= _held(version)
            if self._event is not None:
                self._event.set()

    async def _plan(self, version: ObjectVersion) -> list[str]:
        try:
            config = self.store.get_replication(version.bucket)
        except ReplicationConfigurationNotFoundError:
            raise _Refused(
                f"bucket {version.bucket!r} has no replication configuration any more", "no-rule"
            ) from None
        names = destinations(config, version)
        if not names:
            raise _Refused("no enabled replication rule covers this version any more", "no-rule")
        return names

    async def _read(self, version: ObjectVersion) -> tuple[bytes | Stored, Seal | None]:
        """The version's content: in memory up to _BUFFERED bytes, else to be streamed from the store.

        An SSE-C version's is its sealed content and seal (S3 replicates SSE-C objects): the key is not
        here, and the replica is read with it as this one is.
        """
        if version.is_delete_marker:
            return b"", None
        if version.encryption == SSE_C:
            return await self._read_sealed(version)
        if version.size > _BUFFERED:
            return Stored(self.store, version), None

        def read() -> bytes:
            return self.store.get_object(version.bucket, version.key, version_id=version.version_id).read()

        if version.size <= _INLINE_READ and self.store.runs_inline:
            return read(), None
        return await asyncio.to_thread(read), None

    async def _read_sealed(self, version: ObjectVersion) -> tuple[bytes | Stored, Seal]:
        def read() -> tuple[Seal, bytes | None]:
            seal, body = self.store.read_sealed(version.bucket, version.key, version.version_id)
            if sum(seal.pieces) > _BUFFERED:
                close = getattr(body, "close", None)
                if close is not None:
                    close()
                return seal, None
            return seal, b"".join(body)

        seal, data = await asyncio.to_thread(read)
        if data is None:
            return _SealedStored(self.store, version, seal), seal
        return data, seal

    async def _parts(self, version: ObjectVersion) -> list[Part]:
        """The parts a multipart version was completed from (sizes, checksums), [] when not known: they
        travel with the copy, so that the replica answers partNumber reads as this region does."""
        if version.is_delete_marker or version.parts_count is None:
            return []

        def parts() -> list[Part]:
            return self.store.completed_parts(version.bucket, version.key, version_id=version.version_id)

        if self.store.runs_inline:
            return parts()
        return await asyncio.to_thread(parts)

    async def _copy(
        self, job: _Job, bucket: str, region: str, body: bytes | Stored, parts: list[Part], seal: Seal | None
    ) -> None:
        """Write the version into `bucket` in `region`; transient failures leave it for a later try."""
        route = self._route(region)
        replica = replace(job.version, bucket=bucket, replication_status=None, replication_reason="")
        size = len(body) if isinstance(body, bytes) else body.size
        try:
            if isinstance(body, bytes) and _small(replica):
                # Parts and seal travel in the batch as they do alone (wire.replica_fields), so a small
                # multipart version (one part, or parts under a lowered minimum) and a small SSE-C one
                # (its sealed pieces, whose sizes its seal gives) go in batches like any other: keeping
                # them apart would need a rule of their own here for no gain, and a batch is written by
                # put_replicas exactly as put_replica writes each.
                await self._batched_copy(region, Replica(replica, body, tuple(parts), seal))
            elif region == self.region:
                content = body if isinstance(body, bytes) else body.chunks()
                await asyncio.to_thread(self.store.put_replica, replica, content, parts, seal)
            else:
                peer = self.cluster.peers.get(region)
                if peer is None:
                    raise _Refused(f"no link from {self.region} to {region}", "no-link")
                await peer.put_replica(replica, body, parts, seal)
        except PeerUnavailable as exc:
            self._attempt_failed(route, region, "unreachable", exc.message, exc)
            job.reason = exc.message
            return
        except PeerRefused as exc:
            route.probing = False
            route.last_contact = time.monotonic()
            if exc.status >= 500 or exc.status in (408, 429):
                self._attempt_failed(
                    route, region, f"error:{exc.code}", f"{region}: {exc.code}: {exc.message}", exc
                )
                return
            raise _Refused(
                f"{region} refused the copy: {exc.code}: {exc.message}", f"refused:{exc.code}"
            ) from exc
        except BookstoreError as exc:
            if region != self.region:
                raise
            code = getattr(exc, "code", "InternalError")
            raise _Refused(f"{region} refused the copy: {code}: {exc.message}", f"refused:{code}") from exc
        finally:
            route.probing = False
        was_failing = route.failures > 0
        route.failures, route.retry_at, route.reachable = 0, 0.0, True
        route.last_contact = time.monotonic()
        route.completed += 1
        route.bytes += size
        assert job.remaining is not None
        job.remaining.remove(bucket)
        lag_ms = max(0, self.clock.now_ms() - job.version.last_modified_ms)
        self.lags.add(region, self.clock.now_ms(), lag_ms)
        self.metrics.latency.labels(self.region, region).observe(lag_ms / 1000)
        self.metrics.completed.labels(region).inc()
        self.metrics.bytes.labels(region).inc(size)
        if was_failing:
            log.info("object replication to %s resumed", region)

    async def _batched_copy(self, region: str, replica: Replica) -> None:
        """Write a small version into its destination with the next batch to `region`; raises what
        refused it (as put_replica would), or what failed the whole batch."""
        if region != self.region and region not in self.cluster.peers:
            raise _Refused(f"no link from {self.region} to {region}", "no-link")
        box = self._outboxes.get(region)
        if box is None:
            box = self._outboxes[region] = _Outbox()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        box.waiting.append((replica, done))
        box.size += len(replica.body)
        if len(box.waiting) >= _BATCH_VERSIONS or box.size >= _BATCH_BYTES:
            self._flush(region)
        elif not box.scheduled:
            # Sent once the copies started with this one have joined it (they run before this callback).
            box.scheduled = True
            asyncio.get_running_loop().call_soon(self._flush, region)
        await done

    def _flush(self, region: str) -> None:
        """Send the copies waiting for `region` in batches, as far as `batch_requests` allows; the rest
        wait for a batch in flight to end, gathering into the next."""
        box = self._outboxes[region]
        box.scheduled = False
        while box.waiting and box.sending < self.batch_requests:
            batch: list[tuple[Replica, asyncio.Future[None]]] = []
            size = 0
            while box.waiting and len(batch) < _BATCH_VERSIONS:
                body = box.waiting[0][0].body
                if batch and size + len(body) > _BATCH_BYTES:
                    break
                batch.append(box.waiting.pop(0))
                size += len(body)
            box.size -= size
            box.sending += 1
            task = asyncio.create_task(self._send_batch(region, box, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send_batch(
        self, region: str, box: _Outbox, batch: list[tuple[Replica, asyncio.Future[None]]]
    ) -> None:
        replicas = [replica for replica, _ in batch]
        try:
            results: list[Exception | None]
            if region == self.region:
                outcomes = await asyncio.to_thread(self.store.put_replicas, replicas)
                results = [o.error for o in outcomes]
            else:
                results = list(await self.cluster.peers[region].put_replicas(replicas))
        except BaseException as exc:
            _settle([done for _, done in batch], [exc] * len(batch))
            if not isinstance(exc, Exception):
                raise
        else:
            _settle([done for _, done in batch], results)
        finally:
            box.sending -= 1
            if box.waiting and not box.scheduled:
                self._flush(region)

    def _attempt_failed(
        self, route: _Route, region: str, kind: str, reason: str, cause: BaseException
    ) -> None:
        self.metrics.attempt_failures.labels(region, kind).inc()
        if cause is route.last_cause:
            # One failed batch fails each of its copies with the same error: one attempt for the backoff,
            # or a batch of 256 would send the next try to the longest backoff at once.
            return
        route.last_cause = cause
        route.failures += 1
        route.probing = False
        route.reachable = False
        route.last_error = reason
        route.retry_at = time.monotonic() + self._backoff(route.failures)
        if route.failures == 1:
            log.warning("object replication to %s: %s; retrying with backoff", region, reason)

    async def _refused(self, ident: tuple[str, str, str], job: _Job, exc: _Refused) -> None:
        job.refusals += 1
        job.reason = exc.reason
        destination = ",".join(sorted(set(job.regions.values()))) or "-"
        self.metrics.attempt_failures.labels(destination, exc.kind).inc()
        if job.refusals < self.max_refusals:
            job.not_before = time.monotonic() + self._backoff(job.refusals)
            # The rules or the directory may have changed by the next try.
            job.remaining, job.regions = None, {}
            return
        version = job.version
        log.warning(
            "object replication of %s/%s %s FAILED: %s",
            version.bucket,
            version.key,
            version.version_id,
            exc.reason,
        )
        await self._finish(version, "FAILED", exc.reason)
        self._forget(ident)
        self.metrics.failed.labels(destination, exc.kind).inc()
        for region in set(job.regions.values()):
            self._route(region).failed += 1
        self.recent_failures.append(
            {
                "bucket": version.bucket,
                "key": version.key,
                "versionId": version.version_id,
                "destination": destination,
                "reason": exc.reason,
                "atMs": self.clock.now_ms(),
            }
        )

    async def _finish(self, version: ObjectVersion, status: ReplicationStatus, reason: str) -> None:
        """Set the version's status, with the others finishing about now (one commit for them all)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        change = StatusChange(version.bucket, version.key, version.version_id, status, reason)
        self._statuses.append((change, done))
        if not self._writing_statuses:
            self._writing_statuses = True
            task = asyncio.create_task(self._write_statuses())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            await done
        except (NoSuchVersion, NoSuchBucket):
            return

    async def _write_statuses(self) -> None:
        """Write the statuses waiting, a commit at a time, until none is left."""
        try:
            while self._statuses:
                batch, self._statuses = self._statuses[:_STATUS_BATCH], self._statuses[_STATUS_BATCH:]
                changes = [change for change, _ in batch]
                try:
                    outcomes = await asyncio.to_thread(self.store.set_replication_statuses, changes)
                except BaseException as exc:
                    _settle([done for _, done in batch], [exc] * len(batch))
                    if not isinstance(exc, Exception):
                        raise
                    continue
                _settle([done for _, done in batch], [o.error for o in outcomes])
        finally:
            self._writing_statuses = False

    def _forget(self, ident: tuple[str, str, str]) -> None:
        self._jobs.pop(ident, None)
        self._finished.add(ident)

    def _backoff(self, failures: int) -> float:
        return float(min(self.max_backoff_s, self.base_backoff_s * 2 ** min(failures - 1, 30)))

    def _route(self, region: str) -> _Route:
        route = self._routes.get(region)
        if route is None:
            route = self._routes[region] = _Route()
        return route

    async def _heartbeat(self, region: str, stop: asyncio.Event) -> None:
        """Ping a peer that has been quiet, to know it answers and to keep connections through the link."""
        peer = self.cluster.peers[region]
        route = self._route(region)
        while not stop.is_set():
            await asyncio.sleep(self.heartbeat_s)
            if time.monotonic() - route.last_contact < self.idle_ping_s and not route.failures:
                continue
            pings = [peer.ping(timeout_s=2.0) for _ in range(max(1, self.warm_connections))]
            failed = [
                r
                for r in await asyncio.gather(*pings, return_exceptions=True)
                if isinstance(r, BaseException)
            ]
            if failed:
                route.reachable = False
                if not route.failures:
                    route.last_error = str(getattr(failed[0], "message", failed[0]))
                continue
            route.reachable = True
            route.last_contact = time.monotonic()
            if route.failures and not route.probing:
                # It answers again: let the next copy go now instead of at the end of its backoff.
                route.retry_at = 0.0
                self.wake()

    # Reporting.

    def status(self) -> dict[str, Any]:
        """Pending operations and bytes, per-destination figures and latency, recent failures."""
        lags = self.lags.summary(self.clock.now_ms())
        regions: Iterable[str] = sorted(self.watch | set(self._routes))
        return {
            "region": self.region,
            "pending": {
                "operations": self.pending_operations,
                "bytes": self.pending_bytes,
                "exact": self.pending_exact,
            },
            "inFlight": len(self._active),
            "destinations": {
                region: {
                    "reachable": self._route(region).reachable,
                    "retrying": self._route(region).failures > 0,
                    "lastError": self._route(region).last_error or None,
                    "completed": self._route(region).completed,
                    "failed": self._route(region).failed,
                    "bytes": self._route(region).bytes,
                    "latency": lags.get(region),
                }
                for region in regions
            },
            "recentFailures": list(self.recent_failures),
        }
