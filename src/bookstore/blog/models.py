"""The shapes of the blog JSON API's successful answers (WordPress REST style), as /openapi.json shows them.

The handlers build their answers with web.post_json and web.comment_json; these models describe them, and
the API's OpenAPI checks (tests/support/openapi_check.py, the schema fuzzing) hold the two together.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Answer(BaseModel):
    # additionalProperties: false in the document, so an answer with an unlisted field fails the checks.
    model_config = ConfigDict(extra="forbid")


class Rendered(_Answer):
    rendered: str = Field(description="sanitised HTML")


class Content(_Answer):
    rendered: str = Field(description="sanitised HTML")
    markdown: str = Field(description="the author's Markdown")


class PostAnswer(_Answer):
    id: int
    date: str
    date_gmt: str
    modified: str
    modified_gmt: str
    slug: str
    status: str
    type: str
    link: str
    title: Rendered
    content: Content
    excerpt: Rendered
    author: str = Field(description="the author's user id")
    author_name: str
    tags: list[str]
    books: list[str] = Field(description="ids of the catalog's books the post is about")


class CommentAnswer(_Answer):
    id: int
    post: int
    author: str
    author_name: str
    date: str
    date_gmt: str
    content: Content
    link: str | None = Field(description="the comment on its post's page")


class Deleted(_Answer):
    deleted: bool
    previous: PostAnswer


PAGED_HEADERS = {
    "X-WP-Total": {"description": "items in the whole listing", "schema": {"type": "string"}},
    "X-WP-TotalPages": {"description": "pages in the whole listing", "schema": {"type": "string"}},
}
