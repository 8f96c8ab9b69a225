"""The blog's HTTP entry points: server-rendered pages under /blog/ and a WordPress-style JSON API."""

import html
from datetime import UTC, datetime
from typing import Annotated, Any, Final
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr
from starlette.responses import HTMLResponse, Response

from bookstore.blog.models import PAGED_HEADERS, CommentAnswer, Deleted, PostAnswer
from bookstore.blog.posts import (
    PER_PAGE_DEFAULT,
    SLUG_MAX,
    Comment,
    PageOf,
    Post,
    check_tag,
    format_time,
    parse_tag_filter,
)
from bookstore.blog.service import BlogService, BlogStatus
from bookstore.domain.errors import Unauthorized
from bookstore.domain.users import Principal
from bookstore.kernel.http import JSON
from bookstore.kernel.openapi import BEARER, error_answers, page_error_answers
from bookstore.services.identity import Identity

PREFIX: Final = "/blog"
API: Final = "/wp-json/wp/v2"
MAX_ID: Final = 2**63 - 1
TAG_QUERY_MAX: Final = 500
# No script may run on a blog page, whatever a body holds: the sanitiser removes it, and this forbids it.
PAGE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'; img-src 'self' https: http:; style-src 'unsafe-inline'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

WRITE_ERRORS: Final = {
    403: "Writing posts needs the author role, and only a post's author may change or delete it",
    409: "The slug belongs to another post",
    503: "This region's blog is a read-only replica; the message names the primary region to write to",
}

PostId = Annotated[int, Path(ge=1, le=MAX_ID, description="the post's id")]
Page = Annotated[int, Query(ge=1, le=MAX_ID)]
PerPage = Annotated[int, Query(ge=1, le=MAX_ID)]


class _Body(BaseModel):
    # Unknown fields are ignored, as WordPress does; lengths and shapes are the domain's rules.
    model_config = ConfigDict(extra="ignore")


class NewPost(_Body):
    title: StrictStr
    content: StrictStr
    tags: list[StrictStr] = []
    books: list[StrictStr] = []
    slug: StrictStr | None = None
    date: StrictStr | None = None


class PostChanges(_Body):
    title: StrictStr | None = None
    content: StrictStr | None = None
    tags: list[StrictStr] | None = None
    books: list[StrictStr] | None = None
    slug: StrictStr | None = None
    date: StrictStr | None = None


class NewComment(_Body):
    post: StrictInt
    content: StrictStr


def post_link(post: Post) -> str:
    return f"{PREFIX}/posts/{post.slug}"


def post_json(post: Post) -> dict[str, Any]:
    """A post as the WordPress REST API shapes one (with our `books` and Markdown `content.markdown`)."""
    published, modified = format_time(post.published_ms), format_time(post.modified_ms)
    return {
        "id": post.id,
        "date": published,
        "date_gmt": published,
        "modified": modified,
        "modified_gmt": modified,
        "slug": post.slug,
        "status": "publish",
        "type": "post",
        "link": post_link(post),
        "title": {"rendered": html.escape(post.title)},
        "content": {"rendered": post.body_html, "markdown": post.body},
        "excerpt": {"rendered": f"<p>{html.escape(post.excerpt)}</p>\n"},
        "author": post.author_id,
        "author_name": post.author_name,
        "tags": list(post.tags),
        "books": list(post.book_ids),
    }


def comment_json(comment: Comment, link: str | None = None) -> dict[str, Any]:
    created = format_time(comment.created_ms)
    return {
        "id": comment.id,
        "post": comment.post_id,
        "author": comment.author_id,
        "author_name": comment.author_name,
        "date": created,
        "date_gmt": created,
        "content": {"rendered": comment.body_html, "markdown": comment.body},
        "link": f"{link}#comment-{comment.id}" if link else None,
    }


def _paged(page: PageOf[Any], items: list[dict[str, Any]], status: int = 200) -> JSON:
    return JSON(
        items,
        status_code=status,
        headers={"X-WP-Total": str(page.total), "X-WP-TotalPages": str(page.pages)},
    )


