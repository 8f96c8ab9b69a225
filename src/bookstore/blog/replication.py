"""Blog replication: replicas follow the primary's row-change log over signed HTTP; epochs fence promotions.

One region is the primary; every other region is a read-only replica. Each region keeps, in its own
database, the epoch it knows, the primary of that epoch and the history of epochs (`blog_epochs`: who
became primary at which epoch, and the lsn its log forked from). Every region holds a streaming long-poll
to every peer (`POST /replication/blog/follow`): the request carries the caller's epoch and history, every
line of the answer the callee's, so a region that meets a higher epoch adopts it at once, whichever side it
is on. A replica's stream to its primary also carries the primary's log after the replica's position; the
replica applies it in lsn order (rows, log records and position in one transaction).

Promotion raises the epoch (max known + 1) and records the fork lsn (the promoted replica's position).
Epochs are totally ordered by `(epoch, primary region)`: two promotions that computed the same number (both
sides of a partition, a retry sent to another region) are ordered by the region's id, so every region
picks the same winner and the history keeps one lineage. A promotion must reach a majority of the
electorate (the deployment's regions and every region the epoch history names) unless forced. A
former primary that meets the higher epoch becomes read-only in the same transaction that copies its
records past the fork into `blog_diverged` (kept and listed, never dropped); it rejoins by re-syncing from
a snapshot of the new primary. A primary that (re)starts takes no write until every region of the
electorate has answered with its epoch, or CONFIRM_TIMEOUT_S has passed (a region down or behind a cut
link never answers; a stream that fails is not an answer), so a deposed primary coming back never accepts
a write it could have known to refuse.
A planned switchover fences the primary (read-only), waits for the target to apply everything, then
promotes it: nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import httpx
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, TypeAdapter
from pydantic import ValidationError as PydanticError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from bookstore.blog.port import Param, SqlSession
from bookstore.blog.repository import COLUMNS, OPS, PRIMARY_KEYS, BlogMeta, BlogRepository, Op, RowChange
from bookstore.domain import errors
from bookstore.ports import Clock
from bookstore.replication.auth import DESTINATION_HEADER, PeerAuth
from bookstore.replication.http import ChangeFeed
from bookstore.replication.tables import LAG_BUCKETS, LagWindow

log = logging.getLogger("bookstore.blog.replication")

PREFIX: Final = "/replication/blog"
OPERATOR: Final = "operator"
BATCH: Final = 500
HEARTBEAT_S: Final = 1.0
# Commits of this process wake the streams at once; other processes' (the CLI's, a bench writer's) are
# seen within one poll.
POLL_S: Final = 0.01
# A stream ends after this long (the follower asks again at once): rarely, as a reopening costs a round
# trip during which new records wait at the primary.
STREAM_S: Final = 300.0
# A (re)started primary takes writes once every region of the electorate answered with its epoch; the
# regions that do not (down, or behind a cut link) are given up on after this long.
CONFIRM_TIMEOUT_S: Final = 10.0
# How long a write waits for that confirmation before it is refused with 503.
GATE_WAIT_S: Final = 5.0
SWITCHOVER_TIMEOUT_S: Final = 30.0
# How long a promotion waits for each region's answer when it counts the majority it reaches.
QUORUM_TIMEOUT_S: Final = 3.0
NDJSON: Final = "application/x-ndjson"
META_NEEDS_REJOIN: Final = "needs_rejoin"
# Children before parents, so that a resync deletes in an order any foreign key would accept.
_TABLE_ORDER: Final = ("blog_post_tags", "blog_comments", "blog_posts")
_CHANGE_COLUMNS: Final = "lsn, epoch, region, tbl, pk, op, row_image, written_ms"
_DIVERGED_COLUMNS: Final = (
    "id, lsn, epoch, region, tbl, pk, op, row_image, written_ms, detected_ms, new_epoch, new_primary"
)

Role = Literal["primary", "fenced", "replica"]


def epoch_rank(epoch: int, primary_region: str) -> tuple[int, str]:
    """The total order of epochs: by number, then by the primary's region id (ties of equal numbers)."""
    return (epoch, primary_region)


# -- the state ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Epoch:
    """One entry of the epoch history: from `epoch` on, `primary_region` took writes; its log forked from
    the lineage before it after `fork_lsn` (its own records have larger lsns)."""

    epoch: int
    primary_region: str
    fork_lsn: int
    started_ms: int

    def json(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "primary": self.primary_region,
            "forkLsn": self.fork_lsn,
            "startedMs": self.started_ms,
        }


@dataclass(frozen=True)
class BlogState:
    """A region's replication state as stored: epoch, primary, position, whether it must re-sync."""

    region: str
    epoch: int
    read_only: bool
    primary_region: str
    applied_lsn: int
    head_lsn: int
    needs_rejoin: bool
    history: tuple[Epoch, ...]

    @property
    def role(self) -> Role:
        """primary (takes writes), fenced (primary, read-only for a switchover), or replica."""
        if self.primary_region != self.region:
            return "replica"
        return "fenced" if self.read_only else "primary"

    @property
    def writable(self) -> bool:
        return self.role == "primary"

    def json(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "role": self.role,
            "epoch": self.epoch,
            "primaryRegion": self.primary_region,
            "readOnly": self.read_only,
            "appliedLsn": self.applied_lsn,
            "headLsn": self.head_lsn,
            "needsRejoin": self.needs_rejoin,
            "history": [h.json() for h in self.history],
        }


@dataclass(frozen=True)
class DivergedWrite:
    """A change record a former primary accepted after the fork: not in the new primary's lineage."""

    id: int
    lsn: int
    epoch: int
    region: str
    table: str
    pk: dict[str, Any]
    op: str
    row: dict[str, Any] | None
    written_ms: int
    detected_ms: int
    new_epoch: int
    new_primary: str

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "lsn": self.lsn,
            "epoch": self.epoch,
            "region": self.region,
            "table": self.table,
            "pk": self.pk,
            "op": self.op,
            "row": self.row,
            "writtenMs": self.written_ms,
            "detectedMs": self.detected_ms,
            "newEpoch": self.new_epoch,
            "newPrimary": self.new_primary,
        }


@dataclass(frozen=True)
class Adoption:
    """What meeting a higher epoch did to this region."""

    from_epoch: int
    to_epoch: int
    primary_region: str
    was_primary: bool
    diverged: int
    needs_rejoin: bool


# -- the wire ------------------------------------------------------------------------------------------------


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def change_json(change: RowChange) -> dict[str, Any]:
    return {
        "lsn": change.lsn,
        "epoch": change.epoch,
        "region": change.region,
        "table": change.table,
        "pk": change.pk,
        "op": change.op,
        "row": change.row,
        "writtenMs": change.written_ms,
    }


class _WireChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lsn: StrictInt = Field(ge=1)
    epoch: StrictInt = Field(ge=1)
    region: StrictStr = Field(max_length=64)
    table: StrictStr = Field(max_length=64)
    pk: dict[str, Any]
    op: StrictStr = Field(max_length=8)
    row: dict[str, Any] | None
    writtenMs: StrictInt


class _WireEpoch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epoch: StrictInt = Field(ge=1)
    primary: StrictStr = Field(min_length=1, max_length=64)
    forkLsn: StrictInt = Field(ge=0)
    startedMs: StrictInt = Field(ge=0)


_CHANGES: Final = TypeAdapter(list[_WireChange])
_HISTORY: Final = TypeAdapter(list[_WireEpoch])


