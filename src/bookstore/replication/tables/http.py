"""Replication over HTTP: the endpoints a region serves to its peers, and the client that follows a peer."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection, Mapping, Sequence
from typing import Any

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from pydantic import ValidationError as PydanticError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Send

from bookstore.domain import errors
from bookstore.kernel.auth import CLOCK_HEADER, PEER_SEND
from bookstore.kernel.clock import SystemClock
from bookstore.kernel.http import MAX_BODY_BYTES, CountedRoute, error_for, error_response, json_response
from bookstore.kernel.stream import (
    HEARTBEAT_S,
    NDJSON,
    ChangeFeed,
    follower_timeout,
    object_lines,
)
from bookstore.ports import Clock, Key, TableSchema
from bookstore.replication.tables.batches import EncodedBatch, SharedReads, encoded
from bookstore.replication.tables.model import (
    ClockRefusal,
    LogEntry,
    LogRead,
    LogTrimmed,
    SnapshotPage,
    Version,
    ahead_ms,
)
from bookstore.replication.tables.pacing import Ticks
from bookstore.replication.tables.ports import LogSource, ReplicaStore
from bookstore.replication.tables.replicator import MAX_CLOCK_OFFSET_MS
from bookstore.replication.tables.wire import (
    MAX_KEYS,
    entry_json,
    parse_batch,
    parse_entries,
    parse_versions,
    push_bodies,
)

# Entries per streamed read and per snapshot page: a region catching up applies each in one transaction,
# and below about 2,000 the cost of a batch (a read, a line, a commit, a checkpoint) shows per entry.
BATCH = 2000
# Commits of this process wake a stream at once; other processes' (the CLI's) are seen within a poll,
# which only reads the log's head: cheap enough to do often, so such writes wait little.
POLL_S = 0.002
# A stream ends after this long and the follower opens the next one, which costs it a round trip
# (changes written meanwhile wait for it); followers acknowledge their progress (for trimming) on a
# request of its own every ACK_EVERY_MS, so streams may last long and the round trip stays rare.
STREAM_S = 3600.0
# A stream tells its follower within this long how far it read past rows the follower does not ask
# for: a line per such commit cost every region a line to every other for every write. As often as the
# follower stores its checkpoint and samples it for rewinds (replicator.CHECKPOINT_EVERY_MS and
# MARK_EVERY_S): news every 100 ms was mostly dropped there, yet cost each of N regions 10 lines a
# second from each of the N - 1 others, all receivers of the writes of one region.
PROGRESS_S = 1.0
# A batch of at most this many rows is read, encoded and checked on the event loop: a hop to a thread
# and back (the GIL handed over twice) costs more CPU than that work does, and at a steady few hundred
# writes/s most batches hold one or two rows. Larger batches (a backlog) go to a thread, as the API
# must not wait for them.
INLINE_ROWS = 64
# A stream caught up sends its follower a line of entries at most once a tick of this period while
# changes keep coming: a line per write (at 500 writes/s most hold one) cost every follower a transaction
# per write, which at 5 regions saturated the core the followers share. Slower writes (a gap above this)
# go out at once, so the wait costs nothing at low rates, and at most this long at high ones; a follower
# behind is sent its batches without it. Every stream waits for the same ticks (pacing.Ticks).
LINE_GAP_S = 0.004


class _FollowRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    peer: StrictStr = Field(max_length=64)
    after: StrictInt = Field(ge=0)
    limit: StrictInt = Field(default=BATCH, ge=1, le=5000)
    streamMs: StrictInt = Field(default=int(STREAM_S * 1000), ge=0, le=3_600_000)
    # The origins whose changes the follower wants from this region: its own, and those of regions the
    # follower cannot reach itself (relayed). Absent: every change but the follower's own.
    origins: list[StrictStr] | None = Field(default=None, max_length=64)


class _AckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    peer: StrictStr = Field(max_length=64)
    seq: StrictInt = Field(ge=0)


class _SnapshotRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    after: StrictStr | None = Field(default=None, max_length=4096)
    limit: StrictInt = Field(default=BATCH, ge=1, le=5000)


class _DigestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    table: StrictStr = Field(max_length=64)
    buckets: StrictInt = Field(default=64, ge=1, le=4096)
    bucket: StrictInt | None = Field(default=None, ge=0)
    # With a bucket: its keys and versions instead of its entries (what a repair compares first).
    versions: StrictBool = False
    # Instead of a bucket: the entries of these keys (those of a bucket that differ).
    keys: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_KEYS)
    # Only versions below this HLC count in a digest (anti-entropy leaves out what may be in flight).
    before: StrictInt | None = Field(default=None, ge=0, lt=1 << 63)


def replication_routes(
    store: ReplicaStore,
    feed: ChangeFeed,
    schemas: Mapping[str, TableSchema],
    regions: Collection[str],
    extra_status: Callable[[], dict[str, Any]] | None = None,
    *,
    clock: Clock | None = None,
    max_clock_offset_ms: int = MAX_CLOCK_OFFSET_MS,
    holds: Callable[[str], bool] | None = None,
) -> list[Route]:
    """Routes under /replication/ (the caller puts PeerAuthMiddleware in front of them).

    `clock` is the region's: every line of a follow stream carries its time, and a pushed change more
    than `max_clock_offset_ms` ahead of it is not applied (anti-entropy pushes it again later). `holds`
    says which regions this one does not follow now (their clocks too far ahead): their pushes are held
    back whole, so "not followed" means nothing of theirs is applied by any path.
    """
    tables = tuple(schemas)
    # Other processes' commits (the CLI's, a bench's writer) are seen by the feed's poll of the head.
    feed.watch(store.head_seq, POLL_S)
    wall: Clock = clock if clock is not None else SystemClock()
    # One read and one encoding of each batch for all the streams at one position (caught up, usually).
    reads = SharedReads(store, tables, inline_rows=INLINE_ROWS)
    ticks = Ticks(LINE_GAP_S)

    async def parsed(request: Request, model: type[BaseModel]) -> Any:
        try:
            return model.model_validate(orjson.loads(await request.body()))
        except (orjson.JSONDecodeError, PydanticError) as exc:
            raise errors.ValidationError(f"malformed request: {str(exc)[:300]}") from None

    def as_itself(request: Request, peer: str, what: str) -> None:
        """The request names a known region as its sender, the one that signed it."""
        if peer not in regions:
            raise errors.ValidationError(f"unknown peer region {peer!r}")
        if peer != _signer(request):
            raise errors.Forbidden(f"a region may only {what} as itself")

    async def follow(request: Request) -> Response:
        body: _FollowRequest = await parsed(request, _FollowRequest)
        as_itself(request, body.peer, "follow the log")
        try:
            # Read alone, not shared: a stream's first read checks its position is still in the log.
            first = await asyncio.to_thread(_read, store, body, tables)
        except LogTrimmed as exc:
            return error_response(410, "LogTrimmed", str(exc))
        store.record_ack(body.peer, body.after)
        return _Lines(_stream(reads, ticks, feed, body, first, wall), request.scope["state"].get(PEER_SEND))

    async def ack(request: Request) -> Response:
        body: _AckRequest = await parsed(request, _AckRequest)
        as_itself(request, body.peer, "acknowledge")
        if body.seq > await asyncio.to_thread(store.head_seq):
            # An acknowledgement beyond the head would let this region trim what nobody has read.
            return error_response(400, "ValidationError", f"seq {body.seq} is beyond this log's head")
        await asyncio.to_thread(store.record_ack, body.peer, body.seq)
        return json_response({"peer": body.peer, "seq": body.seq})

    async def snapshot(request: Request) -> Response:
        body: _SnapshotRequest = await parsed(request, _SnapshotRequest)

        def page() -> dict[str, Any]:
            read = store.snapshot(body.after, body.limit, tables)
            return {
                "entries": [entry_json(e) for e in read.entries],
                "cursor": read.cursor,
                "headSeq": read.head_seq,
                "checkpoints": read.checkpoints,
            }

        return json_response(await asyncio.to_thread(page))

    async def digest(request: Request) -> Response:
        body: _DigestRequest = await parsed(request, _DigestRequest)
        if body.table not in schemas:
            return error_response(400, "ValidationError", f"table {body.table!r} is not replicated")
        if body.keys is not None:
            entries = await asyncio.to_thread(store.entries_of, body.table, body.keys)
            return json_response({"entries": [entry_json(e) for e in entries]})
        if body.bucket is None:
            digest = await asyncio.to_thread(store.digest, body.table, body.buckets, body.before)
            return json_response({"digest": digest})
        if body.bucket >= body.buckets:
            return error_response(400, "ValidationError", "bucket must be below buckets")
        if body.versions:
            versions = await asyncio.to_thread(store.bucket_versions, body.table, body.bucket, body.buckets)
            return json_response({"versions": [[key, hlc, region] for key, (hlc, region) in versions]})
        entries = await asyncio.to_thread(store.bucket_entries, body.table, body.bucket, body.buckets)
        return json_response({"entries": [entry_json(e) for e in entries]})

    async def push(request: Request) -> Response:
        try:
            raw = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return error_response(400, "ValidationError", "the batch is not valid JSON; nothing was applied")
        source, entries = parse_batch(raw, schemas, regions)
        if source != _signer(request):
            raise errors.Forbidden("a region may only push its own batches")
        now = wall.now_ms()
        held = holds is not None and holds(source)
        kept = [] if held else [e for e in entries if ahead_ms(e, now) <= max_clock_offset_ms]
        result = await asyncio.to_thread(store.apply, source, kept, None)
        return json_response(
            {
                "applied": result.applied,
                "skipped": result.skipped,
                "conflicts": len(result.conflicts),
                "heldBack": len(entries) - len(kept),
            }
        )

    async def status(_: Request) -> Response:
        return json_response(extra_status() if extra_status else {"checkpoints": store.checkpoints()})

    async def domain_error(request: Request, handler: Callable[[Request], Any]) -> Response:
        try:
            response: Response = await handler(request)
            return response
        except errors.BookstoreError as exc:
            # Every domain error answers its own status (a NotFound 404, an Unavailable 503...).
            return error_for(exc)

    def guarded(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            return await domain_error(request, handler)

        return endpoint

    return [
        CountedRoute("/replication/follow", guarded(follow), methods=["POST"]),
        CountedRoute("/replication/ack", guarded(ack), methods=["POST"]),
        CountedRoute("/replication/snapshot", guarded(snapshot), methods=["POST"]),
        CountedRoute("/replication/digest", guarded(digest), methods=["POST"]),
        CountedRoute("/replication/push", guarded(push), methods=["POST"]),
        CountedRoute("/replication/status", guarded(status), methods=["GET"]),
    ]


async def _stream(
    reads: SharedReads,
    ticks: Ticks,
    feed: ChangeFeed,
    body: _FollowRequest,
    first: EncodedBatch,
    clock: Clock,
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + body.streamMs / 1000
    yield first.line(clock.now_ms())  # at once, even when empty: the follower knows it is connected
    after = sent = first.last_seq
    last_sent = loop.time()
    paced_until = 0.0
    while loop.time() < deadline and not feed.closed:
        if paced_until > loop.time():
            await ticks.wait(paced_until)
        wake = feed.current()
        batch = await reads.after(after, peer=body.peer, origins=body.origins, limit=body.limit, wake=wake)
        scanned, after = batch.last_seq != after, batch.last_seq
        # Rows the follower does not ask for (relayed copies of its own changes, the changes of regions
        # it follows itself) move its position only: say so within PROGRESS_S, not with a line per
        # commit, which every region would send every other for every write (N - 1 lines a write to
        # each of N - 1 followers). A heartbeat says it when nothing else moved.
        due = HEARTBEAT_S if after == sent else PROGRESS_S
        if batch.count or loop.time() - last_sent >= due:
            yield batch.line(clock.now_ms())
            sent, last_sent = after, loop.time()
            if batch.count and after >= batch.head_seq:
                paced_until = ticks.after(last_sent)
        if not scanned or batch.caught_up(wake):
            # Nothing new, or the read reached the head and nothing was committed since (a second read
            # per wake-up would find nothing, and every stream had made it for every write): wait for a
            # commit here, or another process's (the feed polls the head), or the time of a heartbeat
            # (or of the position's news), which tells the follower this region lives.
            due = HEARTBEAT_S if after == sent else PROGRESS_S
            await feed.wait(wake, due - (loop.time() - last_sent))


class _Lines(StreamingResponse):
    """A follow stream's answer: its start and end through the app's `send`, its lines through `direct`.

    `direct` is PeerAuthMiddleware's send (which keeps the cut and slow switches): the layers between it
    and the route (error handlers, the API's framing) wrap send only to see the answer's start, and
    each line crossed four of them, for every follower, for every write.
    """

    def __init__(self, lines: AsyncIterator[bytes], direct: Send | None) -> None:
        super().__init__(lines, media_type=NDJSON, headers={"Cache-Control": "no-store"})
        self.direct = direct

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        direct = self.direct or send
        async for line in self.body_iterator:
            await direct({"type": "http.response.body", "body": line, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _read(store: LogSource, body: _FollowRequest, tables: tuple[str, ...]) -> EncodedBatch:
    # The follower re-derives old images from its own state: they need not cross the link.
    read = store.read_log(
        body.after,
        limit=body.limit,
        tables=tables,
        exclude_origin=body.peer,
        origins=body.origins,
        old_images=False,
    )
    return encoded(read)


def _signer(request: Request) -> str | None:
    """The region whose signature PeerAuthMiddleware verified."""
    return getattr(request.state, "peer_region", None)


class HttpPeer:
    """A peer region reached over HTTP through the link simulator; requests signed with the shared secret."""

    def __init__(
        self,
        region: str,
        base_url: str,
        *,
        me: str,
        auth: httpx.Auth,
        schemas: Mapping[str, TableSchema],
        regions: Collection[str],
        connect_timeout_s: float = 2.0,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        """`verify`: with TLS between hosts, the deployment's CA (runtime.tls); httpx's default otherwise."""
        self.region = region
        self.me = me
        self.schemas = schemas
        self.regions = regions
        self.client = httpx.AsyncClient(
            base_url=base_url, auth=auth, timeout=follower_timeout(connect_timeout_s), verify=verify
        )

    async def follow(self, after: int, origins: Sequence[str] | None = None) -> AsyncGenerator[LogRead, None]:
        body: dict[str, Any] = {"peer": self.me, "after": after, "limit": BATCH}
        if origins is not None:
            body["origins"] = list(origins)
        async with self.client.stream("POST", "/replication/follow", content=orjson.dumps(body)) as response:
            if response.status_code == 410:
                raise LogTrimmed(f"{self.region} trimmed its log past seq {after}")
            clock = response.headers.get(CLOCK_HEADER, "")
            if response.status_code == 401 and clock.isdigit():
                message = (await response.aread()).decode("utf-8", "replace")[:300]
                raise ClockRefusal(self.region, int(clock), message)
            _raise_for(response.status_code, self.region, "follow")
            async for raw in object_lines(response, self.region):
                # On a thread when large: a batch of thousands takes tens of ms to check, which the loop
                # serving the API must not wait for (the GIL is handed back every few ms).
                entries = raw.get("entries")
                if isinstance(entries, list) and len(entries) <= INLINE_ROWS:
                    yield self._read(raw)
                else:
                    yield await asyncio.to_thread(self._read, raw)

    def _read(self, raw: Any) -> LogRead:
        entries = parse_entries(raw.get("entries"), self.schemas, self.regions)
        sent = raw.get("nowMs")
        return LogRead(
            entries=entries,
            last_seq=int(raw["lastSeq"]),
            head_seq=int(raw["headSeq"]),
            sent_ms=sent if isinstance(sent, int) and not isinstance(sent, bool) else None,
        )

    async def snapshot(self, after: str | None, limit: int) -> SnapshotPage:
        raw = await self._post("/replication/snapshot", {"after": after, "limit": limit})
        entries = await asyncio.to_thread(parse_entries, raw.get("entries"), self.schemas, self.regions)
        held = raw.get("checkpoints")
        checkpoints = (
            {r: seq for r, seq in held.items() if r in self.regions and type(seq) is int and seq >= 0}
            if isinstance(held, dict)
            else {}
        )
        return SnapshotPage(
            entries=entries, cursor=raw.get("cursor"), head_seq=int(raw["headSeq"]), checkpoints=checkpoints
        )

    async def digest(self, table: str, buckets: int, before: int | None = None) -> list[str]:
        raw = await self._post("/replication/digest", {"table": table, "buckets": buckets, "before": before})
        digest: list[str] = raw["digest"]
        return digest

    async def bucket(self, table: str, bucket: int, buckets: int) -> list[LogEntry]:
        raw = await self._post("/replication/digest", {"table": table, "buckets": buckets, "bucket": bucket})
        return parse_entries(raw.get("entries"), self.schemas, self.regions)

    async def bucket_versions(self, table: str, bucket: int, buckets: int) -> list[tuple[Key, Version]]:
        raw = await self._post(
            "/replication/digest", {"table": table, "buckets": buckets, "bucket": bucket, "versions": True}
        )
        return parse_versions(raw.get("versions"))

    async def entries(self, table: str, keys: Sequence[Key]) -> list[LogEntry]:
        found: list[LogEntry] = []
        for start in range(0, len(keys), MAX_KEYS):
            raw = await self._post(
                "/replication/digest", {"table": table, "keys": keys[start : start + MAX_KEYS]}
            )
            found += parse_entries(raw.get("entries"), self.schemas, self.regions)
        return found

    async def push(self, entries: list[LogEntry]) -> list[LogEntry]:
        # Bodies within the peer's limit (every region's is MAX_BODY_BYTES): a 413 would refuse all of one.
        if len(entries) <= INLINE_ROWS:
            bodies, too_large = push_bodies(self.me, entries, MAX_BODY_BYTES)
        else:
            bodies, too_large = await asyncio.to_thread(push_bodies, self.me, entries, MAX_BODY_BYTES)
        for body in bodies:
            response = await self.client.post("/replication/push", content=body)
            _raise_for(response.status_code, self.region, "/replication/push")
        return too_large

    async def ack(self, seq: int) -> None:
        await self._post("/replication/ack", {"peer": self.me, "seq": seq})

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        response = await self.client.post(path, content=orjson.dumps(body))
        _raise_for(response.status_code, self.region, path)
        return orjson.loads(response.content)

    async def aclose(self) -> None:
        await self.client.aclose()


def _raise_for(status: int, region: str, what: str) -> None:
    if status != 200:
        raise errors.StorageError(f"{region} answered {status} to {what}")
