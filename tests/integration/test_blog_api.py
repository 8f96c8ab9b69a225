"""The Book Blog over HTTP: pages and the WordPress-style JSON API, with real identity and SQLite storage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from bookstore.api.responses import install_error_handlers
from bookstore.blog.repository import BlogRepository
from bookstore.blog.service import BlogService, seed_posts
from bookstore.blog.web import create_blog_router
from bookstore.kernel.clock import SystemClock
from bookstore.services.identity import Identity
from bookstore.storage.local.keys import KeyFiles
from bookstore.storage.memory.tables import MemoryTable
from bookstore.storage.sqlite.sql import SqliteSql
from bookstore.tables import ATTEMPTS, KEYS, REVOCATIONS, SESSIONS, USERS
from tests.support.openapi_check import CheckedClient

API = "/blog/wp-json/wp/v2"
PASSWORD = "correct horse battery"
HOME = "eu-west-1"
SEEDED = len(seed_posts())
BOOK_NAMES = {
    b["id"]: b["name"]
    for b in json.loads(resources.files("bookstore.data").joinpath("books.json").read_text())
}


@dataclass
class Blog:
    client: TestClient
    service: BlogService
    repository: BlogRepository
    identity: Identity
    author: dict[str, str]
    other_author: dict[str, str]
    customer: dict[str, str]


def bearer(identity: Identity, email: str, role: str) -> dict[str, str]:
    identity.add_user(email, PASSWORD, role)
    return {"Authorization": "Bearer " + identity.signin(email, PASSWORD)["accessToken"]}


def make_blog(tmp_path: Path, region: str) -> Iterator[Blog]:
    home = tmp_path / region
    clock = SystemClock()
    # The cheapest argon2 parameters: these tests check the blog, not hashing strength.
    identity = Identity(
        MemoryTable(USERS),
        MemoryTable(KEYS),
        MemoryTable(SESSIONS),
        revocations=MemoryTable(REVOCATIONS),
        attempts=MemoryTable(ATTEMPTS),
        region=region,
        signing_keys=KeyFiles(home / "keys"),
        clock=clock,
        argon2_time_cost=1,
        argon2_memory_cost=8,
        argon2_parallelism=1,
    )
    db = SqliteSql(home / "blog.db")
    repository = BlogRepository.open(db, region=region, primary_region=HOME, clock=clock)
    service = BlogService(repository, book_name=BOOK_NAMES.get)
    service.seed()
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(create_blog_router(service, identity))
    # Every answer is checked against the document (issue 18).
    with CheckedClient(app, raise_server_exceptions=False) as client:
        yield Blog(
            client=client,
            service=service,
            repository=repository,
            identity=identity,
            author=bearer(identity, "ada@example.com", "author"),
            other_author=bearer(identity, "grace@example.com", "author"),
            customer=bearer(identity, "reader@example.com", "customer"),
        )
    db.close()


@pytest.fixture
def blog(tmp_path: Path) -> Iterator[Blog]:
    yield from make_blog(tmp_path, HOME)


def new_post(**fields: Any) -> dict[str, Any]:
    return {
        "title": "Notes on The Write-Ahead Log Explained",
        "content": "A *fine* book about logs.\n\n- one\n- two",
        "tags": ["Databases", "Logs"],
        "books": ["bk-db-002"],
        **fields,
    }


def publish(blog: Blog, **fields: Any) -> dict[str, Any]:
    response = blog.client.post(f"{API}/posts", json=new_post(**fields), headers=blog.author)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_error(response: Any, status: int, code: str, *words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code
    assert body["message"]
    for word in words:
        assert word in body["message"], (word, body["message"])


# -- pages -------------------------------------------------------------------------------------------------


def test_the_index_lists_posts_newest_first_with_pages_and_a_link_home(blog: Blog) -> None:
    page = blog.client.get("/blog/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'none'" in page.headers["content-security-policy"]
    assert 'href="/"' in page.text
    newest = sorted(seed_posts(), key=lambda p: p["date"], reverse=True)
    assert newest[0]["slug"] in page.text and newest[9]["slug"] in page.text
    assert newest[10]["slug"] not in page.text
    assert 'href="/blog/?page=2"' in page.text and "read-only" not in page.text.lower()

    second = blog.client.get("/blog/?page=2")
    assert second.status_code == 200
    assert newest[10]["slug"] in second.text and newest[0]["slug"] not in second.text
    assert 'href="/blog/?page=1"' in second.text
    assert blog.client.get("/blog").status_code == 200
    assert_error(blog.client.get("/blog/?page=3"), 400, "ValidationError", "last page")
    assert_error(blog.client.get("/blog/?page=zero"), 400, "ValidationError")


def test_a_post_page_shows_the_post_its_books_tags_and_comments(blog: Blog) -> None:
    post = publish(blog, content="## Why\n\nBecause **logs**.")
    comment = blog.client.post(
        f"{API}/comments", json={"post": post["id"], "content": "Loved *it*"}, headers=blog.customer
    )
    assert comment.status_code == 201
    page = blog.client.get(post["link"])
    assert page.status_code == 200
    assert "<h2>Why</h2>" in page.text and "<strong>logs</strong>" in page.text
    assert "Loved <em>it</em>" in page.text and "reader" in page.text
    assert 'href="/books/bk-db-002"' in page.text and BOOK_NAMES["bk-db-002"] in page.text
    assert 'href="/blog/tag/databases"' in page.text and 'href="/"' in page.text
    assert "1 comment" in page.text
    assert_error(blog.client.get("/blog/posts/no-such-post"), 404, "NotFound")


def test_a_tag_page_lists_only_posts_with_that_tag(blog: Blog) -> None:
    page = blog.client.get("/blog/tag/Databases")
    assert page.status_code == 200
    tagged = [p for p in seed_posts() if "databases" in p["tags"]]
    untagged = [p for p in seed_posts() if "databases" not in p["tags"]]
    assert tagged and all(p["slug"] in page.text for p in tagged)
    assert not any(f'/blog/posts/{p["slug"]}"' in page.text for p in untagged)
    spaced = blog.client.get("/blog/tag/science%20fiction")
    assert spaced.status_code == 200 and "last-signal-from-tethys-spoiler-free" in spaced.text
    assert "No posts yet" in blog.client.get("/blog/tag/nothing-here").text
    assert_error(blog.client.get("/blog/tag/" + "x" * 41), 400, "ValidationError")


# -- reading through the API ---------------------------------------------------------------------------------


def test_posts_are_listed_in_pages_with_wordpress_headers(blog: Blog) -> None:
    first = blog.client.get(f"{API}/posts")
    assert first.status_code == 200
    assert first.headers["x-wp-total"] == str(SEEDED) and first.headers["x-wp-totalpages"] == "2"
    assert len(first.json()) == 10
    dates = [p["date"] for p in first.json()]
    assert dates == sorted(dates, reverse=True)

    pages = [blog.client.get(f"{API}/posts", params={"per_page": 5, "page": n}).json() for n in (1, 2, 3)]
    assert [len(p) for p in pages] == [5, 5, SEEDED - 10]
    ids = [p["id"] for page in pages for p in page]
    assert len(set(ids)) == SEEDED

    item = pages[0][0]
    assert set(item) >= {
        "id",
        "date",
        "modified",
        "slug",
        "link",
        "title",
        "content",
        "excerpt",
        "author",
        "tags",
    }
    assert item["title"]["rendered"] and item["content"]["rendered"].startswith("<")
    assert item["author_name"] == "The Bookstore editors"

    for query in ("per_page=0", "per_page=101", "per_page=x", "page=0", "page=-1", "page=9", "page=1.5"):
        assert_error(blog.client.get(f"{API}/posts?{query}"), 400, "ValidationError")


def test_posts_are_filtered_by_tags(blog: Blog) -> None:
    def slugs(tags: str) -> set[str]:
        response = blog.client.get(f"{API}/posts", params={"tags": tags, "per_page": 100})
        assert response.status_code == 200
        assert response.headers["x-wp-total"] == str(len(response.json()))
        return {p["slug"] for p in response.json()}

    def seeded(*tags: str) -> set[str]:
        return {p["slug"] for p in seed_posts() if set(tags) & set(p["tags"])}

    assert slugs("databases") == seeded("databases")
    assert slugs("Databases, cars") == seeded("databases", "cars")
    assert slugs("no-such-tag") == set()
    assert_error(
        blog.client.get(f"{API}/posts", params={"tags": ",".join("abcdefghijk")}), 400, "ValidationError"
    )
    assert_error(blog.client.get(f"{API}/posts", params={"tags": "x" * 41}), 400, "ValidationError")
    assert_error(blog.client.get(f"{API}/posts", params={"tags": "x," * 300}), 400, "ValidationError")


def test_a_post_is_read_by_id_and_unknown_ids_are_4xx(blog: Blog) -> None:
    listed = blog.client.get(f"{API}/posts").json()[0]
    assert blog.client.get(f"{API}/posts/{listed['id']}").json() == listed
    assert_error(blog.client.get(f"{API}/posts/999999"), 404, "NotFound", "999999")
    for bad in ("abc", "0", "-3", "1.5", str(2**63), "9" * 40):
        assert_error(blog.client.get(f"{API}/posts/{bad}"), 400, "ValidationError")


# -- writing posts -----------------------------------------------------------------------------------------


def test_publishing_needs_a_signed_in_author(blog: Blog) -> None:
    response = blog.client.post(f"{API}/posts", json=new_post())
    assert_error(response, 401, "Unauthorized", "sign in")
    assert response.headers["www-authenticate"] == "Bearer"
    assert_error(
        blog.client.post(f"{API}/posts", json=new_post(), headers={"Authorization": "Basic abc"}),
        401,
        "Unauthorized",
    )
    assert_error(
        blog.client.post(f"{API}/posts", json=new_post(), headers={"Authorization": "Bearer not.a.token"}),
        401,
        "Unauthorized",
    )
    assert_error(
        blog.client.post(f"{API}/posts", json=new_post(), headers=blog.customer), 403, "Forbidden", "author"
    )
    assert blog.client.get(f"{API}/posts").headers["x-wp-total"] == str(SEEDED)


def test_an_author_publishes_a_post(blog: Blog) -> None:
    response = blog.client.post(
        f"{API}/posts", json=new_post(date="2030-01-02T03:04:05Z", extra="ignored"), headers=blog.author
    )
    assert response.status_code == 201
    post = response.json()
    assert response.headers["location"] == f"{API}/posts/{post['id']}"
    assert post["slug"] == "notes-on-the-write-ahead-log-explained"
    assert post["link"] == "/blog/posts/notes-on-the-write-ahead-log-explained"
    assert post["tags"] == ["databases", "logs"] and post["books"] == ["bk-db-002"]
    assert post["date"] == "2030-01-02T03:04:05"
    assert post["author_name"] == "ada"
    assert "<em>fine</em>" in post["content"]["rendered"] and post["content"]["markdown"].startswith(
        "A *fine*"
    )
    assert blog.client.get(f"{API}/posts").json()[0]["id"] == post["id"]
    # The same title again gets the next free slug; an explicit slug that is taken is a conflict.
    assert publish(blog)["slug"] == "notes-on-the-write-ahead-log-explained-2"
    assert_error(
        blog.client.post(f"{API}/posts", json=new_post(slug=post["slug"]), headers=blog.author),
        409,
        "Conflict",
        post["slug"],
    )
    assert publish(blog, slug="my-own-slug")["link"] == "/blog/posts/my-own-slug"


@pytest.mark.parametrize(
    ("fields", "word"),
    [
        ({"title": "x" * 201}, "title"),
        ({"title": "   "}, "title"),
        ({"title": 5}, "title"),
        ({"content": "x" * (100 * 1024 + 1)}, "content"),
        ({"content": ""}, "content"),
        ({"content": None}, "content"),
        ({"tags": [f"t{i}" for i in range(11)]}, "tags"),
        ({"tags": ["x" * 41]}, "tag"),
        ({"tags": "not-a-list"}, "tags"),
        ({"books": ["not a book id"]}, "bookId"),
        ({"books": [f"bk-{i}" for i in range(21)]}, "books"),
        ({"slug": "Not A Slug"}, "slug"),
        ({"date": "next tuesday"}, "date"),
    ],
)
def test_bad_posts_are_refused_with_a_message(blog: Blog, fields: dict[str, Any], word: str) -> None:
    response = blog.client.post(f"{API}/posts", json=new_post(**fields), headers=blog.author)
    assert_error(response, 400, "ValidationError", word)
    assert blog.repository.count_posts() == SEEDED


def test_malformed_bodies_are_400_not_500(blog: Blog) -> None:
    headers = {**blog.author, "Content-Type": "application/json"}
    for body in (b"{not json", b"", b"[]", b'"a string"', b"null", b'{"title": "t"}', b"\xff\xfe"):
        response = blog.client.post(f"{API}/posts", content=body, headers=headers)
        assert_error(response, 400, "ValidationError")
        response = blog.client.post(f"{API}/comments", content=body, headers=headers)
        assert_error(response, 400, "ValidationError")


def test_an_author_edits_only_their_own_posts(blog: Blog) -> None:
    post = publish(blog)
    url = f"{API}/posts/{post['id']}"
    changed = blog.client.put(
        url, json={"title": "A New Title", "tags": ["logs", "wal"]}, headers=blog.author
    )
    assert changed.status_code == 200
    body = changed.json()
    assert body["title"]["rendered"] == "A New Title" and body["tags"] == ["logs", "wal"]
    assert body["slug"] == post["slug"] and body["content"] == post["content"]
    tagged = blog.client.get(f"{API}/posts", params={"tags": "wal"}).json()
    assert [p["id"] for p in tagged] == [post["id"]]
    assert blog.client.get(f"{API}/posts", params={"tags": "databases"}).headers["x-wp-total"] == str(
        sum(1 for p in seed_posts() if "databases" in p["tags"])
    )
    assert blog.client.put(url, json={}, headers=blog.author).status_code == 200
    assert_error(blog.client.put(url, json={"title": "x"}, headers=blog.other_author), 403, "Forbidden")
    assert_error(blog.client.put(url, json={"title": "x"}, headers=blog.customer), 403, "Forbidden")
    assert_error(blog.client.put(url, json={"title": "x"}), 401, "Unauthorized")
    assert_error(blog.client.put(url, json={"title": "x" * 201}, headers=blog.author), 400, "ValidationError")
    seeded_slug = seed_posts()[0]["slug"]
    assert_error(blog.client.put(url, json={"slug": seeded_slug}, headers=blog.author), 409, "Conflict")
    assert_error(blog.client.put(f"{API}/posts/424242", json={}, headers=blog.author), 404, "NotFound")
    # Seeded posts belong to the editors: no author may change them.
    seeded_id = blog.service.get_post_by_slug(seeded_slug).id
    assert_error(blog.client.put(f"{API}/posts/{seeded_id}", json={}, headers=blog.author), 403, "Forbidden")


def test_an_author_deletes_their_post_and_its_comments(blog: Blog) -> None:
    post = publish(blog)
    url = f"{API}/posts/{post['id']}"
    blog.client.post(f"{API}/comments", json={"post": post["id"], "content": "first"}, headers=blog.customer)
    assert_error(blog.client.delete(url, headers=blog.other_author), 403, "Forbidden")
    assert_error(blog.client.delete(url), 401, "Unauthorized")
    deleted = blog.client.delete(url, headers=blog.author)
    assert deleted.status_code == 200
    assert deleted.json()["deleted"] is True and deleted.json()["previous"]["id"] == post["id"]
    assert_error(blog.client.get(url), 404, "NotFound")
    assert_error(blog.client.get(f"{API}/comments", params={"post": post["id"]}), 404, "NotFound")
    assert blog.repository.count_comments(None) == 0
    assert_error(blog.client.delete(url, headers=blog.author), 404, "NotFound")


# -- comments ----------------------------------------------------------------------------------------------


def test_signed_in_users_comment_and_anyone_reads_comments(blog: Blog) -> None:
    post_id = blog.client.get(f"{API}/posts").json()[0]["id"]
    assert_error(
        blog.client.post(f"{API}/comments", json={"post": post_id, "content": "hi"}), 401, "Unauthorized"
    )
    made = []
    for i in range(3):
        response = blog.client.post(
            f"{API}/comments", json={"post": post_id, "content": f"comment **{i}**"}, headers=blog.customer
        )
        assert response.status_code == 201
        made.append(response.json())
    assert made[0]["post"] == post_id and made[0]["author_name"] == "reader"
    assert made[0]["content"]["rendered"] == "<p>comment <strong>0</strong></p>\n"
    assert made[0]["link"].endswith(f"#comment-{made[0]['id']}")

    listed = blog.client.get(f"{API}/comments", params={"post": post_id, "per_page": 2})
    assert listed.status_code == 200 and listed.headers["x-wp-total"] == "3"
    assert listed.headers["x-wp-totalpages"] == "2"
    assert [c["id"] for c in listed.json()] == [made[0]["id"], made[1]["id"]]
    assert len(blog.client.get(f"{API}/comments").json()) == 3

    assert_error(blog.client.get(f"{API}/comments", params={"post": 987654}), 404, "NotFound")
    assert_error(blog.client.get(f"{API}/comments", params={"post": "x"}), 400, "ValidationError")
    for body, status, code in (
        ({"post": 987654, "content": "hi"}, 404, "NotFound"),
        ({"post": post_id, "content": "x" * 5001}, 400, "ValidationError"),
        ({"post": post_id, "content": "  "}, 400, "ValidationError"),
        ({"post": "1", "content": "hi"}, 400, "ValidationError"),
        ({"post": 2**64, "content": "hi"}, 400, "ValidationError"),
        ({"post": 0, "content": "hi"}, 400, "ValidationError"),
        ({"content": "hi"}, 400, "ValidationError"),
    ):
        assert_error(blog.client.post(f"{API}/comments", json=body, headers=blog.customer), status, code)
    assert blog.repository.count_comments(None) == 3


# -- safety --------------------------------------------------------------------------------------------------


class PageElements(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend((tag, name, value or "") for name, value in attrs)


def test_scripts_and_event_handlers_in_posts_and_comments_never_reach_the_page(blog: Blog) -> None:
    attack = (
        "<script>document.title='owned'</script>\n\n"
        "<img src=x onerror=alert(1)>\n\n"
        "<svg onload=alert(2)></svg>\n\n"
        '<div onclick="alert(3)">\n\nclick\n\n</div>\n\n'
        "[click me](javascript:alert(4)) and [data](data:text/html,<script>alert(5)</script>)\n\n"
        '<a href="javascript:alert(6)">raw link</a> <iframe src="javascript:alert(7)"></iframe>\n\n'
        "![img](javascript:alert(8))"
    )
    post = publish(blog, title="<script>alert('title')</script>", content=attack)
    blog.client.post(f"{API}/comments", json={"post": post["id"], "content": attack}, headers=blog.customer)

    for url in (post["link"], "/blog/", "/blog/tag/logs"):
        page = blog.client.get(url)
        assert page.status_code == 200
        assert "script-src 'none'" in page.headers["content-security-policy"]
        found = PageElements()
        found.feed(page.text)
        assert not {"script", "iframe", "svg", "object", "embed", "frame"} & set(found.tags)
        for tag, name, value in found.attributes:
            assert not name.startswith("on"), (url, tag, name, value)
            if name in ("href", "src", "action"):
                assert not "".join(value.split()).lower().startswith(("javascript:", "data:", "vbscript:"))
    page = blog.client.get(post["link"]).text
    assert "&lt;script&gt;alert(&#39;title&#39;)&lt;/script&gt;" in page
    # The JSON carries the sanitised HTML too, never the raw markup as HTML.
    rendered = blog.client.get(f"{API}/posts/{post['id']}").json()["content"]["rendered"]
    found = PageElements()
    found.feed(rendered)
    assert "script" not in found.tags and not [a for a in found.attributes if a[1].startswith("on")]


def test_odd_requests_never_get_a_500(blog: Blog) -> None:
    post_id = blog.client.get(f"{API}/posts").json()[0]["id"]
    odd_values: list[Any] = [
        None,
        True,
        0,
        -1,
        2**80,
        1.5,
        "",
        "\x00",
        "\ud7ff",
        [],
        {},
        [[]],
        {"raw": "x"},
        "x" * 3000,
    ]
    for value in odd_values:
        for field in ("title", "content", "tags", "books", "slug", "date"):
            for method, url in (("POST", f"{API}/posts"), ("PUT", f"{API}/posts/{post_id}")):
                response = blog.client.request(
                    method, url, json=new_post(**{field: value}), headers=blog.author
                )
                assert response.status_code < 500, (method, field, value, response.text)
        for field in ("post", "content"):
            body = {"post": post_id, "content": "ok", field: value}
            response = blog.client.post(f"{API}/comments", json=body, headers=blog.customer)
            assert response.status_code < 500, (field, value, response.text)
    for url in (
        "/blog/posts/" + "x" * 500,
        "/blog/tag/%00",
        "/blog/tag/a%2Fb",
        f"{API}/posts?tags=%00",
        f"{API}/posts?page=99999999999999999999999",
        f"{API}/comments?post=-1",
    ):
        assert blog.client.get(url).status_code < 500, url


# -- a read-only replica -------------------------------------------------------------------------------------


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[Blog]:
    yield from make_blog(tmp_path, "ap-southeast-1")


def test_a_read_only_replica_serves_reads_and_answers_every_write_with_503(blog: Blog, replica: Blog) -> None:
    # The replica got its posts from the primary's log, as it will from replication.
    replica.repository.apply(blog.repository.changes(limit=10_000))
    assert replica.client.get(f"{API}/posts").headers["x-wp-total"] == str(SEEDED)
    post_id = replica.client.get(f"{API}/posts").json()[0]["id"]
    head = replica.repository.head_lsn()

    page = replica.client.get("/blog/")
    assert page.status_code == 200 and "Read-only replica" in page.text and HOME in page.text
    post_page = replica.client.get(f"/blog/posts/{seed_posts()[0]['slug']}")
    assert "Read-only replica" in post_page.text

    writes = [
        ("POST", f"{API}/posts", new_post(), replica.author),
        ("PUT", f"{API}/posts/{post_id}", {"title": "changed"}, replica.author),
        ("DELETE", f"{API}/posts/{post_id}", None, replica.author),
        ("POST", f"{API}/comments", {"post": post_id, "content": "hello"}, replica.customer),
        # Even a write that would be refused for another reason on the primary: the replica says where to go.
        ("PUT", f"{API}/posts/{post_id}", {"title": "x" * 500}, replica.customer),
        ("POST", f"{API}/posts", new_post(), replica.customer),
    ]
    for method, url, body, headers in writes:
        response = replica.client.request(method, url, json=body, headers=headers)
        assert_error(response, 503, "Unavailable", "read-only", HOME)
    # Without a token it is still 401: who asks is checked before what they ask.
    assert_error(replica.client.post(f"{API}/posts", json=new_post()), 401, "Unauthorized")
    assert replica.repository.head_lsn() == head
    assert replica.repository.count_posts() == SEEDED
    assert replica.service.seed() == 0
