"""Instructions a region executes per small S3 request, counted by callgrind: this tree beside a git ref's.

    .venv/bin/python -m bench.s3_instructions --against d181f21 [--requests 300] [--repeat 2]
    .venv/bin/python -m bench.s3_instructions --profile [--against d181f21]   # cProfile instead

Wall-clock S3 figures move by tens of percent on this shared machine; the instructions a region process
executes do not depend on the load. For each tree (this checkout's src/, then the ref's, checked out as
bench.s3_against does), one region alone (bench.objects's one-region topology) is started under
`valgrind --tool=callgrind`, a bucket is made and 64 objects of 4 KiB put, and then for PUT 4 KiB (a new
key each time) and GET 4 KiB, both boto3-presigned and sent one at a time over one keep-alive httpx
connection: warm-up, counters zeroed, N requests, counters dumped; the figure is the dump's total over N
(every thread of the process, background loops included). With `--profile` the region runs without
valgrind and a cProfile of its event-loop thread over the same windows is printed instead (a
sitecustomize on its PYTHONPATH turns the profiler on and off on SIGUSR1 and SIGUSR2).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

# Read and reset the counters as bench.instructions does for the API.
from bench.instructions import _callgrind_control, _dumped, print_table
from bench.objects import ACCESS_KEY, BIN, SECRET_KEY, SMALL, SOURCE, Target, one_region_topology, s3_client
from bench.s3_against import checked_out
from bench.servers import running
from bookstore.config import Topology

ROOT = Path(__file__).resolve().parent.parent
WARMUP = 30
KEYS = 64
# Loaded by the profiled region (on its PYTHONPATH): SIGUSR1 starts a cProfile of the main thread (the
# event loop's), SIGUSR2 stops it and writes its statistics to the file named in S3_PROFILE_OUT.
_SITECUSTOMIZE = """
import cProfile, os, signal
_profile = None
def _start(*_):
    global _profile
    _profile = cProfile.Profile()
    _profile.enable()
def _stop(*_):
    _profile.disable()
    _profile.dump_stats(os.environ["S3_PROFILE_OUT"])
signal.signal(signal.SIGUSR1, _start)
signal.signal(signal.SIGUSR2, _stop)
"""

Send = Callable[[httpx.Client, int], httpx.Response]


@contextlib.contextmanager
def _region(work: Path, src: Path, profile: bool) -> Iterator[tuple[Target, Path]]:
    """One region of the tree `src`, under callgrind (or with the profiling hook): target, output file."""
    topology = one_region_topology(work / "region.toml", SOURCE, "127.0.0.1", ACCESS_KEY, SECRET_KEY)
    region = Topology.load(topology).region(SOURCE)
    out = work / ("profile.out" if profile else "callgrind.out")
    path = str(src)
    wrap: list[str] = []
    if profile:
        (work / "hook").mkdir()
        (work / "hook" / "sitecustomize.py").write_text(_SITECUSTOMIZE, encoding="utf-8")
        path = f"{work / 'hook'}{os.pathsep}{src}"
    else:
        wrap = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    # `env` execs the region (or valgrind), so the pid running() sees is the region's.
    argv = ["env", f"PYTHONPATH={path}", f"S3_PROFILE_OUT={out}", *wrap, sys.executable]
    argv += [str(BIN / "bookstore"), "region", "serve", "--region", SOURCE]
    argv += ["--data-dir", str(work / "region-data"), "--topology", str(topology)]
    # Under callgrind a region starts about fifty times slower than alone.
    with running(argv, f"{region.api_url}/health", work / "region.log", core=None, timeout_s=600) as proc:
        yield Target("region", region.s3_url, SOURCE, ACCESS_KEY, SECRET_KEY, proc.pid), out


def _operations(target: Target, requests: int) -> dict[str, Send]:
    client = s3_client(target, 1)
    bucket = f"ins-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": target.region})
    small = os.urandom(SMALL)
    for i in range(KEYS):
        client.put_object(Bucket=bucket, Key=f"small-{i}", Body=small)

    def url(operation: str, key: str) -> str:
        params = {"Bucket": bucket, "Key": key}
        return str(client.generate_presigned_url(operation, Params=params, ExpiresIn=3600))

    puts = [url("put_object", f"put-{i}") for i in range(WARMUP + requests)]
    gets = [url("get_object", f"small-{i}") for i in range(KEYS)]
    return {
        "PUT 4 KiB": lambda c, i: c.put(puts[i], content=small),
        "GET 4 KiB": lambda c, i: c.get(gets[i % KEYS]),
    }


def _send(http: httpx.Client, send: Send, first: int, count: int, label: str) -> None:
    for i in range(first, first + count):
        answer = send(http, i)
        if answer.status_code != 200:
            raise SystemExit(f"{label} answered {answer.status_code}: {answer.text[:300]}")


def measure(src: Path, requests: int) -> dict[str, float]:
    """Instructions per request of each operation, for the tree `src`."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-s3-instructions-") as tmp,
        _region(Path(tmp), src, profile=False) as (target, out),
        httpx.Client(timeout=300) as http,
    ):
        assert target.pid is not None
        figures: dict[str, float] = {}
        for label, send in _operations(target, requests).items():
            _send(http, send, 0, WARMUP, label)
            before = set(out.parent.glob(out.name + ".*"))
            _callgrind_control("--zero", target.pid)
            _send(http, send, WARMUP, requests, label)
            _callgrind_control("--dump", target.pid)
            figures[label] = _dumped(out, before) / requests
        return figures


def profile(src: Path, requests: int, keep: Path | None) -> None:
    """Print a cProfile of the region's event-loop thread over each operation's window (and keep its
    statistics file in `keep`, when given)."""
    import pstats

    with (
        tempfile.TemporaryDirectory(prefix="bench-s3-profile-") as tmp,
        _region(Path(tmp), src, profile=True) as (target, out),
        httpx.Client(timeout=60) as http,
    ):
        assert target.pid is not None
        for label, send in _operations(target, requests).items():
            _send(http, send, 0, WARMUP, label)
            os.kill(target.pid, signal.SIGUSR1)
            time.sleep(0.5)
            _send(http, send, WARMUP, requests, label)
            os.kill(target.pid, signal.SIGUSR2)
            time.sleep(1.0)
            print(f"\n### {src}: {label}, {requests} requests\n")
            pstats.Stats(str(out)).sort_stats("tottime").print_stats(40)
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                name = f"{src.parent.name}-{label.split()[0].lower()}.pstats"
                (keep / name).write_bytes(out.read_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--against", default="", help="the git ref to compare with (e.g. d181f21)")
    parser.add_argument("--requests", type=int, default=300, help="requests per operation (default 300)")
    parser.add_argument("--repeat", type=int, default=1, help="measure each tree this many times")
    parser.add_argument("--profile", action="store_true", help="print cProfiles instead of counting")
    parser.add_argument("--keep", type=Path, help="with --profile: keep the statistics files here")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        trees = [("this tree", ROOT / "src")]
        if args.against:
            trees.append((args.against, stack.enter_context(checked_out(args.against))))
        if args.profile:
            for _, src in trees:
                profile(src, args.requests, args.keep)
            return
        # Alternate the trees, so that whatever drifts over the run does not fall on one side only.
        results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
        for _ in range(args.repeat):
            for name, src in trees:
                results[name].append(measure(src, args.requests))
    print(f"\nInstructions per request (callgrind, {args.requests} sequential requests per operation)\n")
    print_table(results, "this tree")


if __name__ == "__main__":
    main()
