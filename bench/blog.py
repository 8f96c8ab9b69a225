"""Blog replication: replica lag of our log shipping beside MariaDB's own replication, and promotion time."""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.loadgen import cores
from bench.replication import DEST, SOURCE, System, system_up
from bench.report import BenchError, Figure, Goal, PartialResult, Section
from bookstore.replication.blog.node import POLL_S
from bookstore.replication.blog.peers import PeerRefused

DELAY_MS = 85.0
RATES = (50, 500)
RUN_S = 8.0
# The goals: lag within 1.5 x MariaDB's under the same load; promote to first write under 1 s.
RATIO_GOAL = 1.5
PROMOTE_GOAL_S = 1.0
# Both replicas are watched the same way: their log polled this often, a record's arrival being the poll
# that first sees it (so each lag carries up to this much of polling, on both sides alike).
WATCH_S = 0.002
ARRIVAL_TIMEOUT_S = 60.0
PACE_TOLERANCE = 0.98
WRITERS = 2
DATABASE = "blog"
ROOT = Path(__file__).resolve().parent.parent
AUTHOR = "bench-author@blog.example"
PASSWORD = "bench-author-password"

METHOD = f"""
A writer adds comments to a post (one change record each, through the repository's logged write path)
in the primary at a paced rate ({WRITERS} writer threads, each write started on schedule) for
{RUN_S:.0f} s; a watcher polls the replica's change log every {WATCH_S * 1000:.0f} ms and takes a
record's lag as the time it is first seen there minus its write time on the primary (one machine, one
clock). The same writer and watcher run against both backends in the same run, with the link at
{DELAY_MS:.0f} ms one way:
- sqlite: `bookstore up` with two region processes; the replica region follows the primary's log over
  HTTP through the supervisor's link simulator. The writer is the bench process writing into the
  primary region's blog.db (as the region's own writes would), so the primary region sees the commits
  by polling its log's head every {POLL_S * 1000:.0f} ms, once for all its streams
  (bookstore.replication.blog.node POLL_S): up to that much of each lag is that poll; writes through
  the region's API wake its streams at once.
- MariaDB: two mariadbd (GTID, row events, log_slave_updates, read_only replica); the replica's
  connection to the primary crosses a LinkSimulator of its own process with the same delay both ways.
Promotion: the primary region is killed (kill -9), `promote` is sent to the replica region (a signed
operator request, what `bookstore blog promote` sends) and posts are sent to its API until one is
accepted (201): the figure is the time from sending `promote` to that 201. MariaDB's is the same with
replication.blog.mariadb.promote and a write through the repository.
"""


# -- measuring -----------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One paced run: the write rate achieved and each record's lag, ms."""

    target_rate: float
    written: int
    elapsed_s: float
    lags_ms: list[float]

    @property
    def rate(self) -> float:
        return self.written / self.elapsed_s if self.elapsed_s > 0 else math.nan

    def percentile(self, q: float) -> float:
        ordered = sorted(self.lags_ms)
        if not ordered:
            return math.nan
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _post(i: int, run_id: str) -> Any:
    from bookstore.blog.posts import Post

    now = int(time.time() * 1000)
    title = f"Bench {run_id} {i}"
    body = "A short post about a book. It replicates to every region."
    return Post(0, "", title, body, f"<p>{body}</p>", body, "bench", "Bench", (), (), now, now)


def commenter(repository: Any) -> Callable[[str], object]:
    """A write of the load: a comment on a post of its own (one change record), as readers write most."""
    from bookstore.blog.posts import Comment

    post = repository.insert_post(_post(0, f"comments-{time.monotonic_ns()}"), explicit_slug=False)

    def write(text: str) -> object:
        now = int(time.time() * 1000)
        return repository.insert_comment(Comment(0, post.id, "bench", "Bench", text, f"<p>{text}</p>", now))

    return write


