"""Simulated shoppers through the edge: open-loop arrivals, every request recorded with its outcome."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from bookstore.domain.orders import MAX_QUANTITY
from bookstore.edge.upstream import Origin, UpstreamError

# Share of each kind of request in the mix; writes carry an Idempotency-Key so the edge may retry them
# (but for UNKEYED_SHARE of the checkouts).
MIX: dict[str, float] = {"browse": 0.35, "cart": 0.2, "checkout": 0.2, "blog": 0.1, "static": 0.15}
API_KINDS = ("browse", "cart", "checkout")
WRITE_KINDS = ("cart", "checkout")
# Orders written straight to the home region's API (a backend's writes): not through the edge, so
# never failed over; they load the replication the RPO is measured on.
WRITER = "writer"
ORDER_KINDS = ("checkout", WRITER)
# Of the shoppers' checkouts, this share is sent without an Idempotency-Key (as a plain browser form
# would): the edge must not retry those, and the checks count the orders each one made.
UNKEYED_SHARE = 0.25
# Blog posts written by an author through the edge (blog-failover): the blog's own RPO and lost posts.
BLOG_POST = "blog-post"
BLOG_API = "/blog/wp-json/wp/v2/posts"
STATIC_PATHS = ("/", "/app.css")
REQUEST_TIMEOUT_S = 15.0
# One request of the workload, sent and recorded.
Request = Coroutine[Any, Any, None]


@dataclass(frozen=True)
class Shopper:
    """A signed-in customer at a location (the region the edge's latency record sends it to)."""

    email: str
    customer_id: str
    token: str
    location: str


@dataclass
class Sample:
    """One request as the client saw it; times in seconds since the drill's start."""

    kind: str
    method: str
    path: str
    start_s: float
    end_s: float
    status: int  # 0: no answer at all
    region: str | None = None  # X-Bookstore-Region
    origin: str | None = None  # X-Edge-Origin
    retried: bool = False  # the edge failed over to another region (X-Edge-Failover)
    customer_id: str | None = None
    idempotency_key: str | None = None
    order_id: str | None = None  # acknowledged order id of a checkout
    books: tuple[tuple[str, int], ...] = ()
    title: str | None = None  # of a blog post
    error: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def serving_region(self) -> str:
        return self.region or self.origin or "none"


@dataclass
class Workload:
    """Open-loop arrivals at `rate` requests/s (Poisson, seeded), each a random shopper's random request.

    Open loop: a stalled system does not slow the arrivals down, so an outage shows as failed
    requests rather than as fewer requests.
    """

    edge_url: str
    shoppers: list[Shopper]
    books: list[str]
    rate: float
    seed: int
    now_s: Callable[[], float]
    samples: list[Sample] = field(default_factory=list)
    # Share of each kind of request (what the endpoint serves: CloudFront has no /blog).
    mix: Mapping[str, float] = field(default_factory=lambda: dict(MIX))
    # The home region's API and the orders/s written straight to it (0: none).
    writer_url: str | None = None
    write_rate: float = 0.0
    # An author writing blog posts through the edge, posts/s, and the tag that marks the drill's posts.
    author: Shopper | None = None
    blog_rate: float = 0.0
    blog_tag: str = "drill"
    # Checkouts without a key and blog posts sent so far (each one's number makes it unique).
    _unkeyed: int = field(default=0, init=False, repr=False)
    _posts: int = field(default=0, init=False, repr=False)

    async def run(self, duration_s: float) -> None:
        rng = random.Random(self.seed)
        kinds, weights = list(self.mix), list(self.mix.values())
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=128)
        timeout = httpx.Timeout(REQUEST_TIMEOUT_S, connect=3.0)
        # The writer speaks HTTP/1.1 through the edge's own lean client: httpx costs more CPU per
        # request than the region spends on an order, and would cap the rate the writer reaches.
        url = httpx.URL(self.writer_url or "http://127.0.0.1")
        origin = Origin(url.host, url.port or 80, connect_timeout_s=3.0)
        async with httpx.AsyncClient(base_url=self.edge_url, limits=limits, timeout=timeout) as client:

            def shop() -> Request:
                return self._one(client, rng.choices(kinds, weights)[0], rng.choice(self.shoppers), rng)

            streams = [self._arrivals(shop, self.rate, duration_s, rng)]
            if self.writer_url is not None and self.write_rate > 0:
                writer_rng = random.Random(self.seed + 1)

                def write() -> Request:
                    return self._write(origin, rng.choice(self.shoppers), writer_rng)

                streams.append(self._arrivals(write, self.write_rate, duration_s, writer_rng))
            if self.author is not None and self.blog_rate > 0:
                author = self.author
                blog_rng = random.Random(self.seed + 2)
                streams.append(
                    self._arrivals(lambda: self._post(client, author), self.blog_rate, duration_s, blog_rng)
                )
            try:
                await asyncio.gather(*streams)
            finally:
                origin.close()

    async def _arrivals(
        self, issue: Callable[[], Request], rate: float, duration_s: float, rng: random.Random
    ) -> None:
        """Open-loop arrivals at `rate`/s for `duration_s`, each one request issued by `issue`."""
        tasks: set[asyncio.Task[None]] = set()
        began = self.now_s()
        at = began
        while True:
            at += rng.expovariate(rate)
            # The schedule ends with the run, and so does a client that fell behind it: then the
            # rate it reached, not the one asked for, is what it measured.
            if at >= began + duration_s or self.now_s() >= began + duration_s:
                break
            await asyncio.sleep(max(0.0, at - self.now_s()))
            task = asyncio.create_task(issue())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)

    async def _write(self, origin: Origin, shopper: Shopper, rng: random.Random) -> None:
        """One order posted straight to the home region's API (the writer's request)."""
        chosen = rng.sample(self.books, k=rng.randint(1, min(2, len(self.books))))
        books = tuple((b, rng.randint(1, 3)) for b in chosen)
        key = uuid.uuid4().hex
        body = orjson.dumps({"books": [{"bookId": b, "quantity": q} for b, q in books]})
        headers = [
            (b"authorization", f"Bearer {shopper.token}".encode()),
            (b"idempotency-key", key.encode()),
            (b"content-type", b"application/json"),
        ]
        sample = Sample(WRITER, "POST", "/orders", self.now_s(), 0.0, 0, customer_id=shopper.customer_id)
        sample.idempotency_key, sample.books = key, books
        try:
            answer = await origin.request("POST", b"/orders", headers, body, REQUEST_TIMEOUT_S)
        except UpstreamError as exc:
            sample.error = str(exc)[:200]
        else:
            sample.status = answer.status
            region = answer.header(b"x-bookstore-region")
            sample.region = None if region is None else region.decode()
            if sample.ok:
                sample.order_id = str(orjson.loads(answer.body).get("orderId"))
            else:
                sample.error = answer.body[:200].decode(errors="replace")
        sample.end_s = self.now_s()
        self.samples.append(sample)

    async def _one(self, client: httpx.AsyncClient, kind: str, shopper: Shopper, rng: random.Random) -> None:
        headers = {"X-Client-Region": shopper.location}
        body: Any = None
        method, key = "GET", None
        books: tuple[tuple[str, int], ...] = ()
        if kind == "browse":
            path = f"/api/books/{rng.choice(self.books)}"
        elif kind == "blog":
            path = "/blog"
        elif kind == "static":
            path = rng.choice(STATIC_PATHS)
        else:
            method, key = "POST", uuid.uuid4().hex
            headers |= {"Authorization": f"Bearer {shopper.token}", "Idempotency-Key": key}
            if kind == "cart":
                path, body = "/api/cart", {"bookId": rng.choice(self.books), "quantity": 1}
            else:
                if rng.random() < UNKEYED_SHARE:
                    key = None
                    del headers["Idempotency-Key"]
                    books = self._unkeyed_lines()
                else:
                    chosen = rng.sample(self.books, k=rng.randint(1, min(2, len(self.books))))
                    books = tuple((b, rng.randint(1, 3)) for b in chosen)
                path = "/api/orders"
                body = {"books": [{"bookId": b, "quantity": q} for b, q in books]}
        sample = Sample(kind, method, path, self.now_s(), 0.0, 0, customer_id=shopper.customer_id)
        sample.idempotency_key, sample.books = key, books
        answer = await self._send(sample, client.request(method, path, json=body, headers=headers))
        if answer is not None and kind == "checkout" and sample.ok:
            sample.order_id = str(answer.json().get("orderId"))

    async def _send(self, sample: Sample, request: Awaitable[httpx.Response]) -> httpx.Response | None:
        """Awaits `request`, records its answer (or why there was none) and its end in `sample`, keeps it."""
        answer: httpx.Response | None = None
        try:
            answer = await request
        except httpx.HTTPError as exc:
            sample.error = f"{type(exc).__name__}: {exc}"[:200]
        else:
            sample.status = answer.status_code
            sample.region = answer.headers.get("x-bookstore-region")
            sample.origin = answer.headers.get("x-edge-origin")
            sample.retried = "x-edge-failover" in answer.headers
            if not sample.ok:
                sample.error = answer.text[:200]
        sample.end_s = self.now_s()
        self.samples.append(sample)
        return answer

    def _unkeyed_lines(self) -> tuple[tuple[str, int], ...]:
        """Lines no other checkout of the drill without a key has (the n-th attempt's own quantities), so
        the orders it made can be told apart and counted."""
        n = self._unkeyed
        self._unkeyed += 1
        return unkeyed_lines(self.books, n)

    async def _post(self, client: httpx.AsyncClient, author: Shopper) -> None:
        """One blog post by the author through the edge, titled so that it can be found again."""
        self._posts += 1
        title = f"Drill post {self.blog_tag} {self._posts}"
        body = {
            "title": title,
            "content": f"Written by the drill at {self.now_s():.3f} s.",
            "tags": [self.blog_tag],
        }
        headers = {"Authorization": f"Bearer {author.token}", "X-Client-Region": author.location}
        sample = Sample(BLOG_POST, "POST", BLOG_API, self.now_s(), 0.0, 0, customer_id=author.customer_id)
        sample.title = title
        await self._send(sample, client.post(BLOG_API, json=body, headers=headers))


def unkeyed_lines(books: Sequence[str], n: int) -> tuple[tuple[str, int], ...]:
    """The n-th checkout without a key: quantities that encode n (unique for n < 99 * 99)."""
    low, high = n % MAX_QUANTITY, n // MAX_QUANTITY % MAX_QUANTITY
    if len(books) < 2:
        return ((books[0], 1 + low),)
    return ((books[0], 1 + low), (books[1], 1 + high))


def drill_clock() -> Callable[[], float]:
    """Seconds since now, on the monotonic clock."""
    t0 = time.monotonic()
    return lambda: time.monotonic() - t0