def parse_changes(raw: Any) -> list[RowChange]:
    """Change records from JSON, checked (tables and ops known; the repository checks rows on apply)."""
    try:
        wire = _CHANGES.validate_python(raw if raw is not None else [])
    except PydanticError as exc:
        raise errors.ValidationError(f"malformed change records: {str(exc)[:300]}") from None
    out = []
    for c in wire:
        if c.table not in COLUMNS or c.op not in OPS:
            raise errors.ValidationError(f"change {c.lsn}: unknown table {c.table!r} or op {c.op!r}")
        op: Op = "INSERT" if c.op == "INSERT" else "UPDATE" if c.op == "UPDATE" else "DELETE"
        out.append(RowChange(c.lsn, c.epoch, c.region, c.table, c.pk, op, c.row, c.writtenMs))
    return out


def parse_history(raw: Any) -> list[Epoch]:
    try:
        wire = _HISTORY.validate_python(raw if raw is not None else [])
    except PydanticError as exc:
        raise errors.ValidationError(f"malformed epoch history: {str(exc)[:300]}") from None
    return [Epoch(h.epoch, h.primary, h.forkLsn, h.startedMs) for h in wire]


# -- the store: replication state in the region's own database ----------------------------------------------


def _change(row: Sequence[Any]) -> RowChange:
    lsn, epoch, region, table, pk, op, image, written_ms = row
    return RowChange(
        int(lsn),
        int(epoch),
        str(region),
        str(table),
        orjson.loads(pk),
        op,
        None if image is None else orjson.loads(image),
        int(written_ms),
    )


