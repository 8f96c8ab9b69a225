"""Instructions a region process executes per API request, counted by callgrind: this code beside another's.

    .venv/bin/python -m bench.instructions [--against SRC ...] [--requests N] [--repeat R]

Wall-clock figures on this shared 2-core machine move by tens of percent from one run to the next, too
much to tell a 5% change; callgrind counts the instructions a process executes, which do not depend
on what else the machine is doing. For each source tree (this checkout's src/, then each `--against`
src/ of another checkout, run through PYTHONPATH with this checkout's virtualenv), one region alone
(a one-region topology, so no peer is polled) is seeded, started under `valgrind --tool=callgrind`,
warmed up with 100 requests of each endpoint, and then, for each endpoint: counters zeroed, N
sequential requests from one keep-alive client, counters dumped. The figure is the dump's total
divided by N: everything the process executed meanwhile, on every thread (the handler, the group
commit's writer, background loops), so a timer that fires during the window counts too; `--repeat`
measures each tree again to show that noise. Requests are sequential, so each group commit holds one
write; under load the writes share commits and the storage part weighs less.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from bench.api import BOOKSTORE, EMAIL, PASSWORD, REGION_ID
from bench.servers import running
from bookstore.supervisor.launch import free_port

ADDRESS = "127.0.1.1"
BOOK_ID = "bk-cook-001"
WARMUP = 100
TOTALS = re.compile(r"^(?:summary|totals):\s+(\d+)", re.MULTILINE)

Request = Callable[[httpx.Client, dict[str, str]], httpx.Response]
ENDPOINTS: dict[str, Request] = {
    "GET /books/{id}": lambda c, h: c.get(f"/books/{BOOK_ID}"),
    "POST /cart": lambda c, h: c.post("/cart", json={"bookId": BOOK_ID, "quantity": 1}, headers=h),
    "POST /orders": lambda c, h: c.post(
        "/orders", json={"books": [{"bookId": BOOK_ID, "quantity": 1}]}, headers=h
    ),
}


def _topology(path: Path) -> str:
    """A topology of one region on free ports; returns its API URL."""
    port, s3_port = free_port(ADDRESS), free_port(ADDRESS)
    path.write_text(
        f'home_region = "{REGION_ID}"\nactive = ["{REGION_ID}"]\n\n[[regions]]\nid = "{REGION_ID}"\n'
        f'name = "Ireland"\nflag = "IE"\naddress = "{ADDRESS}"\napi_port = {port}\n'
        f"s3_port = {s3_port}\nlocation = [53.3, -6.2]\n",
        encoding="utf-8",
    )
    return f"http://{ADDRESS}:{port}"


def _bookstore(env: dict[str, str], *args: str) -> None:
    subprocess.run([str(BOOKSTORE), *args], env=env, check=True, capture_output=True, timeout=300)


@contextlib.contextmanager
def _region_under_callgrind(work: Path, src: Path | None) -> Iterator[tuple[str, int, Path]]:
    """A seeded region of the tree `src` (None: this one) under callgrind: its URL, pid, output file."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    url = _topology(work / "topology.toml")
    common = ["--data-dir", str(work / "data"), "--topology", str(work / "topology.toml")]
    _bookstore(env, "seed", "--region", REGION_ID, *common)
    _bookstore(env, "users", "add", EMAIL, "--password", PASSWORD, "--region", REGION_ID, *common)
    out = work / "callgrind.out"
    # `env` execs valgrind, so the pid running() sees is the region's, for callgrind_control.
    path = [] if src is None else [f"PYTHONPATH={src}"]
    argv = ["env", *path, "valgrind"]
    argv += ["--tool=callgrind", f"--callgrind-out-file={out}", sys.executable]
    argv += [str(BOOKSTORE), "region", "serve", "--region", REGION_ID, *common]
    # Under callgrind a region starts about fifty times slower than alone.
    with running(argv, f"{url}/health", work / "region.log", core=None, timeout_s=300) as proc:
        yield url, proc.pid, out


def _callgrind_control(option: str, pid: int) -> None:
    subprocess.run(["callgrind_control", option, str(pid)], check=True, capture_output=True, timeout=120)


def _dumped(out: Path, before: set[Path]) -> int:
    """The instruction total of the one dump written since `before` was listed."""
    new = sorted(set(out.parent.glob(out.name + ".*")) - before)
    if len(new) != 1:
        raise SystemExit(f"expected one new callgrind dump beside {out}, found {new}")
    found = TOTALS.search(new[0].read_text(encoding="utf-8", errors="replace"))
    if found is None:
        raise SystemExit(f"no instruction total in {new[0]}")
    return int(found.group(1))


def measure(src: Path | None, requests: int) -> dict[str, float]:
    """Instructions per request of each endpoint, for the tree `src` (None: this checkout)."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp,
        _region_under_callgrind(Path(tmp), src) as (url, pid, out),
        httpx.Client(base_url=url, timeout=120) as client,
    ):
        answer = client.post("/auth/signin", json={"email": EMAIL, "password": PASSWORD})
        answer.raise_for_status()
        headers = {"Authorization": f"Bearer {answer.json()['accessToken']}"}
        for request in ENDPOINTS.values():
            for _ in range(WARMUP):
                request(client, headers).raise_for_status()
        figures: dict[str, float] = {}
        for label, request in ENDPOINTS.items():
            before = set(out.parent.glob(out.name + ".*"))
            _callgrind_control("--zero", pid)
            for _ in range(requests):
                answer = request(client, headers)
                if answer.status_code not in (200, 201):
                    raise SystemExit(f"{label} answered {answer.status_code}: {answer.text[:300]}")
            _callgrind_control("--dump", pid)
            figures[label] = _dumped(out, before) / requests
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--against", type=Path, action="append", default=[], help="another tree's src/")
    parser.add_argument("--requests", type=int, default=500, help="requests per endpoint (default 500)")
    parser.add_argument("--repeat", type=int, default=1, help="measure each tree this many times")
    args = parser.parse_args()
    trees: list[tuple[str, Path | None]] = [("this checkout", None)]
    trees += [(str(src), src.resolve()) for src in args.against]
    results = {name: [measure(src, args.requests) for _ in range(args.repeat)] for name, src in trees}
    print(f"Instructions per request (callgrind, {args.requests} sequential requests per endpoint)\n")
    print_table(results, "this checkout")


def print_table(results: dict[str, list[dict[str, float]]], base_tree: str) -> None:
    """A Markdown table of each tree's runs: instructions per request, and the ratio to the base's first."""
    base = results[base_tree][0]
    print("| Tree | " + " | ".join(base) + " |")
    print("|---|" + "---:|" * len(base))
    for name, runs in results.items():
        for figures in runs:
            cells = [f"{figures[e]:,.0f} ({figures[e] / base[e]:.3f}x)" for e in base]
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
