"""The blog's rows over the SqlDatabase port: one write path that logs every row change, and the reads."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal, TypeVar, cast

import orjson

from bookstore.blog.port import Param, SqlDatabase, SqlSession
from bookstore.blog.posts import Comment, Post, slugify, unique_slug
from bookstore.blog.schema import migrate
from bookstore.domain.errors import Conflict, NotFound, StorageError, Unavailable, ValidationError
from bookstore.kernel.clock import SystemClock
from bookstore.ports import Clock

log = logging.getLogger("bookstore.blog")

T = TypeVar("T")
Op = Literal["INSERT", "UPDATE", "DELETE"]
OPS: Final[tuple[Op, ...]] = ("INSERT", "UPDATE", "DELETE")

# The replicated tables: their columns, and the columns of their primary key. A change record names
# one of these tables, and a replica applies nothing else (its log may come over the network).
COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "blog_posts": (
        "id", "slug", "title", "body", "body_html", "excerpt", "author_id", "author_name", "tags",
        "book_ids", "published_ms", "modified_ms",
    ),
    "blog_post_tags": ("post_id", "tag"),
    "blog_comments": ("id", "post_id", "author_id", "author_name", "body", "body_html", "created_ms"),
}  # fmt: skip
PRIMARY_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "blog_posts": ("id",),
    "blog_post_tags": ("post_id", "tag"),
    "blog_comments": ("id",),
}
_POST_COLUMNS: Final = ", ".join(COLUMNS["blog_posts"])
_COMMENT_COLUMNS: Final = ", ".join(COLUMNS["blog_comments"])
# The row-change log's columns, in the order change_from_row reads them.
CHANGE_COLUMNS: Final = "lsn, epoch, region, tbl, pk, op, row_image, written_ms"

# Names of the region's replication state in blog_meta (never replicated: each region has its own).
META_EPOCH: Final = "epoch"
META_READ_ONLY: Final = "read_only"
META_PRIMARY: Final = "primary_region"
META_APPLIED: Final = "applied_lsn"


@dataclass(frozen=True)
class BlogMeta:
    """A region's replication state: the epoch it knows, whether it refuses writes, who the primary is."""

    epoch: int
    read_only: bool
    primary_region: str
    applied_lsn: int = 0


@dataclass(frozen=True)
class RowChange:
    """One record of the row-change log: the whole new row for INSERT and UPDATE, None for DELETE."""

    lsn: int
    epoch: int
    region: str
    table: str
    pk: dict[str, Any]
    op: Op
    row: dict[str, Any] | None
    written_ms: int


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _post(row: Sequence[Any]) -> Post:
    (id_, slug, title, body, body_html, excerpt, author_id, author_name, tags, books, published, modified) = (
        row
    )
    return Post(
        id=int(id_),
        slug=slug,
        title=title,
        body=body,
        body_html=body_html,
        excerpt=excerpt,
        author_id=author_id,
        author_name=author_name,
        tags=tuple(orjson.loads(tags)),
        book_ids=tuple(orjson.loads(books)),
        published_ms=int(published),
        modified_ms=int(modified),
    )


def post_row(post: Post) -> dict[str, Any]:
    """The blog_posts row of a post (tags and book ids as JSON arrays)."""
    return {
        "id": post.id,
        "slug": post.slug,
        "title": post.title,
        "body": post.body,
        "body_html": post.body_html,
        "excerpt": post.excerpt,
        "author_id": post.author_id,
        "author_name": post.author_name,
        "tags": _json(list(post.tags)),
        "book_ids": _json(list(post.book_ids)),
        "published_ms": post.published_ms,
        "modified_ms": post.modified_ms,
    }


def _comment(row: Sequence[Any]) -> Comment:
    id_, post_id, author_id, author_name, body, body_html, created = row
    return Comment(
        id=int(id_),
        post_id=int(post_id),
        author_id=author_id,
        author_name=author_name,
        body=body,
        body_html=body_html,
        created_ms=int(created),
    )