class BlogStore:
    """The replication state of one region's blog database, each change one transaction.

    Works on the SqlDatabase port (SQLite in the regions). Every method that changes the epoch, the
    primary or read_only does it in the transaction that reads them, under the same lock as every write
    (BlogRepository.write), so no write slips between a decision and its effect.
    """

    def __init__(self, repository: BlogRepository, clock: Clock) -> None:
        self.repository = repository
        self.db = repository.db
        self.region = repository.region
        self.clock = clock
        self._ensure_history()

    # reading ---------------------------------------------------------------------------------------------

    def _meta(self, tx: SqlSession) -> tuple[BlogMeta, bool]:
        meta = BlogRepository._parse_meta(tx.query(self.repository._meta_sql()))
        if meta is None:
            raise errors.StorageError("the blog has no replication state; open it with BlogRepository.open")
        rows = tx.query("SELECT value FROM blog_meta WHERE name = ?", (META_NEEDS_REJOIN,))
        return meta, bool(rows) and str(rows[0][0]) == "1"

    @staticmethod
    def _history(tx: SqlSession) -> tuple[Epoch, ...]:
        rows = tx.query("SELECT epoch, primary_region, fork_lsn, started_ms FROM blog_epochs ORDER BY epoch")
        return tuple(Epoch(int(e), str(p), int(f), int(s)) for e, p, f, s in rows)

    @staticmethod
    def _head(tx: SqlSession) -> int:
        rows = tx.query("SELECT MAX(lsn) FROM blog_changelog")
        return int(rows[0][0] or 0) if rows else 0

    def _state(self, tx: SqlSession) -> BlogState:
        meta, needs = self._meta(tx)
        return BlogState(
            region=self.region,
            epoch=meta.epoch,
            read_only=meta.read_only,
            primary_region=meta.primary_region,
            applied_lsn=meta.applied_lsn,
            head_lsn=self._head(tx),
            needs_rejoin=needs,
            history=self._history(tx),
        )

    def state(self) -> BlogState:
        with self.db.transaction() as tx:
            return self._state(tx)

    def head(self) -> tuple[int, int]:
        """The newest record's lsn and write time (0, 0 when the log is empty)."""
        rows = self.db.query("SELECT lsn, written_ms FROM blog_changelog ORDER BY lsn DESC LIMIT 1")
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    def epoch_at(self, lsn: int) -> int | None:
        """The epoch of the record at `lsn` in this region's log (None when there is none)."""
        rows = self.db.query("SELECT epoch FROM blog_changelog WHERE lsn = ?", (lsn,))
        return int(rows[0][0]) if rows else None

    def changes(self, after: int, limit: int = BATCH) -> list[RowChange]:
        return self.repository.changes(after, limit=limit)

    def diverged(self, limit: int = 1000) -> list[DivergedWrite]:
        rows = self.db.query(f"SELECT {_DIVERGED_COLUMNS} FROM blog_diverged ORDER BY id LIMIT ?", (limit,))
        return [
            DivergedWrite(
                int(id_),
                int(lsn),
                int(epoch),
                str(region),
                str(table),
                orjson.loads(pk),
                str(op),
                None if image is None else orjson.loads(image),
                int(written),
                int(detected),
                int(new_epoch),
                str(new_primary),
            )
            for (
                id_,
                lsn,
                epoch,
                region,
                table,
                pk,
                op,
                image,
                written,
                detected,
                new_epoch,
                new_primary,
            ) in (rows)
        ]

    def diverged_count(self) -> int:
        return int(self.db.query("SELECT COUNT(*) FROM blog_diverged")[0][0])

    # writing ---------------------------------------------------------------------------------------------

    def _ensure_history(self) -> None:
        """The first epoch's entry, which no promotion writes: every region knows it from its meta."""
        with self.db.transaction() as tx:
            meta, _ = self._meta(tx)
            if meta.epoch == 1 and not tx.query("SELECT epoch FROM blog_epochs WHERE epoch = 1"):
                tx.execute(
                    "INSERT INTO blog_epochs (epoch, primary_region, fork_lsn, started_ms)"
                    " VALUES (1, ?, 0, 0)",
                    (meta.primary_region,),
                )

    @staticmethod
    def _merge_history(tx: SqlSession, history: Sequence[Epoch]) -> None:
        """Adds the epochs not known yet; an epoch number promoted by two regions keeps the higher ranked
        one (the other's branch is not the lineage: its writes go to blog_diverged where it adopts)."""
        known = {int(e): str(p) for e, p in tx.query("SELECT epoch, primary_region FROM blog_epochs")}
        for h in history:
            mine = known.get(h.epoch)
            if mine is None:
                tx.execute(
                    "INSERT INTO blog_epochs (epoch, primary_region, fork_lsn, started_ms)"
                    " VALUES (?, ?, ?, ?)",
                    (h.epoch, h.primary_region, h.fork_lsn, h.started_ms),
                )
            elif h.primary_region > mine:
                tx.execute(
                    "UPDATE blog_epochs SET primary_region = ?, fork_lsn = ?, started_ms = ? WHERE epoch = ?",
                    (h.primary_region, h.fork_lsn, h.started_ms, h.epoch),
                )
            else:
                continue
            known[h.epoch] = h.primary_region

    def _store(self, tx: SqlSession, meta: BlogMeta, needs_rejoin: bool) -> None:
        BlogRepository._store_meta(tx, meta)
        value = "1" if needs_rejoin else "0"
        if (
            tx.execute("UPDATE blog_meta SET value = ? WHERE name = ?", (value, META_NEEDS_REJOIN)).rowcount
            == 0
        ):
            tx.execute("INSERT INTO blog_meta (name, value) VALUES (?, ?)", (META_NEEDS_REJOIN, value))

    def _keep_diverged(
        self, tx: SqlSession, records: Sequence[RowChange], new_epoch: int, new_primary: str
    ) -> int:
        """Copies records into blog_diverged (each once); returns how many were new there."""
        added = 0
        now = self.clock.now_ms()
        for c in records:
            if tx.query(
                "SELECT id FROM blog_diverged WHERE lsn = ? AND epoch = ? AND region = ?",
                (c.lsn, c.epoch, c.region),
            ):
                continue
            tx.execute(
                "INSERT INTO blog_diverged (lsn, epoch, region, tbl, pk, op, row_image, written_ms, "
                "detected_ms, new_epoch, new_primary) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    c.lsn,
                    c.epoch,
                    c.region,
                    c.table,
                    _dumps(c.pk),
                    c.op,
                    None if c.row is None else _dumps(c.row),
                    c.written_ms,
                    now,
                    new_epoch,
                    new_primary,
                ),
            )
            added += 1
        return added

    def observe(self, epoch: int, primary: str, history: Sequence[Epoch]) -> Adoption | None:
        """Takes in a peer's epoch and history; adopts a higher ranked epoch (None when it is not higher).

        Adopting makes this region a read-only replica of `primary`. Its records past the lineage's fork
        (the least fork lsn of the epochs after its own) did not reach the new primary: they are copied into
        blog_diverged and the region must re-sync (needs_rejoin) before it applies anything again.
        """
        with self.db.transaction() as tx:
            self._merge_history(tx, history)
            meta, needs = self._meta(tx)
            mine = epoch_rank(meta.epoch, meta.primary_region)
            if epoch_rank(epoch, primary) <= mine:
                return None
            forks = [h.fork_lsn for h in self._history(tx) if epoch_rank(h.epoch, h.primary_region) > mine]
            head = self._head(tx)
            diverged = 0
            if not forks:
                # The lineage after our epoch is unknown: re-sync to be safe; rejoin finds the diverged.
                needs = True
            else:
                fork = min(forks)
                past = [
                    _change(r)
                    for r in tx.query(
                        f"SELECT {_CHANGE_COLUMNS} FROM blog_changelog WHERE lsn > ? ORDER BY lsn", (fork,)
                    )
                ]
                if past:
                    diverged = self._keep_diverged(tx, past, epoch, primary)
                    needs = True
            applied = meta.applied_lsn if needs else head
            self._store(tx, BlogMeta(epoch, True, primary, applied), needs)
            return Adoption(
                from_epoch=meta.epoch,
                to_epoch=epoch,
                primary_region=primary,
                was_primary=meta.primary_region == self.region and not meta.read_only,
                diverged=diverged,
                needs_rejoin=needs,
            )

    def promote(self, known_epoch: int) -> BlogState:
        """Makes this region the primary of a new epoch (max known + 1), recording the fork lsn.

        A region already the writable primary stays as it is. A region that must re-sync refuses
        (Conflict): its log is not the lineage's.
        """
        with self.db.transaction() as tx:
            state = self._state(tx)
            if state.writable:
                return state
            if state.needs_rejoin:
                raise errors.Conflict(
                    f"the blog in {self.region} holds diverged writes and must re-sync first: "
                    f"`bookstore blog rejoin {self.region}`, then promote"
                )
            newest = max([known_epoch, state.epoch, *(h.epoch for h in state.history)])
            epoch = newest + 1
            fork = state.head_lsn
            tx.execute(
                "INSERT INTO blog_epochs (epoch, primary_region, fork_lsn, started_ms) VALUES (?, ?, ?, ?)",
                (epoch, self.region, fork, self.clock.now_ms()),
            )
            self._store(tx, BlogMeta(epoch, False, self.region, fork), False)
            return self._state(tx)

    def fence(self) -> BlogState:
        """Makes the writable primary read-only, keeping its epoch (a switchover's first step)."""
        with self.db.transaction() as tx:
            state = self._state(tx)
            if state.role == "replica":
                raise errors.Conflict(
                    f"the blog in {self.region} is a replica of {state.primary_region}; fence the primary"
                )
            meta, needs = self._meta(tx)
            self._store(tx, BlogMeta(meta.epoch, True, meta.primary_region, meta.applied_lsn), needs)
            return self._state(tx)

    def unfence(self, epoch: int) -> BlogState:
        """Takes writes again after a switchover that did not happen, if nothing changed meanwhile."""
        with self.db.transaction() as tx:
            state = self._state(tx)
            if state.role == "fenced" and state.epoch == epoch:
                meta, needs = self._meta(tx)
                self._store(tx, BlogMeta(meta.epoch, False, meta.primary_region, meta.applied_lsn), needs)
            return self._state(tx)

    def mark_needs_rejoin(self) -> None:
        with self.db.transaction() as tx:
            meta, _ = self._meta(tx)
            self._store(tx, meta, True)

    def snapshot(self) -> dict[str, Any]:
        """Every row of the replicated tables and the whole log, read in one transaction (primary only)."""
        with self.db.transaction() as tx:
            state = self._state(tx)
            if state.primary_region != self.region:
                raise errors.Conflict(
                    f"the blog in {self.region} is a replica; take the snapshot from {state.primary_region}"
                )
            tables = {}
            for table in _TABLE_ORDER:
                columns = COLUMNS[table]
                order = ", ".join(PRIMARY_KEYS[table])
                rows = tx.query(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}")
                tables[table] = [dict(zip(columns, r, strict=True)) for r in rows]
            log_rows = tx.query(f"SELECT {_CHANGE_COLUMNS} FROM blog_changelog ORDER BY lsn")
            return {
                **state.json(),
                "tables": tables,
                "changes": [change_json(_change(r)) for r in log_rows],
            }

    def resync(self, snapshot: Mapping[str, Any]) -> tuple[BlogState, int]:
        """Replaces this region's rows and log by a primary's snapshot; becomes its replica.

        Records of this region's log that are not in the snapshot's log (same lsn, epoch and region) are
        first kept in blog_diverged. Returns the new state and how many diverged records were new.
        """
        epoch, primary = snapshot.get("epoch"), snapshot.get("primaryRegion")
        if not isinstance(epoch, int) or not isinstance(primary, str) or not primary:
            raise errors.ValidationError("the snapshot has no epoch or primary region")
        tables = snapshot.get("tables")
        if not isinstance(tables, dict) or set(tables) != set(_TABLE_ORDER):
            raise errors.ValidationError(f"the snapshot must hold the tables {', '.join(_TABLE_ORDER)}")
        theirs = parse_changes(snapshot.get("changes"))
        history = parse_history(snapshot.get("history"))
        head = max((c.lsn for c in theirs), default=0)
        with self.db.transaction() as tx:
            state = self._state(tx)
            if state.writable:
                raise errors.Conflict(f"the blog in {self.region} is the primary; it does not re-sync")
            if epoch < state.epoch:
                raise errors.Conflict(
                    f"the snapshot of {primary} is at epoch {epoch}, older than this region's {state.epoch}"
                )
            in_lineage = {(c.lsn, c.epoch, c.region) for c in theirs}
            mine = [
                _change(r) for r in tx.query(f"SELECT {_CHANGE_COLUMNS} FROM blog_changelog ORDER BY lsn")
            ]
            diverged = self._keep_diverged(
                tx, [c for c in mine if (c.lsn, c.epoch, c.region) not in in_lineage], epoch, primary
            )
            for table in _TABLE_ORDER:
                tx.execute(f"DELETE FROM {table}")
            tx.execute("DELETE FROM blog_changelog")
            for table in reversed(_TABLE_ORDER):
                rows = tables[table]
                if not isinstance(rows, list):
                    raise errors.ValidationError(f"the snapshot's {table} is not a list of rows")
                _insert_rows(tx, table, rows)
            tx.executemany(
                f"INSERT INTO blog_changelog ({_CHANGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        c.lsn,
                        c.epoch,
                        c.region,
                        c.table,
                        _dumps(c.pk),
                        c.op,
                        None if c.row is None else _dumps(c.row),
                        c.written_ms,
                    )
                    for c in theirs
                ],
            )
            self._merge_history(tx, history)
            self._store(tx, BlogMeta(epoch, True, primary, head), False)
            return self._state(tx), diverged