def measure(
    write: Callable[[str], object],
    head: Callable[[], int],
    arrivals: Callable[[int], list[tuple[int, int]]],
    rate: float,
    seconds: float,
) -> Run:
    """Writes at `rate` for `seconds` (absolute schedule) while a watcher records arrivals at the replica.

    `arrivals(after)` returns (lsn, written_ms) of the replica's records after lsn `after`.
    """
    run_id = f"{int(rate)}-{time.monotonic_ns()}"
    start_lsn = head()
    seen: dict[int, float] = {}
    done = threading.Event()
    target: list[int] = []
    errors: list[BaseException] = []

    def watch() -> None:
        after = start_lsn
        try:
            while True:
                rows = arrivals(after)
                now_ms = time.time() * 1000
                for lsn, written_ms in rows:
                    seen[lsn] = max(0.0, now_ms - written_ms)
                    after = max(after, lsn)
                if done.is_set() and target and after >= target[0]:
                    return
                time.sleep(WATCH_S)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    watcher = threading.Thread(target=watch, name="watcher", daemon=True)
    watcher.start()
    count = int(rate * seconds)
    # Writes start on an absolute schedule; a pool lets one that waits (a lock, a slow commit) not hold
    # back the ones due after it, as independent users' writes would not be.
    with concurrent.futures.ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="writer") as pool:
        started = time.monotonic()
        pending = []
        for i in range(count):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pending.append(pool.submit(write, f"Comment {i} of run {run_id}."))
        for future in pending:
            future.result()
    elapsed = time.monotonic() - started
    target.append(head())
    done.set()
    watcher.join(timeout=ARRIVAL_TIMEOUT_S)
    if errors:
        raise BenchError(f"the watcher failed: {errors[0]!r}")
    if watcher.is_alive():
        raise BenchError(f"the replica did not receive lsn {target[0]} within {ARRIVAL_TIMEOUT_S:.0f} s")
    run = Run(rate, count, elapsed, [lag for lsn, lag in seen.items() if lsn > start_lsn])
    if run.rate < rate * PACE_TOLERANCE:
        raise BenchError(
            f"the writer reached {run.rate:.0f} writes/s, not {rate:.0f}: the lag is not at that rate"
        )
    return run


# -- the sqlite regions --------------------------------------------------------------------------------------


def _caught_up(system: System) -> None:
    deadline = time.monotonic() + 60
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, KeyError, TypeError, ValueError):
            last = httpx.get(system.urls[DEST] + "/status", timeout=5).json()["blog"]
            if last["peers"][SOURCE]["connected"] and last["lagEntries"] == 0:
                return
        time.sleep(0.2)
    raise BenchError(f"{DEST}'s blog did not follow {SOURCE} within 60 s: {last}")


@contextlib.contextmanager
def sqlite_sides(
    system: System,
) -> Iterator[tuple[Callable[[str], object], Callable[[], int], Callable[[int], Any]]]:
    from bookstore.blog.repository import BlogRepository
    from bookstore.storage.sqlite.sql import SqliteSql

    primary_db = SqliteSql(system.data / SOURCE / "blog.db")
    replica_db = SqliteSql(system.data / DEST / "blog.db")
    try:
        primary = BlogRepository(primary_db, region=SOURCE)

        def arrivals(after: int) -> list[tuple[int, int]]:
            rows = replica_db.query(
                "SELECT lsn, written_ms FROM blog_changelog WHERE lsn > ? ORDER BY lsn", (after,)
            )
            return [(int(a), int(b)) for a, b in rows]

        yield commenter(primary), primary.head_lsn, arrivals
    finally:
        primary_db.close()
        replica_db.close()


def _bookstore(system: System, *args: str) -> None:
    argv = [sys.executable, "-m", "bookstore", *args, "--topology", str(system.data.parent / "topology.toml")]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    if done.returncode != 0:
        raise BenchError(f"bookstore {' '.join(args)} failed: {done.stderr[-500:]}")


def _signin(url: str) -> dict[str, str]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.post(f"{url}/auth/signin", json={"email": AUTHOR, "password": PASSWORD}, timeout=10)
            if r.status_code == 200:
                return {"Authorization": f"Bearer {r.json()['accessToken']}"}
        time.sleep(0.2)
    raise BenchError(f"the author could not sign in at {url} within 60 s")


def sqlite_promotion(system: System) -> float:
    """Seconds from sending `promote` to the replica region until a post there is accepted."""
    from bookstore.kernel.clock import SystemClock
    from bookstore.replication.blog.operator import Operator
    from bookstore.runtime.secret import operator_secret

    _bookstore(system, "users", "add", AUTHOR, "--password", PASSWORD, "--role", "author",
               "--data-dir", str(system.data), "--region", SOURCE)  # fmt: skip
    headers = _signin(system.urls[DEST])
    system.control("POST", f"/regions/{SOURCE}/kill")
    body = {"title": "The first post after the promotion", "content": "Written at once."}
    with (
        Operator({DEST: system.urls[DEST]}, operator_secret(system.data), SystemClock()) as operator,
        httpx.Client(base_url=system.urls[DEST], timeout=10) as client,
    ):
        started = time.monotonic()
        # Forced, as the workshop's module 4 after its primary is gone: of two regions, the survivor
        # alone is no majority, and a promotion without force is refused (409) by design.
        operator.promote(DEST, force=True)
        while True:
            r = client.post("/blog/wp-json/wp/v2/posts", json=body, headers=headers)
            if r.status_code == 201:
                return time.monotonic() - started
            if r.status_code != 503 or time.monotonic() - started > 30:
                raise BenchError(f"no write accepted after the promotion: {r.status_code} {r.text[:300]}")


