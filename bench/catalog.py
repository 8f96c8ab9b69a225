"""Catalog and history size: listing, paging, search and memory of one region at 56, 10k and 100k books."""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.api import BOOKSTORE, EMAIL, PASSWORD, REGION_ID, topology_file
from bench.loadgen import Load, Result, cores, lua_script, run
from bench.procstat import cpu_seconds, memory_mib
from bench.report import BenchError, Figure, Goal, PartialResult, Section
from bench.servers import running
from bookstore.api.paging import NEXT_CURSOR
from bookstore.domain.orders import OrderLine
from bookstore.region.compose import build_region
from bookstore.services.catalog import seed_books

ORDERS = 10_000
# Units per shared transaction while seeding: as the API's group commit, only larger.
CHUNK = 1_000
LATENCY_GOAL_MS = 20.0
CATEGORIES = ("Cookbooks", "Mystery", "Science Fiction", "History", "Travel", "Poetry", "Children")
# A category of the seed catalog too, so the 56-book size lists it as well.
CATEGORY = "Cookbooks"
# A word every generated title draws from a list of 24: about 4% of the catalog matches it.
SEARCH_WORD = "lantern"
ADJECTIVES = ("Silent", "Golden", "Hidden", "Broken", "Distant", "Quiet", "Burning", "Frozen")
NOUNS = (
    "lantern", "harbor", "garden", "river", "mountain", "kitchen", "library", "orchard",
    "compass", "window", "bridge", "forest", "island", "engine", "letter", "mirror",
    "tower", "market", "winter", "summer", "valley", "voyage", "secret", "shadow",
)  # fmt: skip
FIRST = ("Ada", "Bruno", "Clara", "Dmitri", "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas")
LAST = ("Okafor", "Lindqvist", "Moreau", "Tanaka", "Silva", "Novak", "Brennan", "Kowalski", "Haddad")


def sizes() -> tuple[int, ...]:
    """Catalog sizes measured: the seed catalog, 10k and 100k books (BENCH=quick stops at 10k)."""
    return (56, 10_000) if os.environ.get("BENCH") == "quick" else (56, 10_000, 100_000)


def generated_books(count: int) -> list[dict[str, Any]]:
    """`count` books in the seed catalog's shape (deterministic), spread over seven categories."""
    rnd = random.Random(count)
    books = []
    for n in range(count):
        books.append(
            {
                "id": f"bk-gen-{n:06d}",
                "name": f"The {rnd.choice(ADJECTIVES)} {rnd.choice(NOUNS)} {rnd.choice(NOUNS)} {n}",
                "author": f"{rnd.choice(FIRST)} {rnd.choice(LAST)}",
                "category": CATEGORIES[n % len(CATEGORIES)],
                "price": round(rnd.uniform(5, 60), 2),
                "rating": rnd.randint(1, 5),
                "cover": "covers/bk-cook-001.svg",
            }
        )
    return books


def _check(outcomes: Sequence[Any], what: str) -> None:
    failed = [o.error for o in outcomes if o.error is not None]
    if failed:
        raise BenchError(f"seeding {what}: {len(failed)} write(s) failed, the first: {failed[0]!r}")


def seed(topology: Path, data_dir: Path, books: int) -> float:
    """The region's data directory with `books` books and a customer with ORDERS orders; seconds taken.

    Writes go through the region's own tables (each one logged to the stream as the API's writes are),
    a thousand to a shared transaction; the search index is then rebuilt from the table as its consumer
    does after a trimmed stream, so the region starts caught up instead of replaying 100k changes.
    """
    from bookstore.config import Topology

    started = time.monotonic()
    services = build_region(Topology.load(topology), REGION_ID, data_dir, holder="bench catalog seed")
    try:
        table = services.catalog.books
        catalog = seed_books() + (generated_books(books - len(seed_books())) if books > 56 else [])
        for i in range(0, len(catalog), CHUNK):
            units = [lambda b=b: table.put(b) for b in catalog[i : i + CHUNK]]
            _check(services.writes.run_now(units), "books")
        head = table.stream_head()
        services.search.rebuild(head)
        user = services.identity.add_user(EMAIL, PASSWORD)
        line = [OrderLine(catalog[0]["id"], 1)]
        for i in range(0, ORDERS, CHUNK):
            place: Callable[[], Any] = lambda: services.checkout.place(user.user_id, line)  # noqa: E731
            _check(services.writes.run_now([place] * min(CHUNK, ORDERS - i)), "orders")
    finally:
        services.close()
    return time.monotonic() - started


