"""The blog replication's state in the region's own database: epochs, history, diverged writes, re-sync.

Works on the SqlDatabase port through the repository's public API (its locked read of the replication
state, its write of it, its change records); the tables it owns are blog_epochs and blog_diverged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from bookstore.blog.port import Param, SqlDatabase, SqlSession
from bookstore.blog.repository import (
    CHANGE_COLUMNS,
    COLUMNS,
    PRIMARY_KEYS,
    BlogMeta,
    BlogRepository,
    RowChange,
    change_from_row,
)
from bookstore.domain import errors
from bookstore.ports import Clock
from bookstore.replication.blog.state import Adoption, BlogState, DivergedWrite, Epoch, epoch_rank
from bookstore.replication.blog.wire import change_json, dumps, parse_changes, parse_history

# Change records a stream or a read sends at once.
BATCH: Final = 500
META_NEEDS_REJOIN: Final = "needs_rejoin"
# Children before parents, so that a resync deletes in an order any foreign key would accept.
_TABLE_ORDER: Final = ("blog_post_tags", "blog_comments", "blog_posts")
_DIVERGED_COLUMNS: Final = (
    "id, lsn, epoch, region, tbl, pk, op, row_image, written_ms, detected_ms, new_epoch, new_primary"
)


class BlogStore:
    """The replication state of one region's blog database, each change one transaction.

    Works on the SqlDatabase port (SQLite in the regions). Every method that changes the epoch, the
    primary or read_only does it in the transaction that reads them, under the same lock as every write
    (BlogRepository.write), so no write slips between a decision and its effect.
    """

    def __init__(self, repository: BlogRepository, clock: Clock, *, record_first_epoch: bool = True) -> None:
        self.repository = repository
        self.db = repository.db
        self.region = repository.region
        self.clock = clock
        # On MariaDB blog_epochs replicates: only the writable primary records the first epoch there.
        if record_first_epoch:
            self._ensure_history()

    # reading ---------------------------------------------------------------------------------------------

    def _locked_meta(self, tx: SqlSession) -> BlogMeta:
        meta = self.repository.read_meta(tx)
        if meta is None:
            raise errors.StorageError("the blog has no replication state; open it with BlogRepository.open")
        return meta

    def _meta(self, tx: SqlSession) -> tuple[BlogMeta, bool]:
        return self._locked_meta(tx), self._needs_rejoin(tx)

    @staticmethod
    def _needs_rejoin(q: SqlSession | SqlDatabase) -> bool:
        rows = q.query("SELECT value FROM blog_meta WHERE name = ?", (META_NEEDS_REJOIN,))
        return bool(rows) and str(rows[0][0]) == "1"

    @staticmethod
    def _history(q: SqlSession | SqlDatabase) -> tuple[Epoch, ...]:
        rows = q.query("SELECT epoch, primary_region, fork_lsn, started_ms FROM blog_epochs ORDER BY epoch")
        return tuple(Epoch(int(e), str(p), int(f), int(s)) for e, p, f, s in rows)

    @staticmethod
    def _head(q: SqlSession | SqlDatabase) -> int:
        rows = q.query("SELECT MAX(lsn) FROM blog_changelog")
        return int(rows[0][0] or 0) if rows else 0

    def _state_of(self, q: SqlSession | SqlDatabase, meta: BlogMeta) -> BlogState:
        return BlogState(
            region=self.region,
            epoch=meta.epoch,
            read_only=meta.read_only,
            primary_region=meta.primary_region,
            applied_lsn=meta.applied_lsn,
            head_lsn=self._head(q),
            needs_rejoin=self._needs_rejoin(q),
            history=self._history(q),
        )

    def _state(self, tx: SqlSession) -> BlogState:
        return self._state_of(tx, self._locked_meta(tx))

    def state(self) -> BlogState:
        with self.db.transaction() as tx:
            return self._state(tx)

    def read_state(self) -> BlogState:
        """The state read without locking: a read-only MariaDB server refuses the locking read to an
        account without SUPER (its replication, not this store, changes it there)."""
        return self._state_of(self.db, self.repository.meta())

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
        BlogRepository.store_meta(tx, meta)
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
                    dumps(c.pk),
                    c.op,
                    None if c.row is None else dumps(c.row),
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
                    change_from_row(r)
                    for r in tx.query(
                        f"SELECT {CHANGE_COLUMNS} FROM blog_changelog WHERE lsn > ? ORDER BY lsn", (fork,)
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
            log_rows = tx.query(f"SELECT {CHANGE_COLUMNS} FROM blog_changelog ORDER BY lsn")
            return {
                **state.json(),
                "tables": tables,
                "changes": [change_json(change_from_row(r)) for r in log_rows],
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
            # Ranked, not just numbered: an epoch of the same number adopted while the snapshot was on its
            # way (from the other side of a partition) outranks the snapshot's, which would take us back.
            if epoch_rank(epoch, primary) < epoch_rank(state.epoch, state.primary_region):
                raise errors.Conflict(
                    f"the snapshot of {primary} is at epoch {epoch}, ranked below this region's epoch "
                    f"{state.epoch} of {state.primary_region}"
                )
            in_lineage = {(c.lsn, c.epoch, c.region) for c in theirs}
            mine = [
                change_from_row(r)
                for r in tx.query(f"SELECT {CHANGE_COLUMNS} FROM blog_changelog ORDER BY lsn")
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
                f"INSERT INTO blog_changelog ({CHANGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        c.lsn,
                        c.epoch,
                        c.region,
                        c.table,
                        dumps(c.pk),
                        c.op,
                        None if c.row is None else dumps(c.row),
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