def _insert_rows(tx: SqlSession, table: str, rows: Sequence[Any]) -> None:
    columns = COLUMNS[table]
    values: list[list[Param]] = []
    for row in rows:
        if not isinstance(row, dict) or set(row) != set(columns):
            raise errors.ValidationError(f"a row of {table} in the snapshot does not have its columns")
        values.append([row[c] for c in columns])
    if values:
        marks = ", ".join("?" for _ in columns)
        tx.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", values)


# -- peers ---------------------------------------------------------------------------------------------------


class BlogPeer(Protocol):
    """How a region reaches one peer's blog replication endpoints (over HTTP through the link)."""

    region: str

    def follow(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]: ...

    async def call(self, path: str, body: dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


class PeerRefused(errors.BookstoreError):
    """A peer answered a request with an error: it did not do what was asked."""

    code = "PeerRefused"

    def __init__(self, region: str, status: int, body: Any) -> None:
        message = body.get("message") if isinstance(body, dict) else None
        super().__init__(f"{region} answered {status}: {message or body!r:.300}")
        self.region = region
        self.status = status


class HttpBlogPeer:
    """A peer region's blog replication over HTTP (through the link simulator), signed as `me`."""

    def __init__(
        self, region: str, base_url: str, *, auth: httpx.Auth, connect_timeout_s: float = 2.0
    ) -> None:
        self.region = region
        # A stream read times out when not even a heartbeat came: the link is cut or the peer hangs.
        timeout = httpx.Timeout(10.0, connect=connect_timeout_s, read=3 * HEARTBEAT_S + 2.0)
        self.client = httpx.AsyncClient(base_url=base_url, auth=auth, timeout=timeout)

    async def follow(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        async with self.client.stream("POST", f"{PREFIX}/follow", content=orjson.dumps(body)) as response:
            if response.status_code != 200:
                raise PeerRefused(self.region, response.status_code, orjson.loads(await response.aread()))
            async for line in response.aiter_lines():
                if line:
                    parsed = orjson.loads(line)
                    if not isinstance(parsed, dict):
                        raise errors.ValidationError(f"{self.region} sent a line that is not an object")
                    yield parsed

    async def call(self, path: str, body: dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]:
        response = await self.client.post(
            f"{PREFIX}/{path}", content=orjson.dumps(body), timeout=httpx.Timeout(timeout_s, connect=2.0)
        )
        try:
            parsed: Any = orjson.loads(response.content) if response.content else {}
        except orjson.JSONDecodeError:
            parsed = None
        if response.status_code != 200:
            raise PeerRefused(self.region, response.status_code, parsed or response.text[:300])
        if not isinstance(parsed, dict):
            raise errors.StorageError(f"{self.region} answered {path} with something not a JSON object")
        return parsed

    async def aclose(self) -> None:
        await self.client.aclose()


@dataclass
class PeerView:
    """What this region last heard from a peer."""

    connected: bool = False
    epoch: int | None = None
    primary: str | None = None
    read_only: bool | None = None
    head_lsn: int | None = None
    heard_ms: int | None = None
    error: str | None = None
    failed: bool = False


# -- metrics -------------------------------------------------------------------------------------------------


class BlogMetrics:
    """Prometheus figures of one region's blog replication."""

    def __init__(self, registry: CollectorRegistry | None, region: str) -> None:
        self.region = region
        self.lag = Histogram(
            "bookstore_blog_replication_lag_seconds",
            "Apply time on the replica minus the write's time on the primary",
            ["source", "destination"],
            registry=registry,
            buckets=LAG_BUCKETS,
        )
        self.applied = Counter(
            "bookstore_blog_replication_applied", "Change records applied from the primary", registry=registry
        )
        self.epoch_changes = Counter(
            "bookstore_blog_epoch_changes",
            "Epoch changes of this region: promoted, adopted (met a higher epoch), resynced",
            ["kind"],
            registry=registry,
        )
        self.behind = Gauge(
            "bookstore_blog_replica_lag_entries",
            "Records of the primary's log not yet applied here (lsn difference)",
            registry=registry,
        )
        self.behind_seconds = Gauge(
            "bookstore_blog_replica_lag_seconds_now",
            "Age of the oldest write of the primary not yet applied here (0 when caught up)",
            registry=registry,
        )
        self.epoch = Gauge("bookstore_blog_epoch", "The epoch this region knows", registry=registry)
        self.read_only = Gauge(
            "bookstore_blog_read_only", "1 when this region refuses writes", registry=registry
        )
        self.position = Gauge(
            "bookstore_blog_applied_lsn", "The replica's position in the log", registry=registry
        )
        self.diverged = Gauge(
            "bookstore_blog_diverged_writes",
            "Records kept aside as diverged in this region",
            registry=registry,
        )


# -- the replication of one region ---------------------------------------------------------------------------


class BlogReplication:
    """One region's side of blog replication: follows its peers, serves them, promotes, re-syncs.

    Installs a write gate and a commit listener on the repository. `run(stop)` is the region's loop;
    `routes()` the endpoints it serves under /replication/blog/ (behind PeerAuthMiddleware).
    """

    def __init__(
        self,
        store: BlogStore,
        peers: Sequence[BlogPeer],
        *,
        clock: Clock,
        metrics: BlogMetrics | None = None,
        regions: Collection[str] = (),
        confirm_peers: Collection[str] | None = None,
        confirm_timeout_s: float = CONFIRM_TIMEOUT_S,
    ) -> None:
        self.store = store
        self.region = store.region
        self.peers = {p.region: p for p in peers}
        self.clock = clock
        self.metrics = metrics or BlogMetrics(None, self.region)
        self.regions = set(regions) | set(self.peers) | {self.region}
        self.confirm_peers = set(self.peers if confirm_peers is None else confirm_peers) - {self.region}
        self.confirm_timeout_s = confirm_timeout_s
        self.views: dict[str, PeerView] = {p: PeerView() for p in self.peers}
        self.lags = LagWindow()
        self.feed = ChangeFeed()
        self.confirmed = threading.Event()
        self._version = 0
        self._lock = asyncio.Lock()
        self.state: BlogState = store.state()
        self._last_applied_ms: int | None = None
        if not self.state.writable:
            self.confirmed.set()
        store.repository.write_gate = self.gate
        store.repository.listeners.append(self.feed.notify)
        m = self.metrics
        m.epoch.set_function(lambda: self.state.epoch)
        m.read_only.set_function(lambda: 0 if self.state.writable else 1)
        m.position.set_function(lambda: self.state.applied_lsn)
        m.behind.set_function(lambda: self.lag_entries() or 0)
        m.behind_seconds.set_function(lambda: self.lag_seconds() or 0.0)
        m.diverged.set_function(self.store.diverged_count)

    # the write gate --------------------------------------------------------------------------------------

    def gate(self) -> None:
        """Before every write: a primary that just started waits until its peers confirmed its epoch."""
        if not self.confirmed.wait(GATE_WAIT_S):
            raise errors.Unavailable(
                f"the blog in {self.region} is checking with its peers that it is still the primary; "
                "retry in a few seconds"
            )

    # state -----------------------------------------------------------------------------------------------

    async def refresh(self) -> BlogState:
        self.state = await asyncio.to_thread(self.store.state)
        return self.state

    def _changed(self) -> None:
        """The stored state moved: streams re-send it and followers reconnect with the new position."""
        self._version += 1
        self.feed.notify()

    async def adopt(self, epoch: int, primary: str, history: Sequence[Epoch], source: str) -> Adoption | None:
        """A peer's epoch met: adopt it when ranked higher (demoting this region if it was the primary)."""
        st = self.state
        known = {h.epoch: h.primary_region for h in st.history}
        if epoch_rank(epoch, primary) <= epoch_rank(st.epoch, st.primary_region) and all(
            h.epoch in known and known[h.epoch] >= h.primary_region for h in history
        ):
            return None
        async with self._lock:
            adoption = await asyncio.to_thread(self.store.observe, epoch, primary, history)
            await self.refresh()
        if adoption is None:
            return None
        self._changed()
        self.confirmed.set()
        self.metrics.epoch_changes.labels("adopted").inc()
        log.warning(
            "region=%s event=blog_epoch_adopted from=%d to=%d primary=%s source=%s was_primary=%s "
            "diverged=%d needs_rejoin=%s",
            self.region,
            adoption.from_epoch,
            adoption.to_epoch,
            adoption.primary_region,
            source,
            adoption.was_primary,
            adoption.diverged,
            adoption.needs_rejoin,
        )
        return adoption

    async def adopt_json(self, raw: Mapping[str, Any], source: str) -> Adoption | None:
        epoch, primary = raw.get("epoch"), raw.get("primaryRegion")
        if (
            not isinstance(epoch, int)
            or epoch < 1
            or not isinstance(primary, str)
            or primary not in self.regions
        ):
            raise errors.ValidationError(f"{source} sent no valid epoch and primary region")
        return await self.adopt(epoch, primary, parse_history(raw.get("history")), source)

    def lag_entries(self) -> int | None:
        """Records of the primary's log this replica has not applied (None for a primary or when unknown)."""
        st = self.state
        if st.role != "replica":
            return None
        view = self.views.get(st.primary_region)
        if view is None or view.head_lsn is None or view.epoch != st.epoch:
            return None
        return max(0, view.head_lsn - st.applied_lsn)

    def lag_seconds(self) -> float | None:
        """0 when caught up; else the age of the newest applied write (an underestimate of the oldest
        unapplied one's); None for a primary or when the primary is not reachable."""
        behind = self.lag_entries()
        view = self.views.get(self.state.primary_region)
        if behind is None or view is None or not view.connected:
            return None
        if behind == 0:
            return 0.0
        reference = self._last_applied_ms if self._last_applied_ms is not None else view.heard_ms
        return max(0.0, (self.clock.now_ms() - (reference or self.clock.now_ms())) / 1000)

    # the loop --------------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self.feed.bind(asyncio.get_running_loop())
        await self.refresh()
        tasks = [
            asyncio.create_task(self._watch(p, stop), name=f"blog-{p.region}") for p in self.peers.values()
        ]
        if not self.confirm_peers:
            self.confirmed.set()
        tasks.append(asyncio.create_task(self._confirm_after_timeout(stop), name="blog-confirm"))
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for peer in self.peers.values():
                with contextlib.suppress(Exception):
                    await peer.aclose()

    async def _confirm_after_timeout(self, stop: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=self.confirm_timeout_s)
        if not self.confirmed.is_set() and not stop.is_set():
            silent = sorted(p for p in self.views if self.views[p].heard_ms is None)
            log.warning(
                "region=%s event=blog_confirm_timeout unreachable=%s epoch=%d: taking writes as the primary",
                self.region,
                ",".join(silent),
                self.state.epoch,
            )
            self.confirmed.set()

    def electorate(self) -> set[str]:
        """The regions a promotion needs a majority of: the deployment's and every one the history names."""
        return self.regions | {h.primary_region for h in self.state.history}

    def _settled(self, peer: str) -> None:
        """Confirms a (re)started primary once every region of the electorate answered with its epoch.

        A failed stream is no answer (the region may be up behind a cut link, or just restarting, and
        hold a newer epoch): those are waited for until the confirmation timeout.
        """
        waited = (self.confirm_peers | ({h.primary_region for h in self.state.history} & set(self.views))) - {
            self.region
        }
        if not self.confirmed.is_set() and all(self.views[p].heard_ms is not None for p in waited):
            log.info(
                "region=%s event=blog_epoch_confirmed epoch=%d peer=%s", self.region, self.state.epoch, peer
            )
            self.confirmed.set()

    async def _watch(self, peer: BlogPeer, stop: asyncio.Event) -> None:
        backoff = 0.05
        while not stop.is_set():
            try:
                await self._follow_once(peer)
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a peer down or a link cut: retry with backoff, never give up
                view = self.views[peer.region]
                if view.connected:
                    log.warning(
                        "region=%s event=blog_peer_lost peer=%s error=%s", self.region, peer.region, exc
                    )
                view.connected, view.failed = False, True
                view.error = f"{type(exc).__name__}: {exc}"[:300]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=backoff)
                backoff = min(backoff * 2, 1.0)

    async def _follow_once(self, peer: BlogPeer) -> None:
        """One stream from `peer`: epochs both ways, and its log when it is our primary."""
        version = self._version
        st = self.state
        following = st.role == "replica" and st.primary_region == peer.region and not st.needs_rejoin
        after_epoch: int | None = 0
        if following and st.applied_lsn > 0:
            after_epoch = await asyncio.to_thread(self.store.epoch_at, st.applied_lsn)
        body = {
            "region": self.region,
            **_announce(st),
            "after": st.applied_lsn if following else None,
            "afterEpoch": after_epoch or 0,
            "streamMs": int(STREAM_S * 1000),
        }
        view = self.views[peer.region]
        async for line in peer.follow(body):
            now = self.clock.now_ms()
            if not view.connected:
                log.info(
                    "region=%s event=blog_peer_connected peer=%s following=%s",
                    self.region,
                    peer.region,
                    following,
                )
            view.connected, view.heard_ms, view.error = True, now, None
            view.epoch = line.get("epoch") if isinstance(line.get("epoch"), int) else None
            view.primary = line.get("primaryRegion") if isinstance(line.get("primaryRegion"), str) else None
            view.read_only = bool(line.get("readOnly"))
            view.head_lsn = line.get("headLsn") if isinstance(line.get("headLsn"), int) else None
            await self.adopt_json(line, peer.region)
            self._settled(peer.region)
            if line.get("error") == "Diverged":
                await self._diverged_from(peer.region, str(line.get("message", "")))
                return
            if self._version != version:
                return  # our state moved: ask again with it
            changes = parse_changes(line.get("changes"))
            if following and changes and view.epoch == st.epoch and view.primary == peer.region:
                await self._apply(peer.region, st.epoch, changes)
            if self._version != version:
                return

    async def _apply(self, source: str, epoch: int, changes: Sequence[RowChange]) -> None:
        async with self._lock:
            try:
                applied = await asyncio.to_thread(
                    self.store.repository.apply, changes, epoch=epoch, primary=source
                )
            except errors.Conflict as exc:
                log.info(
                    "region=%s event=blog_apply_refused source=%s reason=%s", self.region, source, exc.message
                )
                await self.refresh()
                self._changed()
                return
            if applied:
                self.state = _with_applied(self.state, max(c.lsn for c in changes))
        now = self.clock.now_ms()
        if applied:
            self._last_applied_ms = max(c.written_ms for c in changes)
            self.metrics.applied.inc(applied)
            for c in changes[-applied:]:
                lag = max(0, now - c.written_ms)
                self.lags.add(source, now, lag)
                self.metrics.lag.labels(source, self.region).observe(lag / 1000)

    async def _diverged_from(self, primary: str, message: str) -> None:
        log.error("region=%s event=blog_diverged primary=%s detail=%s", self.region, primary, message)
        async with self._lock:
            await asyncio.to_thread(self.store.mark_needs_rejoin)
            await self.refresh()
        self._changed()

    # serving peers ---------------------------------------------------------------------------------------

    async def serve_follow(self, body: _FollowRequest) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + body.streamMs / 1000
        after = body.after
        st = self.state
        if after is not None and st.primary_region == self.region:
            problem = await asyncio.to_thread(self._position_problem, after, body.afterEpoch)
            if problem:
                yield _line(
                    {**_announce(st), "headLsn": st.head_lsn, "error": "Diverged", "message": problem}
                )
                return
        sent_version = -1
        last_sent = 0.0
        while loop.time() < deadline:
            wake = self.feed.current()
            st = self.state
            serving = after is not None and st.primary_region == self.region
            changes = (
                await asyncio.to_thread(self.store.changes, after, BATCH)
                if serving and after is not None
                else []
            )
            if changes or sent_version != self._version or loop.time() - last_sent >= HEARTBEAT_S:
                head, head_ms = await asyncio.to_thread(self.store.head)
                sent_version = self._version
                yield _line(
                    {
                        **_announce(self.state),
                        "headLsn": head,
                        "headMs": head_ms,
                        "changes": [change_json(c) for c in changes],
                    }
                )
                last_sent = loop.time()
                if changes:
                    after = changes[-1].lsn
                    continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=POLL_S)

    def _position_problem(self, after: int, after_epoch: int) -> str | None:
        """Why a follower at `after` (its record there of `after_epoch`) is not on this primary's lineage."""
        if after == 0:
            return None
        head, _ = self.store.head()
        if after > head:
            return (
                f"the follower is at lsn {after}, past this primary's head {head}: it holds diverged writes"
            )
        mine = self.store.epoch_at(after)
        if mine != after_epoch:
            return f"at lsn {after} the follower has a record of epoch {after_epoch}, this primary of {mine}"
        return None

    # operations ------------------------------------------------------------------------------------------

    def known_epoch(self) -> int:
        return max([self.state.epoch, *(v.epoch for v in self.views.values() if v.epoch is not None)])

    async def reachable(self) -> set[str]:
        """The regions that answer now with their state (this one included); their epochs are adopted."""

        async def ask(peer: BlogPeer) -> dict[str, Any] | None:
            try:
                return await peer.call("state", {}, timeout_s=QUORUM_TIMEOUT_S)
            except Exception:
                return None

        peers = [p for r, p in self.peers.items() if r in self.electorate()]
        answered = {self.region}
        for peer, answer in zip(peers, await asyncio.gather(*(ask(p) for p in peers)), strict=True):
            if answer is not None:
                await self.adopt_json(answer, peer.region)
                answered.add(peer.region)
        return answered

    async def _check_majority(self) -> None:
        """Refuses (Conflict) a promotion that does not reach a majority of the electorate.

        Without a majority this region may be on the small side of a partition, where the other side can
        promote too: both would take writes until they meet, and one side's would end up diverged.
        """
        electorate = self.electorate()
        reached = await self.reachable() & electorate
        if len(reached) * 2 > len(electorate):
            return
        missing = sorted(electorate - reached)
        raise errors.Conflict(
            f"promotion of the blog in {self.region} refused: it reaches {len(reached)} of the "
            f"{len(electorate)} regions named in the epoch history ({', '.join(sorted(electorate))}), "
            f"not a majority; no answer from {', '.join(missing)}. If those regions are down (not just "
            'cut off), promote with --force (CLI) or {"force": true}: a cut-off primary keeps taking '
            "writes until it meets the new epoch, and those writes then go to the diverged list"
        )

    async def promote(
        self,
        *,
        min_epoch: int = 0,
        wait_for_lsn: int | None = None,
        timeout_s: float = SWITCHOVER_TIMEOUT_S,
        force: bool = False,
    ) -> BlogState:
        """Makes this region the primary of a new epoch; with `wait_for_lsn`, once it applied that far.

        Unless `force`, it must reach a majority of the electorate first (Conflict otherwise). A region
        that already is the writable primary stays as it is (a double click promotes once).
        """
        if self.state.writable:
            return self.state
        if not force:
            await self._check_majority()
        if wait_for_lsn is not None:
            deadline = time.monotonic() + timeout_s
            while self.state.applied_lsn < wait_for_lsn:
                if self.state.role != "replica" or time.monotonic() > deadline:
                    raise errors.Unavailable(
                        f"the blog in {self.region} applied up to lsn {self.state.applied_lsn}, not "
                        f"{wait_for_lsn}, within {timeout_s:g} s; not promoted"
                    )
                await asyncio.sleep(0.005)
        async with self._lock:
            before = self.state.epoch
            state = await asyncio.to_thread(self.store.promote, max(min_epoch, self.known_epoch()))
            self.state = state
        self.confirmed.set()
        self._changed()
        if state.epoch != before:
            self.metrics.epoch_changes.labels("promoted").inc()
            log.warning(
                "region=%s event=blog_promoted epoch=%d fork_lsn=%d", self.region, state.epoch, state.head_lsn
            )
        return state

    async def switchover(self, target: str, timeout_s: float = SWITCHOVER_TIMEOUT_S) -> dict[str, Any]:
        """Planned: fence this primary, let `target` apply everything, promote it; nothing is lost."""
        if target == self.region:
            return {"from": self.region, "to": target, **self.state.json()}
        peer = self.peers.get(target)
        if peer is None:
            raise errors.ValidationError(f"unknown region {target!r}")
        async with self._lock:
            fenced = await asyncio.to_thread(self.store.fence)
            self.state = fenced
        self._changed()
        log.warning(
            "region=%s event=blog_fenced epoch=%d head=%d target=%s",
            self.region,
            fenced.epoch,
            fenced.head_lsn,
            target,
        )
        body = {"waitForLsn": fenced.head_lsn, "minEpoch": fenced.epoch, "timeoutS": timeout_s}
        try:
            promoted = await peer.call("promote", body, timeout_s=timeout_s + 5)
        except PeerRefused as exc:
            # The target answered that it did not promote: take writes again.
            async with self._lock:
                self.state = await asyncio.to_thread(self.store.unfence, fenced.epoch)
            self._changed()
            raise errors.Unavailable(
                f"switchover to {target} refused ({exc.message}); {self.region} takes writes again"
            ) from None
        except (httpx.HTTPError, errors.BookstoreError) as exc:
            # Unknown whether the target promoted: stay read-only rather than risk two primaries.
            raise errors.Unavailable(
                f"switchover to {target}: no answer ({type(exc).__name__}); {self.region} stays read-only. "
                f"Check `bookstore status`, then `bookstore blog promote` the region that should take writes"
            ) from None
        await self.adopt_json(promoted, target)
        return {"from": self.region, "to": target, "lsn": fenced.head_lsn, **self.state.json()}

    async def primary_now(self) -> str:
        """The writable primary of the highest epoch any reachable region reports (ours when none answer)."""
        best = epoch_rank(self.state.epoch, self.state.primary_region)

        async def ask(peer: BlogPeer) -> dict[str, Any] | None:
            try:
                return await peer.call("state", {}, timeout_s=3.0)
            except Exception:
                return None

        for answer in await asyncio.gather(*(ask(p) for p in self.peers.values())):
            if answer is not None:
                await self.adopt_json(answer, str(answer.get("region")))
                if isinstance(answer.get("epoch"), int):
                    best = max(best, epoch_rank(answer["epoch"], str(answer.get("primaryRegion"))))
        mine = epoch_rank(self.state.epoch, self.state.primary_region)
        return self.state.primary_region if mine >= best else best[1]

    async def rejoin(self) -> dict[str, Any]:
        """Re-syncs this region from the primary's snapshot and follows it; keeps diverged writes aside."""
        primary = await self.primary_now()
        if primary == self.region:
            if self.state.writable:
                raise errors.Conflict(f"the blog in {self.region} is the primary (epoch {self.state.epoch})")
            raise errors.Unavailable(
                "no other region answers as the primary; promote one (`bookstore blog promote REGION`)"
            )
        peer = self.peers.get(primary)
        if peer is None:
            raise errors.Unavailable(f"the primary {primary} is not a peer of {self.region}")
        snapshot = await peer.call("snapshot", {}, timeout_s=60.0)
        async with self._lock:
            state, diverged = await asyncio.to_thread(self.store.resync, snapshot)
            self.state = state
        self._last_applied_ms = None
        self._changed()
        self.metrics.epoch_changes.labels("resynced").inc()
        log.warning(
            "region=%s event=blog_rejoined primary=%s epoch=%d head=%d diverged=%d",
            self.region,
            primary,
            state.epoch,
            state.head_lsn,
            diverged,
        )
        return {
            **state.json(),
            "diverged": diverged,
            "divergedTotal": await asyncio.to_thread(self.store.diverged_count),
        }

    # status ----------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        st = self.state
        now = self.clock.now_ms()
        return {
            **{k: v for k, v in st.json().items() if k != "history"},
            "headLsn": self.store.head()[0],
            "confirmed": self.confirmed.is_set(),
            "lagEntries": self.lag_entries(),
            "lagSeconds": self.lag_seconds(),
            "lag": self.lags.summary(now).get(st.primary_region),
            "diverged": self.store.diverged_count(),
            "peers": {
                r: {
                    "connected": v.connected,
                    "epoch": v.epoch,
                    "primaryRegion": v.primary,
                    "headLsn": v.head_lsn,
                    "heardMsAgo": None if v.heard_ms is None else now - v.heard_ms,
                    "error": v.error,
                }
                for r, v in self.views.items()
            },
            "history": [h.json() for h in st.history],
        }

    # endpoints -------------------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        """The endpoints under /replication/blog/ (the region puts PeerAuthMiddleware in front of them)."""
        return blog_routes(self)


