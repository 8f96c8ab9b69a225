"""Throughput and latency of one region process's API beside the machine's ceiling, from the same run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench import ceiling
from bench.loadgen import Load, Result, cores, lua_script, run, wrk_version
from bench.report import BenchError, Figure, Goal, PartialResult, Section
from bench.servers import running
from bookstore.api.paging import NEXT_CURSOR
from bookstore.config import Topology
from bookstore.services.catalog import seed_books
from bookstore.services.pages import MAX_LIMIT
from bookstore.supervisor.launch import free_port

REGION_ID = "eu-west-1"
CATEGORY = "Cookbooks"
EMAIL = "bench@bench.example"
PASSWORD = "bench-password-42"
CEILING_HOST = "127.0.0.1"
BOOKSTORE = Path(sys.executable).with_name("bookstore")


@dataclass(frozen=True)
class Endpoint:
    """One API request driven by wrk: what it is called in the report, and the goal of its ratio."""

    label: str
    method: str
    path: str
    body: object | None
    needs_token: bool
    expect: tuple[int, ...]
    goal: float | None = None
    # A GET listing what the requests wrote, to prove every answered write was kept.
    listed_at: str | None = None


@dataclass(frozen=True)
class Measured:
    """An endpoint's wrk result and what was checked about it afterwards."""

    result: Result
    note: str = ""


# The goals are ratios to the raw ASGI ceiling (issue 16); the Starlette ceiling is a second reference.
def endpoints(book_id: str) -> list[Endpoint]:
    # POST /orders goes last: the best-sellers consumer catching up on its orders must not slow another run.
    return [
        Endpoint("GET /books/{id}", "GET", f"/books/{book_id}", None, False, (200,), goal=0.75),
        Endpoint(
            f"GET /books?category={CATEGORY}", "GET", f"/books?category={CATEGORY}", None, False, (200,)
        ),
        Endpoint("POST /cart", "POST", "/cart", {"bookId": book_id, "quantity": 1}, True, (200, 201), 0.3),
        Endpoint(
            "POST /orders",
            "POST",
            "/orders",
            {"books": [{"bookId": book_id, "quantity": 1}]},
            True,
            (201,),
            0.2,
            listed_at="/orders",
        ),
    ]