def change_from_row(row: Sequence[Any]) -> RowChange:
    """A change record from a row of blog_changelog read as CHANGE_COLUMNS."""
    lsn, epoch, region, table, pk, op, image, written_ms = row
    return RowChange(
        lsn=int(lsn),
        epoch=int(epoch),
        region=region,
        table=table,
        pk=orjson.loads(pk),
        op=op,
        row=None if image is None else orjson.loads(image),
        written_ms=int(written_ms),
    )


def _where(table: str) -> str:
    return " AND ".join(f"{c} = ?" for c in PRIMARY_KEYS[table])


def _pk_of(table: str, row: Mapping[str, Any]) -> dict[str, Any]:
    return {c: row[c] for c in PRIMARY_KEYS[table]}


def _check_row(table: str, row: Mapping[str, Any]) -> None:
    if table not in COLUMNS:
        raise ValidationError(f"{table!r} is not a blog table")
    unknown = set(row) - set(COLUMNS[table])
    missing = set(COLUMNS[table]) - set(row)
    if unknown or missing:
        raise ValidationError(f"row of {table}: unknown {sorted(unknown)}, missing {sorted(missing)}")


def _insert_row(tx: SqlSession, table: str, row: Mapping[str, Any]) -> int | None:
    columns = [c for c in COLUMNS[table] if c in row]
    done = tx.execute(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
        [cast(Param, row[c]) for c in columns],
    )
    return done.last_id


class RowWriter:
    """The row operations of one blog write; each writes its row and appends its change record.

    Lives only inside `BlogRepository.write`, in that write's transaction, so the rows and their log
    records commit together or not at all, in the order the operations ran.
    """

    def __init__(self, tx: SqlSession, epoch: int, region: str, now_ms: int) -> None:
        self.tx = tx
        self.epoch = epoch
        self.region = region
        self.now_ms = now_ms
        self.lsns: list[int] = []

    def query(self, sql: str, params: Sequence[Param] = ()) -> list[tuple[Any, ...]]:
        return self.tx.query(sql, params)

    def insert(self, table: str, row: Mapping[str, Any]) -> dict[str, Any]:
        """Inserts `row` (an auto-increment `id` may be left out); returns the row as stored."""
        full = dict(row)
        if "id" in COLUMNS[table] and full.get("id") is None:
            full.pop("id", None)
            generated = _insert_row(self.tx, table, full)
            if generated is None:
                raise StorageError(f"inserting into {table} generated no id")
            full = {"id": generated, **full}
        else:
            _insert_row(self.tx, table, full)
        _check_row(table, full)
        self._log(table, _pk_of(table, full), "INSERT", full)
        return full

    def update(self, table: str, row: Mapping[str, Any]) -> bool:
        """Replaces the row with `row`'s key by `row` (all columns); False when there is none."""
        _check_row(table, row)
        pk = _pk_of(table, row)
        columns = [c for c in COLUMNS[table] if c not in pk]
        done = self.tx.execute(
            f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in columns)} WHERE {_where(table)}",
            [row[c] for c in columns] + list(pk.values()),
        )
        if done.rowcount == 0:
            return False
        self._log(table, pk, "UPDATE", dict(row))
        return True

    def delete(self, table: str, pk: Mapping[str, Any]) -> bool:
        """Deletes the row with key `pk`; False when there is none."""
        if table not in PRIMARY_KEYS or set(pk) != set(PRIMARY_KEYS[table]):
            raise ValidationError(f"{dict(pk)!r} is not a key of {table!r}")
        key = _pk_of(table, pk)
        done = self.tx.execute(f"DELETE FROM {table} WHERE {_where(table)}", list(key.values()))
        if done.rowcount == 0:
            return False
        self._log(table, key, "DELETE", None)
        return True

    def _log(self, table: str, pk: dict[str, Any], op: Op, row: dict[str, Any] | None) -> None:
        done = self.tx.execute(
            "INSERT INTO blog_changelog (epoch, region, tbl, pk, op, row_image, written_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self.epoch, self.region, table, _json(pk), op, None if row is None else _json(row), self.now_ms),
        )
        if done.last_id is None:
            raise StorageError("appending to blog_changelog generated no lsn")
        self.lsns.append(done.last_id)