def _with_applied(state: BlogState, lsn: int) -> BlogState:
    return BlogState(
        state.region,
        state.epoch,
        state.read_only,
        state.primary_region,
        max(state.applied_lsn, lsn),
        max(state.head_lsn, lsn),
        state.needs_rejoin,
        state.history,
    )


def _announce(state: BlogState) -> dict[str, Any]:
    return {
        "epoch": state.epoch,
        "primaryRegion": state.primary_region,
        "readOnly": state.read_only,
        "history": [h.json() for h in state.history],
    }


def _line(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload) + b"\n"


# -- the HTTP endpoints --------------------------------------------------------------------------------------


class _FollowRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    region: StrictStr = Field(max_length=64)
    epoch: StrictInt = Field(ge=1)
    primaryRegion: StrictStr = Field(max_length=64)
    readOnly: bool
    history: list[dict[str, Any]] = Field(default_factory=list, max_length=10_000)
    after: StrictInt | None = Field(default=None, ge=0)
    afterEpoch: StrictInt = Field(default=0, ge=0)
    streamMs: StrictInt = Field(default=int(STREAM_S * 1000), ge=0, le=300_000)


class _PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    force: StrictBool = False
    minEpoch: StrictInt = Field(default=0, ge=0)
    waitForLsn: StrictInt | None = Field(default=None, ge=0)
    timeoutS: float = Field(default=SWITCHOVER_TIMEOUT_S, gt=0, le=600)