# -- MariaDB -------------------------------------------------------------------------------------------------


def _links_main(argv: Sequence[str]) -> int:
    """`python -m bench.blog links TOPOLOGY_JSON PORT...`: a LinkSimulator until SIGTERM."""
    import asyncio

    from bookstore.config import Topology
    from bookstore.netsim.simulator import LinkSimulator

    topology = Topology.model_validate(json.loads(argv[0]))
    ports = [int(p) for p in argv[1:]]
    a, b = (r.id for r in topology.regions)

    async def serve() -> None:
        sim = LinkSimulator(topology, ports, delays={(a, b): DELAY_MS, (b, a): DELAY_MS})
        await sim.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        await stop.wait()
        await sim.stop()

    asyncio.run(serve())
    return 0


@dataclass
class Mariadb:
    primary: Any
    replica: Any
    primary_db: Any
    replica_db: Any


@contextlib.contextmanager
def mariadb_pair(work: Path) -> Iterator[Mariadb]:
    """Two servers; the replica reaches the primary through a link process at DELAY_MS one way."""
    from tests.support.mariadb_server import mariadb_server, mariadbd_binary

    from bookstore.blog.repository import BlogRepository
    from bookstore.config import Region, Topology, link_address
    from bookstore.replication.blog.mariadb import (
        SERVER_ARGS,
        Accounts,
        MysqlServer,
        configure_replica,
        create_accounts,
        make_primary,
    )
    from bookstore.storage.mysql.sql import MysqlSql

    if mariadbd_binary() is None:
        raise BenchError("mariadbd is not installed (apt-get install mariadb-server)")
    base = 1 + (os.getpid() % 120) * 2
    addresses = {SOURCE: f"127.78.{base}.1", DEST: f"127.78.{base + 1}.1"}
    accounts = Accounts("blog_app", "bench-app-password", "repl", "bench-repl-password")

    def args(region: str) -> list[str]:
        return [*SERVER_ARGS, f"--bind-address=127.0.0.1,{addresses[region]}"]

    with (
        mariadb_server(11, args(SOURCE), log_bin=True, gtid_strict_mode=True) as a,
        mariadb_server(12, args(DEST), log_bin=True, gtid_strict_mode=True) as b,
    ):
        topology = Topology(
            regions=tuple(Region(id=r, name=r, flag="", address=addr) for r, addr in addresses.items()),
            active=(SOURCE, DEST),
            home_region=SOURCE,
        )
        argv = [sys.executable, "-m", "bench.blog", "links", topology.model_dump_json(), str(a.port)]
        links = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=(work / "links.log").open("wb"), cwd=ROOT
        )
        try:
            if links.stdout is None or links.stdout.readline().strip() != b"ready":
                raise BenchError(f"the link process did not start: {(work / 'links.log').read_text()[-500:]}")
            admin_a = MysqlServer(a.host, a.port, a.user, a.password)
            admin_b = MysqlServer(b.host, b.port, b.user, b.password)
            for server in (admin_a, admin_b):
                create_accounts(server, DATABASE, accounts)
            make_primary(admin_a, DATABASE)
            primary_db = MysqlSql(a.host, a.port, accounts.app_user, accounts.app_password, DATABASE)
            replica_db = MysqlSql(b.host, b.port, accounts.app_user, accounts.app_password, DATABASE)
            try:
                BlogRepository.open(primary_db, region=SOURCE, primary_region=SOURCE)
                configure_replica(
                    admin_b, admin_a, database=DATABASE, accounts=accounts, region=DEST,
                    primary_region=SOURCE, epoch=1, via=(link_address(topology, DEST, SOURCE), a.port),
                )  # fmt: skip
                yield Mariadb(admin_a, admin_b, primary_db, replica_db)
            finally:
                primary_db.close()
                replica_db.close()
        finally:
            links.send_signal(signal.SIGTERM)
            try:
                links.wait(timeout=10)
            except subprocess.TimeoutExpired:
                links.kill()
                links.wait()


def mariadb_sides(pair: Mariadb) -> tuple[Callable[[str], object], Callable[[], int], Callable[[int], Any]]:
    from bookstore.blog.repository import BlogRepository

    primary = BlogRepository(pair.primary_db, region=SOURCE)

    def arrivals(after: int) -> list[tuple[int, int]]:
        rows = pair.replica_db.query(
            "SELECT lsn, written_ms FROM blog_changelog WHERE lsn > ? ORDER BY lsn", (after,)
        )
        return [(int(a), int(b)) for a, b in rows]

    return commenter(primary), primary.head_lsn, arrivals


