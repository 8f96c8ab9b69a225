"""Rules of the Book Blog: posts and comments, their limits, slugs, tags and publication times."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Generic, TypeVar

from bookstore.domain.books import check_book_id
from bookstore.domain.errors import ValidationError

TITLE_MAX: Final = 200
BODY_MAX_BYTES: Final = 100 * 1024
COMMENT_MAX: Final = 5_000
TAGS_MAX: Final = 10
TAG_MAX: Final = 40
BOOKS_MAX: Final = 20
SLUG_MAX: Final = 100
# A derived slug is cut here, leaving room for the "-2", "-3"... that keeps slugs unique.
SLUG_BASE_MAX: Final = 80
PER_PAGE_MAX: Final = 100
PER_PAGE_DEFAULT: Final = 10
# Publication times are between 1970 and 9999 (what ISO 8601 dates without extensions can spell).
TIME_MAX_MS: Final = 253_402_300_799_999

ID_MAX: Final = 2**63 - 1

SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class Post:
    """A published post; `body` is the author's Markdown, `body_html` its sanitised rendering."""

    id: int
    slug: str
    title: str
    body: str
    body_html: str
    excerpt: str
    author_id: str
    author_name: str
    tags: tuple[str, ...]
    book_ids: tuple[str, ...]
    published_ms: int
    modified_ms: int


@dataclass(frozen=True)
class Comment:
    """A reader's comment on a post, in Markdown and as sanitised HTML."""

    id: int
    post_id: int
    author_id: str
    author_name: str
    body: str
    body_html: str
    created_ms: int


T = TypeVar("T")


@dataclass(frozen=True)
class PageOf(Generic[T]):
    """One page of a listing, with the total count and number of pages (at least 1)."""

    items: list[T]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def check_id(name: str, value: Any) -> int:
    """A row id: a positive 64-bit integer."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= ID_MAX:
        raise ValidationError(f"{name} must be the id of a {name} (a positive integer)")
    return value


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string")
    return value


def check_title(value: Any) -> str:
    """The trimmed title: 1 to 200 characters, no control characters."""
    title = " ".join(_text("title", value).split())
    if not title:
        raise ValidationError("title is required (1-200 characters)")
    if len(title) > TITLE_MAX:
        raise ValidationError(f"title has {len(title)} characters; at most {TITLE_MAX} are allowed")
    if _CONTROL.search(title):
        raise ValidationError("title may not contain control characters")
    return title


def check_body(value: Any) -> str:
    """A post's Markdown: not blank, at most 100 KB as UTF-8."""
    body = _text("content", value)
    if not body.strip():
        raise ValidationError("content is required (Markdown, at most 100 KB)")
    size = len(body.encode("utf-8", errors="surrogatepass"))
    if size > BODY_MAX_BYTES:
        raise ValidationError(f"content is {size} bytes; at most {BODY_MAX_BYTES} (100 KB) are allowed")
    _check_encodable("content", body)
    return body


def check_comment(value: Any) -> str:
    """A comment's Markdown: not blank, at most 5,000 characters."""
    body = _text("content", value)
    if not body.strip():
        raise ValidationError("content is required (Markdown, at most 5000 characters)")
    if len(body) > COMMENT_MAX:
        raise ValidationError(f"content has {len(body)} characters; at most {COMMENT_MAX} are allowed")
    _check_encodable("content", body)
    return body


def _check_encodable(name: str, text: str) -> None:
    # Lone surrogates cannot be stored as UTF-8 by any engine.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"{name} is not valid Unicode text") from None
    if "\x00" in text:
        raise ValidationError(f"{name} may not contain NUL characters")


def check_tag(value: Any) -> str:
    """A tag in canonical form: trimmed, inner whitespace collapsed, lowercase; 1-40 characters."""
    tag = " ".join(_text("tag", value).split()).lower()
    if not tag or len(tag) > TAG_MAX:
        raise ValidationError(f"each tag must have 1-{TAG_MAX} characters, got {value!r:.60}")
    if "," in tag or "/" in tag or _CONTROL.search(tag):
        raise ValidationError(f"tag {tag!r:.60} may not contain ',', '/' or control characters")
    return tag


