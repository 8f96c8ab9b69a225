"""BlogService: the Book Blog's use cases (read, publish, edit, delete, comment, seed) over its repository."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any, Final

import orjson

from bookstore.blog import markup
from bookstore.blog.posts import (
    PER_PAGE_DEFAULT,
    Comment,
    PageOf,
    Post,
    check_body,
    check_book_ids,
    check_comment,
    check_id,
    check_page,
    check_page_exists,
    check_slug,
    check_tags,
    check_title,
    display_name,
    parse_time,
    slugify,
)
from bookstore.blog.repository import BlogRepository
from bookstore.domain.errors import Conflict, Forbidden, NotFound
from bookstore.domain.users import Principal
from bookstore.ports import Clock

log = logging.getLogger("bookstore.blog")

AUTHOR_ROLE: Final = "author"
EDITORS_ID: Final = "bookstore-editors"
EDITORS_NAME: Final = "The Bookstore editors"
SEED_FILE: Final = "seed_posts.json"
COMMENTS_ON_PAGE: Final = 1000


@dataclass(frozen=True)
class BlogStatus:
    """What a region's blog is now: its epoch, whether it is a read-only replica, and of whom."""

    region: str
    epoch: int
    read_only: bool
    primary_region: str
    head_lsn: int
    applied_lsn: int


def seed_posts() -> list[dict[str, Any]]:
    """The seeded posts shipped with the package (src/bookstore/blog/seed_posts.json)."""
    data = resources.files("bookstore.blog").joinpath(SEED_FILE).read_bytes()
    posts = orjson.loads(data)
    if not isinstance(posts, list):
        raise ValueError(f"{SEED_FILE} must hold a list of posts")
    return posts