class _SwitchoverRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: StrictStr = Field(max_length=64)
    timeoutS: float = Field(default=SWITCHOVER_TIMEOUT_S, gt=0, le=600)


class _Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


_STATUS: Final[dict[type[errors.BookstoreError], int]] = {
    errors.ValidationError: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.Unavailable: 503,
}


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def blog_routes(replication: BlogReplication) -> list[Route]:
    """POST follow (NDJSON stream), GET state, POST snapshot|promote|switchover|rejoin, GET diverged."""

    def signer(request: Request) -> str:
        region = getattr(request.state, "peer_region", None)
        if region != OPERATOR and region not in replication.regions:
            raise errors.Forbidden(f"{region!r} is neither a region of this deployment nor the operator")
        return str(region)

    async def parsed(request: Request, model: type[BaseModel]) -> Any:
        raw = await request.body()
        try:
            return model.model_validate(orjson.loads(raw or b"{}"))
        except (orjson.JSONDecodeError, PydanticError) as exc:
            raise errors.ValidationError(f"malformed request: {str(exc)[:300]}") from None

    async def follow(request: Request) -> Response:
        body: _FollowRequest = await parsed(request, _FollowRequest)
        if body.region != signer(request):
            raise errors.Forbidden("a region may only follow the blog as itself")
        if body.primaryRegion not in replication.regions:
            raise errors.ValidationError(f"unknown primary region {body.primaryRegion!r}")
        await replication.adopt(body.epoch, body.primaryRegion, parse_history(body.history), body.region)
        return StreamingResponse(
            replication.serve_follow(body), media_type=NDJSON, headers={"Cache-Control": "no-store"}
        )

    async def state(request: Request) -> Response:
        signer(request)
        return _json((await replication.refresh()).json())

    async def snapshot(request: Request) -> Response:
        signer(request)
        await parsed(request, _Empty)
        return _json(await asyncio.to_thread(replication.store.snapshot))

    async def promote(request: Request) -> Response:
        signer(request)
        body: _PromoteRequest = await parsed(request, _PromoteRequest)
        started = time.monotonic()
        state = await replication.promote(
            min_epoch=body.minEpoch, wait_for_lsn=body.waitForLsn, timeout_s=body.timeoutS, force=body.force
        )
        return _json({**state.json(), "tookMs": round((time.monotonic() - started) * 1000, 1)})

    async def switchover(request: Request) -> Response:
        signer(request)
        body: _SwitchoverRequest = await parsed(request, _SwitchoverRequest)
        return _json(await replication.switchover(body.target, body.timeoutS))

    async def rejoin(request: Request) -> Response:
        signer(request)
        await parsed(request, _Empty)
        return _json(await replication.rejoin())

    async def diverged(request: Request) -> Response:
        signer(request)
        try:
            limit = int(request.query_params.get("limit", "1000"))
        except ValueError:
            raise errors.ValidationError("limit must be an integer") from None
        if not 1 <= limit <= 100_000:
            raise errors.ValidationError("limit must be between 1 and 100000")
        records = await asyncio.to_thread(replication.store.diverged, limit)
        return _json(
            {
                "region": replication.region,
                "total": await asyncio.to_thread(replication.store.diverged_count),
                "diverged": [d.json() for d in records],
            }
        )

    def guarded(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                response: Response = await handler(request)
                return response
            except errors.BookstoreError as exc:
                status = next((s for cls, s in _STATUS.items() if isinstance(exc, cls)), 500)
                if status == 500:
                    log.error(
                        "region=%s event=blog_endpoint_failed error=%s", replication.region, exc.message
                    )
                return _json({"error": exc.code, "message": exc.message}, status)

        return endpoint

    return [
        Route(f"{PREFIX}/follow", guarded(follow), methods=["POST"]),
        Route(f"{PREFIX}/state", guarded(state), methods=["GET", "POST"]),
        Route(f"{PREFIX}/snapshot", guarded(snapshot), methods=["POST"]),
        Route(f"{PREFIX}/promote", guarded(promote), methods=["POST"]),
        Route(f"{PREFIX}/switchover", guarded(switchover), methods=["POST"]),
        Route(f"{PREFIX}/rejoin", guarded(rejoin), methods=["POST"]),
        Route(f"{PREFIX}/diverged", guarded(diverged), methods=["GET"]),
    ]


# -- wiring into a region ------------------------------------------------------------------------------------


def build_blog_replication(
    repository: BlogRepository,
    *,
    region: str,
    peer_urls: Mapping[str, str],
    secret: str,
    clock: Clock,
    registry: CollectorRegistry | None,
    confirm_peers: Collection[str] | None = None,
) -> BlogReplication:
    """A region's blog replication: `peer_urls` are the peers' API base URLs through the links."""
    peers = [
        HttpBlogPeer(r, url, auth=PeerAuth(secret, region, clock, destination=r))
        for r, url in peer_urls.items()
        if r != region
    ]
    return BlogReplication(
        BlogStore(repository, clock),
        peers,
        clock=clock,
        metrics=BlogMetrics(registry, region),
        regions=set(peer_urls) | {region},
        confirm_peers=confirm_peers,
    )


# -- the operator's side (the `bookstore blog` commands) -----------------------------------------------------


def operator_secret(data_dir: Path) -> str:
    """The deployment's secret for signing operator requests: BOOKSTORE_SECRET or DATA_DIR/secret."""
    import os

    from bookstore.runtime.secret import ENV, FILE

    value = os.environ.get(ENV) or ""
    if not value:
        try:
            value = (data_dir / FILE).read_text(encoding="ascii").strip()
        except OSError:
            value = ""
    if not value:
        raise errors.Unauthorized(
            f"no deployment secret: set {ENV} or pass the --data-dir the system runs with (it holds '{FILE}')"
        )
    return value


class Operator:
    """Signed requests of the operator (region id "operator") to the regions' blog endpoints, direct."""

    def __init__(
        self, api_urls: Mapping[str, str], secret: str, clock: Clock, timeout_s: float = 60.0
    ) -> None:
        self.api_urls = dict(api_urls)
        self.client = httpx.Client(auth=PeerAuth(secret, OPERATOR, clock), timeout=timeout_s)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Operator:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(
        self, region: str, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        try:
            url = self.api_urls[region]
        except KeyError:
            raise errors.ValidationError(
                f"unknown region {region!r}; known: {', '.join(self.api_urls)}"
            ) from None
        try:
            response = self.client.request(
                method,
                f"{url}{PREFIX}/{path}",
                content=None if body is None else orjson.dumps(body),
                headers={DESTINATION_HEADER: region},
            )
        except httpx.HTTPError as exc:
            raise errors.Unavailable(f"{region} does not answer at {url} ({type(exc).__name__})") from None
        try:
            parsed = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            parsed = {"message": response.text[:300]}
        if response.status_code != 200:
            raise PeerRefused(region, response.status_code, parsed)
        if not isinstance(parsed, dict):
            raise errors.ValidationError(f"{region} answered with something not an object")
        return parsed

    def states(self) -> dict[str, dict[str, Any] | None]:
        out: dict[str, dict[str, Any] | None] = {}
        for region in self.api_urls:
            try:
                out[region] = self.request(region, "GET", "state")
            except errors.BookstoreError:
                out[region] = None
        return out

    def primary(self) -> str:
        """The writable primary of the highest epoch among the regions that answer."""
        answering = [s for s in self.states().values() if s is not None]
        primaries = [s for s in answering if s.get("role") == "primary"]
        if not primaries:
            raise errors.Unavailable(
                "no region answers as the blog's primary; promote one with `bookstore blog promote REGION`"
            )
        return str(max(primaries, key=lambda s: epoch_rank(int(s["epoch"]), str(s["region"])))["region"])

    def promote(self, region: str, *, force: bool = False) -> dict[str, Any]:
        """Promotes `region`; without `force` it must reach a majority of the regions (409 otherwise)."""
        return self.request(region, "POST", "promote", {"force": True} if force else {})

    def rejoin(self, region: str) -> dict[str, Any]:
        return self.request(region, "POST", "rejoin", {})

    def switchover(self, target: str, timeout_s: float = SWITCHOVER_TIMEOUT_S) -> dict[str, Any]:
        primary = self.primary()
        return self.request(primary, "POST", "switchover", {"target": target, "timeoutS": timeout_s})

    def diverged(self, region: str, limit: int = 1000) -> dict[str, Any]:
        return self.request(region, "GET", f"diverged?limit={limit}")


def overview(statuses: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Any]:
    """The blog across regions, from each region's /status "blog" section: primary, epoch, replicas."""
    known = {r: s for r, s in statuses.items() if s}
    primaries = [s for s in known.values() if s.get("role") == "primary"]
    top = max(primaries, key=lambda s: epoch_rank(int(s.get("epoch", 0)), str(s.get("region"))), default=None)
    return {
        "primary": None if top is None else top.get("region"),
        "epoch": max((int(s.get("epoch", 0)) for s in known.values()), default=None),
        "regions": [
            {
                "regionId": r,
                "reachable": s is not None,
                "role": None if s is None else s.get("role"),
                "epoch": None if s is None else s.get("epoch"),
                "primaryRegion": None if s is None else s.get("primaryRegion"),
                "appliedLsn": None if s is None else s.get("appliedLsn"),
                "headLsn": None if s is None else s.get("headLsn"),
                "lagEntries": None if s is None else s.get("lagEntries"),
                "lagSeconds": None if s is None else s.get("lagSeconds"),
                "needsRejoin": None if s is None else s.get("needsRejoin"),
                "diverged": None if s is None else s.get("diverged"),
            }
            for r, s in statuses.items()
        ],
    }


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def render_overview(blog: Mapping[str, Any]) -> None:
    """`bookstore status`'s table of the blog database: each region's role, epoch and lag."""
    from rich.console import Console
    from rich.table import Table

    table = Table(
        "region",
        "role",
        "epoch",
        "lsn",
        "lag entries",
        "lag s",
        "diverged",
        title=f"Blog database (primary {blog.get('primary') or 'none'}, epoch {blog.get('epoch')})",
    )
    for r in blog.get("regions", []):
        role = r["role"] or "[red]unreachable[/red]"
        if r.get("needsRejoin"):
            role += " [red](needs rejoin)[/red]"
        table.add_row(
            r["regionId"],
            role,
            "" if r["epoch"] is None else str(r["epoch"]),
            _text(r["headLsn"] if r["role"] in ("primary", "fenced") else r["appliedLsn"]),
            "" if r["lagEntries"] is None else str(r["lagEntries"]),
            "" if r["lagSeconds"] is None else f"{r['lagSeconds']:.3f}",
            "" if r["diverged"] is None else str(r["diverged"]),
        )
    Console().print(table)


def render_diverged(reports: Mapping[str, Mapping[str, Any]]) -> None:
    """`bookstore blog diverged`: each region's diverged writes, with the post's title where there is one."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        "region", "lsn", "epoch", "written", "table", "op", "key", "title / body", "kept since epoch",
        title="Diverged writes (accepted by a former primary after the fork; kept, not replicated)",
    )  # fmt: skip
    for region, report in reports.items():
        if "error" in report:
            table.add_row(region, "", "", "", "", "", "", f"[red]{escape(str(report['error']))}[/red]", "")
            continue
        for d in report.get("diverged", []):
            row = d.get("row") or {}
            what = str(row.get("title") or row.get("body") or row.get("tag") or "")[:60]
            written = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(d["writtenMs"]) / 1000))
            table.add_row(
                region,
                str(d["lsn"]),
                str(d["epoch"]),
                written,
                d["table"],
                d["op"],
                escape(_dumps(d["pk"])),
                escape(what),
                f"{d['newEpoch']} ({d['newPrimary']})",
            )
    Console().print(table)