def check_tags(values: Any) -> tuple[str, ...]:
    """Distinct canonical tags in the order given, at most 10."""
    if not isinstance(values, list | tuple):
        raise ValidationError("tags must be a list of strings")
    tags = tuple(dict.fromkeys(check_tag(v) for v in values))
    if len(tags) > TAGS_MAX:
        raise ValidationError(f"a post may have at most {TAGS_MAX} tags, got {len(tags)}")
    return tags


def check_book_ids(values: Any) -> tuple[str, ...]:
    """Distinct well-formed book ids in the order given, at most 20."""
    if not isinstance(values, list | tuple):
        raise ValidationError("books must be a list of book ids")
    if len(values) > BOOKS_MAX * 4:
        raise ValidationError(f"a post may name at most {BOOKS_MAX} books")
    ids = tuple(dict.fromkeys(check_book_id(v) for v in values))
    if len(ids) > BOOKS_MAX:
        raise ValidationError(f"a post may name at most {BOOKS_MAX} books, got {len(ids)}")
    return ids


def check_slug(value: Any) -> str:
    """An explicit slug: lowercase letters and digits in groups joined by '-', at most 100 characters."""
    slug = _text("slug", value)
    if len(slug) > SLUG_MAX or not SLUG.match(slug):
        raise ValidationError(
            f"slug must be 1-{SLUG_MAX} lowercase letters and digits joined by '-', got {slug!r:.60}"
        )
    return slug


def slugify(title: str) -> str:
    """The slug a title suggests: ASCII letters and digits joined by '-', cut at a word; 'post' if none."""
    ascii_title = unicodedata.normalize("NFKD", title.casefold()).encode("ascii", "ignore").decode("ascii")
    slug = _NOT_SLUG.sub("-", ascii_title.lower()).strip("-")
    if len(slug) > SLUG_BASE_MAX:
        slug = slug[:SLUG_BASE_MAX].rsplit("-", 1)[0] if "-" in slug[:SLUG_BASE_MAX] else slug[:SLUG_BASE_MAX]
    return slug or "post"


def unique_slug(base: str, taken: Iterable[str]) -> str:
    """`base`, or `base-N` with the smallest N >= 2 that is not taken."""
    used = set(taken)
    if base not in used:
        return base
    n = 2
    while f"{base}-{n}" in used:
        n += 1
    return f"{base}-{n}"


def parse_time(value: Any) -> int:
    """Epoch milliseconds of an ISO 8601 date-time (UTC when it names no offset), 1970 to 9999."""
    text = _text("date", value).strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            f"date must be an ISO 8601 date-time such as 2024-05-01T09:30:00Z, got {text!r:.60}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    ms = int(moment.timestamp() * 1000)
    if not 0 <= ms <= TIME_MAX_MS:
        raise ValidationError("date must be between 1970 and 9999")
    return ms


def format_time(ms: int) -> str:
    """The UTC date-time of epoch milliseconds as the WordPress API spells it (seconds, no offset)."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def check_page(page: Any, per_page: Any) -> tuple[int, int]:
    """A page number (from 1) and a page size (1 to 100)."""
    if not isinstance(page, int) or isinstance(page, bool) or page < 1:
        raise ValidationError("page must be an integer of at least 1")
    if not isinstance(per_page, int) or isinstance(per_page, bool) or not 1 <= per_page <= PER_PAGE_MAX:
        raise ValidationError(f"per_page must be an integer from 1 to {PER_PAGE_MAX}")
    return page, per_page


def check_page_exists(page: int, total: int, per_page: int) -> None:
    """Raises ValidationError for a page past the last one (page 1 always exists, even when empty)."""
    pages = max(1, -(-total // per_page))
    if page > pages:
        raise ValidationError(f"page {page} is past the last page ({pages}); ask for page 1 to {pages}")


def display_name(email: str) -> str:
    """How an author is shown: the part of the email before '@' (the address itself stays private)."""
    return email.partition("@")[0] or "reader"


def parse_tag_filter(raw: str | None) -> tuple[str, ...]:
    """The tags of a `tags=a,b` query parameter, canonical; empty when absent."""
    if raw is None or not raw.strip():
        return ()
    return check_tags([part for part in raw.split(",") if part.strip()])