def mariadb_promotion(pair: Mariadb) -> float:
    """Seconds from `promote` (the primary's server killed first) to a write accepted by the replica."""
    from bookstore.blog.repository import BlogRepository
    from bookstore.domain.errors import Unavailable
    from bookstore.replication.blog.mariadb import promote

    replica = BlogRepository(pair.replica_db, region=DEST)
    started = time.monotonic()
    promote(pair.replica, database=DATABASE, region=DEST)
    while True:
        try:
            replica.insert_post(_post(0, "promoted"), explicit_slug=False)
            return time.monotonic() - started
        except Unavailable:
            if time.monotonic() - started > 30:
                raise BenchError("MariaDB's promoted replica accepted no write within 30 s") from None


# -- the section ---------------------------------------------------------------------------------------------


def _lag_figures(backend: str, run: Run, note: str = "") -> list[Figure]:
    label = f"Blog replica lag, {backend}, {run.target_rate:.0f} writes/s, link {DELAY_MS:.0f} ms"
    return [
        Figure(f"{label}, p50", run.percentile(0.50), "ms", note=note),
        Figure(f"{label}, p99", run.percentile(0.99), "ms"),
    ]


def run_bench() -> Section:
    first, second = cores()
    figures: list[Figure] = []
    failures: list[str] = []
    ours: dict[int, Run] = {}
    theirs: dict[int, Run] = {}
    context: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bookstore-bench-blog-") as tmp:
        work = Path(tmp)
        (work / "sqlite").mkdir()
        try:
            with system_up(work / "sqlite", first, second) as system:
                system.set_delay(DELAY_MS)
                _caught_up(system)
                with sqlite_sides(system) as (write, head, arrivals):
                    measure(write, head, arrivals, 50, 1.0)  # warm-up: streams open, caches warm
                    for rate in RATES:
                        try:
                            ours[rate] = measure(write, head, arrivals, rate, RUN_S)
                        except BenchError as exc:
                            failures.append(f"sqlite regions at {rate} writes/s: {exc}")
                            continue
                        figures += _lag_figures(
                            "sqlite regions", ours[rate], f"includes up to {POLL_S * 1000:.0f} ms of polling"
                        )
                try:
                    took = sqlite_promotion(system)
                    figures.append(
                        Figure(
                            "Blog promote to first accepted write, sqlite regions",
                            took,
                            "s",
                            Goal.maximum(PROMOTE_GOAL_S),
                            note="primary region killed; a signed promote, then posts through the API",
                        )
                    )
                except (BenchError, PeerRefused) as exc:
                    failures.append(f"promotion (sqlite): {exc}")
        except BenchError as exc:
            failures.append(f"sqlite regions: {exc}")
        (work / "mariadb").mkdir()
        try:
            with mariadb_pair(work / "mariadb") as pair:
                write, head, arrivals = mariadb_sides(pair)
                measure(write, head, arrivals, 50, 1.0)
                for rate in RATES:
                    try:
                        theirs[rate] = measure(write, head, arrivals, rate, RUN_S)
                    except BenchError as exc:
                        failures.append(f"MariaDB at {rate} writes/s: {exc}")
                        continue
                    figures += _lag_figures("MariaDB replication", theirs[rate])
                try:
                    figures.append(
                        Figure("Blog promote to first accepted write, MariaDB", mariadb_promotion(pair), "s")
                    )
                except BenchError as exc:
                    failures.append(f"promotion (MariaDB): {exc}")
        except BenchError as exc:
            failures.append(f"MariaDB: {exc}")
    for rate in RATES:
        if rate in ours and rate in theirs:
            for q, name in ((0.50, "p50"), (0.99, "p99")):
                ratio = ours[rate].percentile(q) / theirs[rate].percentile(q)
                figures.append(
                    Figure(
                        f"Blog lag {name} ratio sqlite / MariaDB at {rate} writes/s",
                        ratio,
                        "x",
                        Goal.maximum(RATIO_GOAL),
                    )
                )
        for backend, runs in (("sqlite", ours), ("MariaDB", theirs)):
            if rate in runs:
                context[f"Writes/s achieved at {rate}/s, {backend}"] = f"{runs[rate].rate:.1f}"
    context["Pinning"] = (
        f"sqlite: the primary region and the writer on core {first}, the replica region and the link "
        f"simulator on core {second}; MariaDB: not pinned"
        if first is not None
        else "not pinned (fewer than two cores available)"
    )
    section = Section(
        module="blog", title="Blog replication", figures=figures, method=METHOD, context=context
    )
    if failures:
        if not figures:
            raise BenchError("\n".join(failures))
        raise PartialResult(section, failures)
    return section


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.blog")
    parser.add_argument("command", choices=["links"])
    _, rest = parser.parse_known_args(argv)
    return _links_main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