class BlogRepository:
    """Posts, tags and comments in a SqlDatabase, and the log of every change made to them.

    Every write goes through `write`: one transaction that first reads this region's replication state
    with a lock (so writes are serialised and the log's lsn order is their commit order on every engine),
    refuses with Unavailable when the region is read-only, then runs the row operations of a RowWriter,
    each of which appends its change record. `changes` reads that log; `apply` replays another region's
    records on a replica, rows, log records and position in one transaction.
    """

    def __init__(self, db: SqlDatabase, *, region: str, clock: Clock | None = None) -> None:
        if not region:
            raise ValueError("region is required")
        self.db = db
        self.region = region
        self.clock: Clock = clock if clock is not None else SystemClock()
        # Set by the region's replication (bookstore.replication.blog): a gate every write passes before
        # its transaction (a primary that restarted waits there until its peers confirmed its epoch), and
        # callbacks run after each write commits (they wake the streams to the replicas at once), and a
        # wait before the write returns, given its first and last lsn (until the streams have sent it).
        self.write_gate: Callable[[], None] | None = None
        self.listeners: list[Callable[[], None]] = []
        self.before_acknowledging: Callable[[int, int], None] | None = None

    @classmethod
    def open(
        cls, db: SqlDatabase, *, region: str, primary_region: str, clock: Clock | None = None
    ) -> BlogRepository:
        """Migrates the schema and sets the replication state on first use (kept as it is afterwards).

        On first use the epoch is 1, `primary_region` is the primary and every other region read-only.
        """
        migrate(db)
        repository = cls(db, region=region, clock=clock)
        repository.ensure_meta(primary_region)
        return repository

    # -- replication state -------------------------------------------------------------------------------

    def _meta_sql(self) -> str:
        # MySQL reads the latest committed rows and locks them only when asked; SQLite's write transaction
        # already holds the database's single write lock.
        lock = " FOR UPDATE" if self.db.dialect == "mysql" else ""
        return f"SELECT name, value FROM blog_meta{lock}"

    @staticmethod
    def _parse_meta(rows: Sequence[tuple[Any, ...]]) -> BlogMeta | None:
        values = {str(name): str(value) for name, value in rows}
        if META_EPOCH not in values:
            return None
        return BlogMeta(
            epoch=int(values[META_EPOCH]),
            read_only=values.get(META_READ_ONLY) == "1",
            primary_region=values.get(META_PRIMARY, ""),
            applied_lsn=int(values.get(META_APPLIED, "0")),
        )

    def read_meta(self, tx: SqlSession) -> BlogMeta | None:
        """The replication state read in `tx`, locked against concurrent writers (None before any)."""
        return self._parse_meta(tx.query(self._meta_sql()))

    def ensure_meta(self, primary_region: str) -> BlogMeta:
        """The replication state, created (epoch 1, `primary_region` primary) when there is none yet."""
        if not primary_region:
            raise ValueError("primary_region is required")
        with self.db.transaction() as tx:
            meta = self.read_meta(tx)
            if meta is not None:
                return meta
            meta = BlogMeta(epoch=1, read_only=self.region != primary_region, primary_region=primary_region)
            self.store_meta(tx, meta)
        log.info(
            "region=%s event=blog_meta_created epoch=1 primary=%s read_only=%s",
            self.region,
            primary_region,
            meta.read_only,
        )
        return meta

    def refusal(self, meta: BlogMeta) -> Unavailable:
        """The error a write to this read-only region raises: it names the primary to write to."""
        return Unavailable(
            f"the blog in {self.region} is a read-only replica; "
            f"write to the primary region {meta.primary_region}"
        )

    def meta(self) -> BlogMeta:
        meta = self._parse_meta(self.db.query("SELECT name, value FROM blog_meta"))
        if meta is None:
            raise StorageError("the blog has no replication state yet; open it with BlogRepository.open")
        return meta

    def set_meta(self, *, epoch: int, read_only: bool, primary_region: str) -> BlogMeta:
        """Sets the replication state in one transaction; the epoch never goes back (Conflict)."""
        if not primary_region:
            raise ValidationError("primary_region is required")
        with self.db.transaction() as tx:
            current = self.read_meta(tx)
            if current is not None and epoch < current.epoch:
                raise Conflict(f"epoch {epoch} is older than this region's epoch {current.epoch}")
            applied = 0 if current is None else current.applied_lsn
            meta = BlogMeta(epoch, read_only, primary_region, applied)
            self.store_meta(tx, meta)
        log.info(
            "region=%s event=blog_meta_set epoch=%d primary=%s read_only=%s",
            self.region,
            epoch,
            primary_region,
            read_only,
        )
        return meta

    @staticmethod
    def store_meta(tx: SqlSession, meta: BlogMeta) -> None:
        """Writes the replication state in `tx` (read it with read_meta in the same transaction first)."""
        values = {
            META_EPOCH: str(meta.epoch),
            META_READ_ONLY: "1" if meta.read_only else "0",
            META_PRIMARY: meta.primary_region,
            META_APPLIED: str(meta.applied_lsn),
        }
        for name, value in values.items():
            if tx.execute("UPDATE blog_meta SET value = ? WHERE name = ?", (value, name)).rowcount == 0:
                tx.execute("INSERT INTO blog_meta (name, value) VALUES (?, ?)", (name, value))

    # -- the write path --------------------------------------------------------------------------------------

    def write(self, operations: Callable[[RowWriter], T]) -> T:
        """Runs `operations` as one logged write; raises Unavailable on a read-only region.

        Nothing is written (rows or log) when `operations` raises.
        """
        if self.write_gate is not None:
            self.write_gate()
        try:
            with self.db.transaction() as tx:
                meta = self.read_meta(tx)
                if meta is None:
                    raise StorageError(
                        "the blog has no replication state yet; open it with BlogRepository.open"
                    )
                if meta.read_only:
                    raise self.refusal(meta)
                writer = RowWriter(tx, meta.epoch, self.region, self.clock.now_ms())
                result = operations(writer)
        except Unavailable:
            # A read-only MySQL server refuses even the locking read: name the primary when we know it.
            known = self._parse_meta(self.db.query("SELECT name, value FROM blog_meta"))
            if known is not None and known.read_only:
                raise self.refusal(known) from None
            raise
        for listener in self.listeners:
            listener()
        if self.before_acknowledging is not None and writer.lsns:
            self.before_acknowledging(writer.lsns[0], writer.lsns[-1])
        return result

    def insert_post(self, post: Post, *, explicit_slug: bool) -> Post:
        """Stores a new post (its `id` is ignored and generated). A derived slug gets a -N suffix when
        taken; an explicit slug that is taken raises Conflict."""

        def operations(w: RowWriter) -> Post:
            slug = self._free_slug(w, post.slug, explicit=explicit_slug, post_id=None)
            row = w.insert("blog_posts", {**post_row(post), "id": None, "slug": slug})
            for tag in post.tags:
                w.insert("blog_post_tags", {"post_id": row["id"], "tag": tag})
            return _post([row[c] for c in COLUMNS["blog_posts"]])

        return self.write(operations)

    def update_post(self, post: Post, *, explicit_slug: bool) -> Post:
        """Replaces the stored post `post.id` (NotFound when gone), its tag rows following its tags."""

        def operations(w: RowWriter) -> Post:
            rows = w.query(f"SELECT {_POST_COLUMNS} FROM blog_posts WHERE id = ?", (post.id,))
            if not rows:
                raise NotFound(f"no post with id {post.id}")
            old = _post(rows[0])
            slug = post.slug
            if slug != old.slug:
                slug = self._free_slug(w, slug, explicit=explicit_slug, post_id=post.id)
            new = replace(post, slug=slug)
            w.update("blog_posts", post_row(new))
            for tag in old.tags:
                if tag not in new.tags:
                    w.delete("blog_post_tags", {"post_id": post.id, "tag": tag})
            for tag in new.tags:
                if tag not in old.tags:
                    w.insert("blog_post_tags", {"post_id": post.id, "tag": tag})
            return new

        return self.write(operations)

    def delete_post(self, post_id: int) -> Post:
        """Deletes a post with its tags and comments; NotFound when there is no such post."""

        def operations(w: RowWriter) -> Post:
            rows = w.query(f"SELECT {_POST_COLUMNS} FROM blog_posts WHERE id = ?", (post_id,))
            if not rows:
                raise NotFound(f"no post with id {post_id}")
            old = _post(rows[0])
            for (comment_id,) in w.query(
                "SELECT id FROM blog_comments WHERE post_id = ? ORDER BY id", (post_id,)
            ):
                w.delete("blog_comments", {"id": int(comment_id)})
            for tag in old.tags:
                w.delete("blog_post_tags", {"post_id": post_id, "tag": tag})
            w.delete("blog_posts", {"id": post_id})
            return old

        return self.write(operations)

    def insert_comment(self, comment: Comment) -> Comment:
        """Stores a new comment (id generated) on an existing post; NotFound when the post is gone."""

        def operations(w: RowWriter) -> Comment:
            if not w.query("SELECT id FROM blog_posts WHERE id = ?", (comment.post_id,)):
                raise NotFound(f"no post with id {comment.post_id}")
            row = w.insert(
                "blog_comments",
                {
                    "id": None,
                    "post_id": comment.post_id,
                    "author_id": comment.author_id,
                    "author_name": comment.author_name,
                    "body": comment.body,
                    "body_html": comment.body_html,
                    "created_ms": comment.created_ms,
                },
            )
            return _comment([row[c] for c in COLUMNS["blog_comments"]])

        return self.write(operations)

    @staticmethod
    def _free_slug(w: RowWriter, slug: str, *, explicit: bool, post_id: int | None) -> str:
        if explicit:
            rows = w.query("SELECT id FROM blog_posts WHERE slug = ?", (slug,))
            if rows and int(rows[0][0]) != post_id:
                raise Conflict(f"the slug {slug!r} belongs to another post; choose another")
            return slug
        base = slugify(slug) if slug else "post"
        taken = [
            r[0]
            for r in w.query("SELECT slug FROM blog_posts WHERE slug = ? OR slug LIKE ?", (base, base + "-%"))
        ]
        return unique_slug(base, taken)

    # -- the log and replicas ------------------------------------------------------------------------------

    def changes(self, after: int = 0, *, limit: int = 100) -> list[RowChange]:
        """Change records with lsn > `after`, in lsn order (the order they committed), at most `limit`."""
        if limit < 1:
            raise ValidationError("limit must be at least 1")
        rows = self.db.query(
            f"SELECT {CHANGE_COLUMNS} FROM blog_changelog WHERE lsn > ? ORDER BY lsn LIMIT ?", (after, limit)
        )
        return [change_from_row(r) for r in rows]

    def head_lsn(self) -> int:
        """The lsn of the newest change record (0 when there is none)."""
        rows = self.db.query("SELECT MAX(lsn) FROM blog_changelog")
        return int(rows[0][0] or 0) if rows else 0

    def apply(
        self, changes: Sequence[RowChange], *, epoch: int | None = None, primary: str | None = None
    ) -> int:
        """Replays another region's change records on this read-only replica; returns how many applied.

        In one transaction: each record with an lsn past this replica's position sets its row (INSERT and
        UPDATE store the whole image, DELETE removes the key), is appended to the local log with its own
        lsn, epoch, region and time, and moves the position. Records at or before the position are skipped,
        so applying a batch twice changes nothing. A writable region refuses (Conflict): a primary never
        takes another's log. With `epoch` (and `primary`), a replica whose state moved on meanwhile (another
        epoch or primary) refuses too (Conflict), checked in the same transaction.
        """
        applied = 0
        with self.db.transaction() as tx:
            meta = self.read_meta(tx)
            if meta is None or not meta.read_only:
                raise Conflict(
                    f"the blog in {self.region} takes writes; only a read-only replica applies a log"
                )
            if epoch is not None and (meta.epoch != epoch or meta.primary_region != primary):
                raise Conflict(
                    f"the blog in {self.region} follows {meta.primary_region} at epoch {meta.epoch}, "
                    f"not {primary} at epoch {epoch}"
                )
            position = meta.applied_lsn
            for change in sorted(changes, key=lambda c: c.lsn):
                if change.lsn <= position:
                    continue
                self._apply_one(tx, change)
                position = change.lsn
                applied += 1
            if applied:
                self.store_meta(tx, BlogMeta(meta.epoch, meta.read_only, meta.primary_region, position))
        return applied

    @staticmethod
    def _apply_one(tx: SqlSession, change: RowChange) -> None:
        table = change.table
        if table not in PRIMARY_KEYS or change.op not in OPS:
            raise ValidationError(f"change {change.lsn}: unknown table {table!r} or op {change.op!r}")
        if set(change.pk) != set(PRIMARY_KEYS[table]):
            raise ValidationError(f"change {change.lsn}: {change.pk!r} is not a key of {table}")
        key = _pk_of(table, change.pk)
        tx.execute(f"DELETE FROM {table} WHERE {_where(table)}", list(key.values()))
        if change.op != "DELETE":
            if change.row is None:
                raise ValidationError(f"change {change.lsn}: {change.op} without a row image")
            _check_row(table, change.row)
            if _pk_of(table, change.row) != key:
                raise ValidationError(f"change {change.lsn}: the row image does not have the key {key!r}")
            _insert_row(tx, table, change.row)
        tx.execute(
            f"INSERT INTO blog_changelog ({CHANGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                change.lsn,
                change.epoch,
                change.region,
                table,
                _json(key),
                change.op,
                None if change.row is None else _json(change.row),
                change.written_ms,
            ),
        )

    # -- reads -----------------------------------------------------------------------------------------------

    def post(self, post_id: int) -> Post | None:
        rows = self.db.query(f"SELECT {_POST_COLUMNS} FROM blog_posts WHERE id = ?", (post_id,))
        return _post(rows[0]) if rows else None

    def post_by_slug(self, slug: str) -> Post | None:
        rows = self.db.query(f"SELECT {_POST_COLUMNS} FROM blog_posts WHERE slug = ?", (slug,))
        return _post(rows[0]) if rows else None

    @staticmethod
    def _tag_filter(tags: Sequence[str]) -> tuple[str, list[Param]]:
        if not tags:
            return "", []
        marks = ", ".join("?" for _ in tags)
        return f" WHERE id IN (SELECT post_id FROM blog_post_tags WHERE tag IN ({marks}))", list(tags)

    def posts(self, *, limit: int, offset: int = 0, tags: Sequence[str] = ()) -> list[Post]:
        """Posts newest first (by publication time, then id), having any of `tags` when given."""
        where, params = self._tag_filter(tags)
        rows = self.db.query(
            f"SELECT {_POST_COLUMNS} FROM blog_posts{where}"
            " ORDER BY published_ms DESC, id DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [_post(r) for r in rows]

    def count_posts(self, tags: Sequence[str] = ()) -> int:
        where, params = self._tag_filter(tags)
        return int(self.db.query(f"SELECT COUNT(*) FROM blog_posts{where}", params)[0][0])

    def comments(self, post_id: int | None, *, limit: int, offset: int = 0) -> list[Comment]:
        """Comments oldest first, of one post or of all."""
        where, params = ("", []) if post_id is None else (" WHERE post_id = ?", [post_id])
        rows = self.db.query(
            f"SELECT {_COMMENT_COLUMNS} FROM blog_comments{where} ORDER BY id LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [_comment(r) for r in rows]

    def count_comments(self, post_id: int | None) -> int:
        where, params = ("", []) if post_id is None else (" WHERE post_id = ?", [post_id])
        return int(self.db.query(f"SELECT COUNT(*) FROM blog_comments{where}", params)[0][0])