def bookstore(*args: str) -> None:
    done = subprocess.run([str(BOOKSTORE), *args], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise BenchError(
            f"bookstore {' '.join(args)} exited {done.returncode}:\n{done.stderr or done.stdout}"
        )


def _measure(url: str, load: Load, script: Path | None, core: int | None) -> Result:
    if load.warmup_s > 0:
        run(url, load, duration_s=load.warmup_s, script=script, core=core)
    return run(url, load, script=script, core=core)


def ceiling_book() -> dict[str, Any]:
    """The book the ceilings answer: the one GET /books/{id} is measured on (checked in run_region)."""
    return next(book for book in seed_books() if book["category"] == CATEGORY)


def _measure_ceiling(
    work: Path, kind: str, load: Load, server_core: int | None, wrk_core: int | None
) -> Result:
    port = free_port(CEILING_HOST)
    url = f"http://{CEILING_HOST}:{port}{ceiling.PATH}"
    book = work / "ceiling-book.json"
    book.write_bytes(orjson.dumps(ceiling_book()))
    argv = [sys.executable, "-m", "bench.ceiling", "--host", CEILING_HOST, "--port", str(port)]
    argv += ["--kind", kind, "--book", str(book)]
    # A GET script like the API's, so wrk does the same work per request for both.
    script = work / "get-ceiling.lua"
    script.write_text(lua_script("GET", {}, None), encoding="utf-8")
    with running(argv, url, work / f"ceiling-{kind}.log", core=server_core):
        return _measure(url, load, script, wrk_core)


def check(client: httpx.Client, endpoint: Endpoint, headers: Mapping[str, str]) -> None:
    """One request by hand first: wrk counts statuses but cannot tell a 200 from the 200 we meant."""
    answer = client.request(endpoint.method, endpoint.path, json=endpoint.body, headers=dict(headers))
    if answer.status_code not in endpoint.expect:
        wanted = " or ".join(map(str, endpoint.expect))
        raise BenchError(
            f"{endpoint.label} answered {answer.status_code}, expected {wanted}: {answer.text[:300]}"
        )


def sign_in(client: httpx.Client) -> str:
    answer = client.post("/auth/signin", json={"email": EMAIL, "password": PASSWORD})
    if answer.status_code != 200:
        raise BenchError(f"sign-in answered {answer.status_code}: {answer.text[:300]}")
    token: str = answer.json()["accessToken"]
    return token


def pick_book(client: httpx.Client) -> str:
    """The book GET /books/{id} is measured on: the one the ceilings answer, byte for byte."""
    book_id: str = ceiling_book()["id"]
    answer = client.get(f"/books/{book_id}")
    if answer.status_code != 200:
        raise BenchError(f"GET /books/{book_id} answered {answer.status_code}; was it seeded?")
    if answer.content != orjson.dumps(ceiling_book()):
        raise BenchError(f"GET /books/{book_id} does not answer the ceilings' bytes: {answer.text[:300]}")
    return book_id


def _figures(label: str, r: Result, note: str) -> list[Figure]:
    return [
        Figure(f"{label}: requests/s", r.requests_per_s, "req/s", note=note),
        Figure(f"{label}: p50 latency", r.p50_ms, "ms"),
        Figure(f"{label}: p99 latency", r.p99_ms, "ms"),
    ]


def _ratios(label: str, r: Result, raw_rps: float, starlette_rps: float, goal: float | None) -> list[Figure]:
    return [
        Figure(
            f"{label}: ratio to the raw ASGI ceiling",
            r.requests_per_s / raw_rps,
            "x",
            Goal.minimum(goal) if goal is not None else None,
        ),
        Figure(f"{label}: ratio to the Starlette ceiling", r.requests_per_s / starlette_rps, "x"),
    ]


def _best_ceiling(
    work: Path, kind: str, load: Load, server_core: int | None, wrk_core: int | None, before: Result
) -> tuple[Result, str]:
    """The ceiling `kind` measured again after the API, the higher of both kept, and a note saying so."""
    after = _measure_ceiling(work, kind, load, server_core, wrk_core)
    top = max(before, after, key=lambda r: r.requests_per_s)
    note = (
        f"{before.requests_per_s:,.0f} req/s before the API runs, {after.requests_per_s:,.0f} after; "
        f"the higher is kept. `{top.command}`"
    )
    return top, note


def topology_file(path: Path) -> Topology:
    """The default topology with the bench region on free ports, so a running `make up` or a test that
    holds the region's usual ports neither blocks the bench nor gets measured by it."""
    default = Topology()
    port = free_port(default.region(REGION_ID).address)
    s3_port = free_port(default.region(REGION_ID).address)
    lines: list[str] = []
    for r in default.regions:
        lines += [
            "[[regions]]",
            f"id = {json.dumps(r.id)}",
            f"name = {json.dumps(r.name, ensure_ascii=False)}",
            f"flag = {json.dumps(r.flag, ensure_ascii=False)}",
            f"address = {json.dumps(r.address)}",
            f"api_port = {port if r.id == REGION_ID else r.api_port}",
            f"s3_port = {s3_port if r.id == REGION_ID else r.s3_port}",
            f"location = [{r.location[0]!r}, {r.location[1]!r}]",
            "",
        ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return Topology.load(path)


def _count_listed(client: httpx.Client, path: str, headers: Mapping[str, str]) -> int:
    """How many items the paged list at `path` holds, following X-Next-Cursor to the last page."""
    auth = {k: v for k, v in headers.items() if k == "Authorization"}
    listed, params = 0, {"limit": str(MAX_LIMIT)}
    while True:
        answer = client.get(path, params=params, headers=auth, timeout=120)
        if answer.status_code != 200:
            raise BenchError(f"GET {path} answered {answer.status_code}: {answer.text[:300]}")
        listed += len(answer.json())
        cursor = answer.headers.get(NEXT_CURSOR)
        if cursor is None:
            return listed
        params = {"limit": str(MAX_LIMIT), "cursor": cursor}


def run_region(
    work: Path, load: Load, server_core: int | None, wrk_core: int | None, failures: list[str]
) -> dict[str, Measured]:
    """Seed a fresh data directory, serve it as one region, and drive every endpoint with wrk.

    An endpoint that fails is added to `failures` and the others are still measured.
    """
    topology_path = work / "topology.toml"
    region = topology_file(topology_path).region(REGION_ID)
    common = ["--data-dir", str(work / "data"), "--topology", str(topology_path)]
    bookstore("seed", "--region", REGION_ID, *common)
    bookstore("users", "add", EMAIL, "--password", PASSWORD, "--region", REGION_ID, *common)
    argv = [str(BOOKSTORE), "region", "serve", "--region", REGION_ID, *common]
    results: dict[str, Measured] = {}
    with (
        running(argv, f"{region.api_url}/health", work / "region.log", core=server_core),
        httpx.Client(base_url=region.api_url, timeout=10.0) as client,
    ):
        token = sign_in(client)
        book_id = pick_book(client)
        for endpoint in endpoints(book_id):
            headers = {"Content-Type": "application/json"} if endpoint.body is not None else {}
            if endpoint.needs_token:
                headers["Authorization"] = f"Bearer {token}"
            slug = "-".join(filter(None, re.split(r"[^a-z0-9]+", endpoint.label.lower())))
            script = work / f"{slug}.lua"
            script.write_text(lua_script(endpoint.method, headers, endpoint.body), encoding="utf-8")
            try:
                check(client, endpoint, headers)
                result = _measure(f"{region.api_url}{endpoint.path}", load, script, wrk_core)
                note = f"`{result.command}`"
                if endpoint.listed_at is not None:
                    listed = _count_listed(client, endpoint.listed_at, headers)
                    # In-flight requests at wrk's stop may be written without being counted, never fewer.
                    if listed < result.requests:
                        raise BenchError(
                            f"{endpoint.label}: wrk counted {result.requests} answers but GET "
                            f"{endpoint.listed_at} lists only {listed}"
                        )
                    note += (
                        f"; afterwards GET {endpoint.listed_at} lists {listed:,} (warm-up included), "
                        f"at least the {result.requests:,} answered in the measured run"
                    )
                results[endpoint.label] = Measured(result, note)
            except BenchError as exc:
                failures.append(str(exc))
    return results


def run_bench() -> Section:
    load = Load.from_env()
    server_core, wrk_core = cores()
    with tempfile.TemporaryDirectory(prefix="bookstore-bench-") as tmp:
        work = Path(tmp)
        # Each ceiling is taken before and after the region and the higher one kept: a busy moment on a
        # shared machine then lowers the ratios (a conservative verdict) instead of flattering them.
        raw_before = _measure_ceiling(work, "raw", load, server_core, wrk_core)
        starlette_before = _measure_ceiling(work, "starlette", load, server_core, wrk_core)
        failures: list[str] = []
        try:
            api = run_region(work, load, server_core, wrk_core, failures)
        except BenchError as exc:
            api = {}
            failures.append(str(exc))
        raw, raw_note = _best_ceiling(work, "raw", load, server_core, wrk_core, raw_before)
        starlette, starlette_note = _best_ceiling(
            work, "starlette", load, server_core, wrk_core, starlette_before
        )
    figures = _figures("Ceiling (raw ASGI app, orjson, the same book's bytes)", raw, raw_note)
    figures += _figures("Ceiling (Starlette route, the same book's bytes)", starlette, starlette_note)
    for endpoint in endpoints("{id}"):
        if endpoint.label in api:
            m = api[endpoint.label]
            figures += _figures(endpoint.label, m.result, m.note)
            figures += _ratios(
                endpoint.label, m.result, raw.requests_per_s, starlette.requests_per_s, endpoint.goal
            )
    pinned = (
        f"server on core {server_core}, wrk on core {wrk_core} (taskset)"
        if server_core is not None
        else "not pinned (fewer than two cores available)"
    )
    section = Section(
        module="api",
        title="API of one region process",
        figures=figures,
        method=" ".join(
            (
                f"One region process (`bookstore region serve --region {REGION_ID}`) on a freshly seeded",
                "data directory, driven by wrk one endpoint after another, each after a warm-up. Two",
                "ceilings answer the bytes GET /books/{id} answers (checked byte for byte) under the same",
                "server settings and wrk settings, in the same run: a raw ASGI app (orjson per request, no",
                "framework; the goals are ratios to it) and a Starlette route (a second reference). The",
                "region's answer carries two headers more (x-bookstore-region, x-request-id). wrk keeps",
                "every connection busy, so the",
                "latencies are those of a saturated server. POST bodies and the `Authorization: Bearer`",
                "header come from wrk Lua scripts; POST /orders carries no Idempotency-Key, so each request",
                "writes a new order. A run with any non-2xx answer or socket error is refused, not reported.",
            )
        ),
        context={
            "Server": ceiling.describe(),
            "Load generator": (
                f"wrk {wrk_version()}; -t{load.threads} -c{load.connections} "
                f"-d{load.duration_s}s --latency, {load.warmup_s} s warm-up per endpoint"
            ),
            "Pinning": pinned,
        },
    )
    if failures:
        raise PartialResult(section, failures)
    return section