def _display_date(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return f"{moment.day} {moment.strftime('%B %Y')}"


def _templates() -> Environment:
    env = Environment(
        loader=PackageLoader("bookstore.blog", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["display_date"] = _display_date
    env.filters["iso_time"] = format_time
    return env


def create_blog_router(service: BlogService, identity: Identity) -> APIRouter:
    """The blog's pages and JSON API under /blog, to mount with `app.include_router(...)`.

    Errors are raised as the domain's errors, so the app's error handlers (install_error_handlers)
    answer them as JSON: 400 bad input, 401 no or bad token, 403 not an author or not the post's author,
    404 unknown post, 409 slug taken, 503 a read-only replica asked to write (naming the primary).
    """
    router = APIRouter(prefix=PREFIX, tags=["blog"])
    env = _templates()

    def principal(
        request: Request, _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]
    ) -> Principal:
        # BEARER declares the scheme (auto_error off); this check gives our 401 body and its reasons.
        authorization = request.headers.get("authorization")
        if not authorization:
            raise Unauthorized(
                "sign in first: send 'Authorization: Bearer <accessToken>' (POST /auth/signin)"
            )
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <accessToken>'")
        return identity.verify(token.strip())

    User = Annotated[Principal, Security(principal)]

    def page_response(template: str, status: BlogStatus, **context: Any) -> HTMLResponse:
        body = env.get_template(template).render(status=status, book_name=service.book_name, **context)
        return HTMLResponse(body, headers=PAGE_HEADERS)

    # -- pages -------------------------------------------------------------------------------------------

    @router.get("", include_in_schema=False)
    @router.get("/", response_class=HTMLResponse, responses=page_error_answers(400))
    def index(page: Page = 1) -> Response:
        status = service.status()
        posts = service.list_posts(page=page, per_page=PER_PAGE_DEFAULT)
        return page_response("index.html", status, listing=posts, tag=None, base=f"{PREFIX}/")

    @router.get("/posts/{slug}", response_class=HTMLResponse, responses=page_error_answers(400, 404))
    def post_page(slug: Annotated[str, Path(max_length=SLUG_MAX)]) -> Response:
        status = service.status()
        post, comments = service.post_page(slug)
        return page_response("post.html", status, post=post, comments=comments)

    @router.get("/tag/{tag}", response_class=HTMLResponse, responses=page_error_answers(400))
    def tag_page(tag: Annotated[str, Path(max_length=200)], page: Page = 1) -> Response:
        status = service.status()
        canonical = check_tag(tag)
        posts = service.list_posts(page=page, per_page=PER_PAGE_DEFAULT, tags=[canonical])
        return page_response(
            "index.html", status, listing=posts, tag=canonical, base=f"{PREFIX}/tag/{quote(canonical)}"
        )

    # -- the JSON API ------------------------------------------------------------------------------------

    @router.get(
        f"{API}/posts",
        response_model=list[PostAnswer],
        responses={200: {"headers": PAGED_HEADERS}, **error_answers(400)},
    )
    def list_posts(
        page: Page = 1,
        per_page: PerPage = PER_PAGE_DEFAULT,
        tags: Annotated[str | None, Query(max_length=TAG_QUERY_MAX)] = None,
    ) -> Response:
        listing = service.list_posts(page=page, per_page=per_page, tags=parse_tag_filter(tags))
        return _paged(listing, [post_json(p) for p in listing.items])

    @router.get(f"{API}/posts/{{post_id}}", response_model=PostAnswer, responses=error_answers(400, 404))
    def get_post(post_id: PostId) -> Response:
        return JSON(post_json(service.get_post(post_id)))

    @router.post(
        f"{API}/posts",
        status_code=201,
        response_model=PostAnswer,
        responses=error_answers(400, 401, 403, 409, 413, 503, why=WRITE_ERRORS),
    )
    def create_post(body: NewPost, user: User) -> Response:
        post = service.create_post(
            user,
            title=body.title,
            content=body.content,
            tags=body.tags,
            books=body.books,
            slug=body.slug,
            date=body.date,
        )
        return JSON(post_json(post), status_code=201, headers={"Location": f"{PREFIX}{API}/posts/{post.id}"})

    @router.put(
        f"{API}/posts/{{post_id}}",
        response_model=PostAnswer,
        responses=error_answers(400, 401, 403, 404, 409, 413, 503, why=WRITE_ERRORS),
    )
    def update_post(post_id: PostId, body: PostChanges, user: User) -> Response:
        post = service.update_post(
            user,
            post_id,
            title=body.title,
            content=body.content,
            tags=body.tags,
            books=body.books,
            slug=body.slug,
            date=body.date,
        )
        return JSON(post_json(post))

    @router.delete(
        f"{API}/posts/{{post_id}}",
        response_model=Deleted,
        responses=error_answers(400, 401, 403, 404, 503, why=WRITE_ERRORS),
    )
    def delete_post(post_id: PostId, user: User) -> Response:
        return JSON({"deleted": True, "previous": post_json(service.delete_post(user, post_id))})

    @router.get(
        f"{API}/comments",
        response_model=list[CommentAnswer],
        responses={200: {"headers": PAGED_HEADERS}, **error_answers(400, 404)},
    )
    def list_comments(
        post: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
        page: Page = 1,
        per_page: PerPage = PER_PAGE_DEFAULT,
    ) -> Response:
        listing = service.list_comments(post, page=page, per_page=per_page)
        link = post_link(service.get_post(post)) if post is not None else None
        return _paged(listing, [comment_json(c, link) for c in listing.items])

    @router.post(
        f"{API}/comments",
        status_code=201,
        response_model=CommentAnswer,
        responses=error_answers(400, 401, 404, 413, 503, why=WRITE_ERRORS),
    )
    def create_comment(body: NewComment, user: User) -> Response:
        comment = service.add_comment(user, body.post, body.content)
        link = post_link(service.get_post(comment.post_id))
        return JSON(comment_json(comment, link), status_code=201)

    return router