@dataclass(frozen=True)
class Walk:
    """A sequential walk through every page of a list: pages, items, and the latency of each page."""

    pages: int
    items: int
    latencies_ms: list[float]
    seconds: float

    def p(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def walk(client: httpx.Client, path: str, headers: dict[str, str], limit: int = 100) -> Walk:
    """GET `path` page after page (one client, one request at a time) until there is no next cursor."""
    params = {"limit": str(limit)}
    latencies: list[float] = []
    items = 0
    started = time.monotonic()
    while True:
        t0 = time.perf_counter()
        answer = client.get(path, params=params, headers=headers)
        latencies.append((time.perf_counter() - t0) * 1000)
        if answer.status_code != 200:
            raise BenchError(f"GET {path} answered {answer.status_code}: {answer.text[:300]}")
        items += len(answer.json())
        cursor = answer.headers.get(NEXT_CURSOR)
        if cursor is None:
            return Walk(len(latencies), items, latencies, time.monotonic() - started)
        params = {"limit": str(limit), "cursor": cursor}


def settle(client: httpx.Client, timeout_s: float = 120.0) -> None:
    """Wait until the region's stream consumers have caught up (the best sellers read 10k new orders)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = client.get("/metrics")
        if answer.status_code != 200:
            return
        lags = [
            float(line.rsplit(" ", 1)[1])
            for line in answer.text.splitlines()
            if line.startswith("bookstore_stream_consumer_lag_seconds{")
        ]
        if all(lag == 0 for lag in lags):
            return
        time.sleep(0.5)
    raise BenchError(f"the region's stream consumers did not catch up within {timeout_s:.0f} s")


def distinct_queries() -> list[str]:
    """Queries a visitor might type, none repeated: adjective and noun, a noun alone (about 8% of the
    titles hold it), a noun's first three letters (a prefix), an author's last and first name."""
    queries = [f"{adjective} {noun}" for adjective in ADJECTIVES for noun in NOUNS]
    queries += list(NOUNS) + [noun[:3] for noun in NOUNS]
    queries += [f"{last} {first}" for last in LAST for first in FIRST]
    return list(dict.fromkeys(queries))


def cold_searches(client: httpx.Client, pid: int) -> tuple[list[float], float]:
    """Latency of each distinct query, asked once (none is cached), and the region's CPU ms per query."""
    latencies = []
    cpu_before = cpu_seconds(pid)
    for query in distinct_queries():
        t0 = time.perf_counter()
        answer = client.get("/search", params={"q": query})
        latencies.append((time.perf_counter() - t0) * 1000)
        if answer.status_code != 200:
            raise BenchError(f"GET /search answered {answer.status_code}: {answer.text[:300]}")
    return latencies, (cpu_seconds(pid) - cpu_before) * 1000 / len(latencies)


def _load() -> Load:
    quick = os.environ.get("BENCH") == "quick"
    # Moderate load: four connections, so the p99 is a request's own cost plus little queueing.
    return Load(threads=1, connections=4, duration_s=3 if quick else 5, warmup_s=1)


def measure_size(work: Path, books: int, failures: list[str]) -> list[Figure]:
    topology_path = work / f"topology-{books}.toml"
    region = topology_file(topology_path).region(REGION_ID)
    data_dir = work / f"data-{books}"
    seconds = seed(topology_path, data_dir, books)
    load = _load()
    server_core, wrk_core = cores()
    argv = [str(BOOKSTORE), "region", "serve", "--region", REGION_ID]
    argv += ["--data-dir", str(data_dir), "--topology", str(topology_path)]
    size = f"{books:,} books"
    figures = [
        Figure(f"{size}: seeding ({books:,} books, {ORDERS:,} orders, search index)", seconds, "s"),
    ]
    goal = Goal.maximum(LATENCY_GOAL_MS) if books == max(sizes()) else None
    with (
        running(argv, f"{region.api_url}/health", work / f"region-{books}.log", core=server_core) as proc,
        httpx.Client(base_url=region.api_url, timeout=60.0) as client,
    ):
        figures.append(Figure(f"{size}: region RSS at start", memory_mib(proc.pid)[0], "MiB"))
        settle(client)
        try:
            latencies, cpu_ms = cold_searches(client, proc.pid)
            cold = sorted(latencies)
            note = f"{len(cold)} distinct queries, each asked once, one after another by one httpx client"
            figures += [
                Figure(
                    f"{size}: GET /search, distinct queries (not cached): p50", cold[len(cold) // 2], "ms"
                ),
                Figure(
                    f"{size}: GET /search, distinct queries (not cached): p99",
                    cold[min(len(cold) - 1, int(0.99 * len(cold)))],
                    "ms",
                    goal,
                    note=note,
                ),
                Figure(f"{size}: GET /search, distinct queries: region CPU per query", cpu_ms, "ms"),
            ]
        except BenchError as exc:
            failures.append(f"{size}: {exc}")
        answer = client.post("/auth/signin", json={"email": EMAIL, "password": PASSWORD})
        if answer.status_code != 200:
            raise BenchError(f"sign-in answered {answer.status_code}: {answer.text[:300]}")
        auth = {"Authorization": f"Bearer {answer.json()['accessToken']}"}
        book_id = f"bk-gen-{books // 2:06d}" if books > 56 else seed_books()[0]["id"]
        fixed: list[tuple[str, str, dict[str, str], Goal | None]] = [
            (f"GET /books?category={CATEGORY}&limit=100", f"/books?category={CATEGORY}&limit=100", {}, goal),
            (f"GET /search?q={SEARCH_WORD}", f"/search?q={SEARCH_WORD}", {}, goal),
            ("GET /search?q=<author>", "/search?q=Okafor%20Ada", {}, goal),
            ("GET /books/{id}", f"/books/{book_id}", {}, None),
            ("GET /orders?limit=100 (first page)", "/orders?limit=100", auth, None),
        ]
        for label, path, headers, target in fixed:
            try:
                first = client.get(path, headers=headers)
                if first.status_code != 200 or not (first.json() or books <= 56):
                    raise BenchError(f"{label} answered {first.status_code}: {first.text[:200]}")
                script = work / "get.lua"
                script.write_text(lua_script("GET", headers, None), encoding="utf-8")
                url = f"{region.api_url}{path}"
                run(url, load, duration_s=load.warmup_s, script=script, core=wrk_core)
                result: Result = run(url, load, script=script, core=wrk_core)
                figures += [
                    Figure(f"{size}: {label}: requests/s", result.requests_per_s, "req/s"),
                    Figure(f"{size}: {label}: p50", result.p50_ms, "ms"),
                    Figure(f"{size}: {label}: p99", result.p99_ms, "ms", target, note=f"`{result.command}`"),
                ]
            except BenchError as exc:
                failures.append(f"{size}: {exc}")
        for label, path, headers in (("GET /books", "/books", {}), ("GET /orders", "/orders", auth)):
            try:
                w = walk(client, path, headers)
                expected = books if path == "/books" else ORDERS
                if w.items != expected:
                    raise BenchError(f"{label}: the walk through its pages listed {w.items}, not {expected}")
                note = f"{w.pages} pages of 100, {w.items:,} items in {w.seconds:.1f} s; one httpx client"
                figures += [
                    Figure(f"{size}: {label} every page: pages/s", w.pages / w.seconds, "pages/s", note=note),
                    Figure(f"{size}: {label} every page: p50", statistics.median(w.latencies_ms), "ms"),
                    Figure(f"{size}: {label} every page: p99", w.p(0.99), "ms"),
                ]
            except BenchError as exc:
                failures.append(f"{size}: {exc}")
        figures.append(Figure(f"{size}: region RSS after the runs", memory_mib(proc.pid)[0], "MiB"))
    return figures


def run_bench() -> Section:
    failures: list[str] = []
    figures: list[Figure] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bookstore-bench-catalog-") as tmp:
        for books in sizes():
            try:
                figures += measure_size(Path(tmp), books, failures)
            except BenchError as exc:
                failures.append(f"{books:,} books: {exc}")
    load = _load()
    section = Section(
        module="catalog",
        title="Catalog and history size at 56, 10k and 100k books",
        figures=figures,
        method=" ".join(
            (
                f"For each size, a fresh region is seeded in-process (its own tables, {CHUNK} writes to a",
                "shared transaction, each logged to the stream as an API write is) with that many books in",
                f"seven categories and one customer with {ORDERS:,} orders, its search index rebuilt from",
                "the table, then served by `bookstore region serve`. Fixed URLs are driven by wrk with",
                f"-c{load.connections} (moderate load, not saturation) after a warm-up; GET /books and GET",
                "/orders are walked page by page (limit 100) by one httpx client, one request at a time,",
                "latency measured at the client. Measuring starts once the stream consumers caught up. A",
                "search repeated by wrk is answered from the cached ranking (BookSearch); distinct queries",
                f"({len(distinct_queries())}: adjective and noun, a noun alone, a noun's first three",
                "letters, an author), each asked once by one client, measure the index itself, with the",
                "region's CPU time (utime + stime) over them. RSS is VmRSS of the region process.",
                "The 20 ms goals apply at the largest size.",
            )
        ),
        context={
            "Load generator": f"wrk -t{load.threads} -c{load.connections} -d{load.duration_s}s --latency",
            "Load average before": " ".join(f"{x:.2f}" for x in load_before),
            "Load average after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "Sizes": ", ".join(f"{n:,}" for n in sizes()),
        },
    )
    if failures:
        raise PartialResult(section, failures)
    return section