class BlogService:
    """The blog's use cases. Posts are written by users with the author role, each editing only their
    own; any signed-in user may comment. Every write goes through the repository's logged write path,
    so on a read-only replica it raises Unavailable naming the primary region.

    `book_name(book_id)` (optional) names a related book on the pages, e.g. from the catalog.
    """

    def __init__(
        self,
        repository: BlogRepository,
        *,
        clock: Clock | None = None,
        book_name: Callable[[str], str | None] | None = None,
    ) -> None:
        self.repository = repository
        self.clock: Clock = clock if clock is not None else repository.clock
        self._book_name = book_name

    @property
    def region(self) -> str:
        return self.repository.region

    def status(self) -> BlogStatus:
        meta = self.repository.meta()
        return BlogStatus(
            region=self.region,
            epoch=meta.epoch,
            read_only=meta.read_only,
            primary_region=meta.primary_region,
            head_lsn=self.repository.head_lsn(),
            applied_lsn=meta.applied_lsn,
        )

    def book_name(self, book_id: str) -> str | None:
        if self._book_name is None:
            return None
        try:
            return self._book_name(book_id)
        except NotFound:
            return None

    # -- reading ---------------------------------------------------------------------------------------------

    def list_posts(
        self, *, page: int = 1, per_page: int = PER_PAGE_DEFAULT, tags: Sequence[str] = ()
    ) -> PageOf[Post]:
        """Posts newest first, one page; with `tags`, those having any of them. Past the last page: 400."""
        page, per_page = check_page(page, per_page)
        wanted = check_tags(list(tags))
        total = self.repository.count_posts(wanted)
        check_page_exists(page, total, per_page)
        items = self.repository.posts(limit=per_page, offset=(page - 1) * per_page, tags=wanted)
        return PageOf(items, total, page, per_page)

    def get_post(self, post_id: int) -> Post:
        post = self.repository.post(check_id("post", post_id))
        if post is None:
            raise NotFound(f"no post with id {post_id}")
        return post

    def get_post_by_slug(self, slug: str) -> Post:
        post = self.repository.post_by_slug(slug)
        if post is None:
            raise NotFound(f"no post at /blog/posts/{slug:.100}")
        return post

    def post_page(self, slug: str) -> tuple[Post, list[Comment]]:
        """The post at `slug` and its comments, oldest first (at most COMMENTS_ON_PAGE)."""
        post = self.get_post_by_slug(slug)
        return post, self.repository.comments(post.id, limit=COMMENTS_ON_PAGE)

    def list_comments(
        self, post_id: int | None = None, *, page: int = 1, per_page: int = PER_PAGE_DEFAULT
    ) -> PageOf[Comment]:
        """Comments oldest first, of one post (NotFound when it does not exist) or of all."""
        page, per_page = check_page(page, per_page)
        if post_id is not None:
            self.get_post(post_id)
        total = self.repository.count_comments(post_id)
        check_page_exists(page, total, per_page)
        items = self.repository.comments(post_id, limit=per_page, offset=(page - 1) * per_page)
        return PageOf(items, total, page, per_page)

    # -- writing ---------------------------------------------------------------------------------------------

    def _require_writable(self) -> None:
        """Unavailable on a read-only replica, before any other check: the caller learns where to write.

        The write path checks again inside its transaction, which is what makes the refusal certain.
        """
        meta = self.repository.meta()
        if meta.read_only:
            raise self.repository.refusal(meta)

    @staticmethod
    def _require_author(principal: Principal) -> None:
        if principal.role != AUTHOR_ROLE:
            raise Forbidden(
                "writing posts needs the author role; an operator grants it with "
                "'bookstore users add EMAIL --password P --role author'"
            )

    def create_post(
        self,
        author: Principal,
        *,
        title: Any,
        content: Any,
        tags: Any = (),
        books: Any = (),
        slug: Any = None,
        date: Any = None,
    ) -> Post:
        """Publishes a post by `author` (role author, else Forbidden); the slug is derived from the title
        unless given (a given slug that is taken: Conflict); `date` (ISO 8601) defaults to now."""
        self._require_writable()
        self._require_author(author)
        return self._publish(
            author.user_id, display_name(author.email), title, content, tags, books, slug, date
        )

    def _publish(
        self,
        author_id: str,
        author_name: str,
        title: Any,
        content: Any,
        tags: Any,
        books: Any,
        slug: Any,
        date: Any,
    ) -> Post:
        title = check_title(title)
        body = check_body(content)
        checked_tags = check_tags(tags)
        book_ids = check_book_ids(books)
        explicit = slug is not None
        chosen_slug = check_slug(slug) if explicit else slugify(title)
        now = self.clock.now_ms()
        published = now if date is None else parse_time(date)
        body_html = markup.render(body)
        post = Post(
            id=0,
            slug=chosen_slug,
            title=title,
            body=body,
            body_html=body_html,
            excerpt=markup.excerpt(body_html),
            author_id=author_id,
            author_name=author_name,
            tags=checked_tags,
            book_ids=book_ids,
            published_ms=published,
            modified_ms=now,
        )
        created = self.repository.insert_post(post, explicit_slug=explicit)
        log.info("region=%s event=blog_post_created id=%d slug=%s", self.region, created.id, created.slug)
        return created

    def update_post(
        self,
        author: Principal,
        post_id: int,
        *,
        title: Any = None,
        content: Any = None,
        tags: Any = None,
        books: Any = None,
        slug: Any = None,
        date: Any = None,
    ) -> Post:
        """Changes the fields given (None keeps a field) of the author's own post (else Forbidden)."""
        self._require_writable()
        self._require_author(author)
        old = self.get_post(post_id)
        if old.author_id != author.user_id:
            raise Forbidden("only the author of a post may change it")
        changes: dict[str, Any] = {"modified_ms": self.clock.now_ms()}
        if title is not None:
            changes["title"] = check_title(title)
        if content is not None:
            changes["body"] = check_body(content)
            changes["body_html"] = markup.render(changes["body"])
            changes["excerpt"] = markup.excerpt(changes["body_html"])
        if tags is not None:
            changes["tags"] = check_tags(tags)
        if books is not None:
            changes["book_ids"] = check_book_ids(books)
        if slug is not None:
            changes["slug"] = check_slug(slug)
        if date is not None:
            changes["published_ms"] = parse_time(date)
        updated = self.repository.update_post(replace(old, **changes), explicit_slug=slug is not None)
        log.info("region=%s event=blog_post_updated id=%d", self.region, post_id)
        return updated

    def delete_post(self, author: Principal, post_id: int) -> Post:
        """Deletes the author's own post with its comments; returns it as it was."""
        self._require_writable()
        self._require_author(author)
        old = self.get_post(post_id)
        if old.author_id != author.user_id:
            raise Forbidden("only the author of a post may delete it")
        deleted = self.repository.delete_post(post_id)
        log.info("region=%s event=blog_post_deleted id=%d", self.region, post_id)
        return deleted

    def add_comment(self, user: Principal, post_id: Any, content: Any) -> Comment:
        """A comment by any signed-in user on an existing post (NotFound otherwise)."""
        self._require_writable()
        post_id = check_id("post", post_id)
        body = check_comment(content)
        comment = Comment(
            id=0,
            post_id=post_id,
            author_id=user.user_id,
            author_name=display_name(user.email),
            body=body,
            body_html=markup.render(body),
            created_ms=self.clock.now_ms(),
        )
        created = self.repository.insert_comment(comment)
        log.info("region=%s event=blog_comment_created id=%d post=%d", self.region, created.id, post_id)
        return created

    # -- seeding ---------------------------------------------------------------------------------------------

    def seed(self, posts: Sequence[dict[str, Any]] | None = None) -> int:
        """Publishes the seeded posts not yet present (by slug); returns how many it added.

        Idempotent: running it again, or after a crash half-way, adds only what is missing. A read-only
        replica adds nothing (it receives the posts from its primary).
        """
        if self.repository.meta().read_only:
            return 0
        added = 0
        for entry in seed_posts() if posts is None else posts:
            if self.repository.post_by_slug(entry["slug"]) is not None:
                continue
            try:
                self._publish(
                    EDITORS_ID,
                    EDITORS_NAME,
                    entry["title"],
                    entry["content"],
                    entry.get("tags", []),
                    entry.get("books", []),
                    entry["slug"],
                    entry.get("date"),
                )
            except Conflict:
                continue  # another process seeded it meanwhile
            added += 1
        if added:
            log.info("region=%s event=blog_seeded posts=%d", self.region, added)
        return added
