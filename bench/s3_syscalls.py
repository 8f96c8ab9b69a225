"""Kernel-side cost of S3 requests: syscalls and user/system CPU per request, this tree beside a git ref's.

    .venv/bin/python -m bench.s3_syscalls --against d181f21 [--requests 2000] [--clients 4] [--only "8 MiB"]

Callgrind counts only user-space instructions, and wall or requests/s figures move by tens of percent on
this shared machine; what a request costs the kernel does not depend on the load. For each tree (a
detached worktree of the ref, as bench.s3_against makes, then this checkout's src/), one region alone
(bench.objects.region_server, pinned to the first core) is sent boto3-presigned requests one at a time
by `--clients` threads, each over its own keep-alive connection: PUT 4 KiB, GET 4 KiB and GET 8 MiB.
Each operation is warmed up, then run twice: once bare, the region's user and system CPU, minor page
faults and context switches read from /proc around it, and once under `strace -c -f -p <region>`, whose
summary gives the syscalls by name. All are divided by the requests sent; whatever the region's
background loops did in the window counts too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx

from bench.loadgen import cores
from bench.objects import LARGE, SMALL, region_server, s3_client
from bench.report import BenchError
from bench.s3_against import checked_out

ROOT = Path(__file__).resolve().parent.parent
WARMUP = 20
# Send = (client, index) -> response; the index picks a key (a PUT writes a new one each time).
Send = Callable[[httpx.Client, int], httpx.Response]


def counters(pid: int) -> dict[str, float]:
    """User and system CPU microseconds, minor page faults and context switches of a process (all its
    threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    switches = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for line in (task / "status").read_text().splitlines():
                if line.endswith("ctxt_switches:") or "ctxt_switches:" in line:
                    switches += int(line.split()[1])
    return {
        "user us": int(fields[11]) / tick * 1e6,
        "system us": int(fields[12]) / tick * 1e6,
        "minor faults": int(fields[7]),
        "context switches": switches,
    }


def strace_counts(path: Path) -> dict[str, int]:
    """Calls by syscall name from the summary table `strace -c` wrote."""
    counts: dict[str, int] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        # Rows: % time, seconds, usecs/call, calls, [errors,] syscall; the total row's name is "total".
        if len(parts) >= 5 and parts[0].replace(".", "").isdigit() and parts[-1] != "total":
            counts[parts[-1]] = int(parts[3])
    return counts


def traced(pid: int, out: Path, run: Callable[[], None]) -> dict[str, int]:
    """Syscalls of `pid` (every thread) while `run` runs."""
    tracer = subprocess.Popen(
        ["strace", "-c", "-f", "-p", str(pid), "-o", str(out)],
        stderr=subprocess.PIPE,
        text=True,
    )
    # strace reports each thread it attached to; give it time to reach them all before the window.
    time.sleep(1.0)
    try:
        run()
    finally:
        tracer.send_signal(signal.SIGINT)
        _, err = tracer.communicate(timeout=60)
    if not out.exists():
        raise BenchError(f"strace wrote no summary: {err[-500:]}")
    return strace_counts(out)


def operations(client: object, bucket: str, requests: int) -> dict[str, tuple[Send, int]]:
    """Each operation's sender and how many requests to send (an 8 MiB GET is worth fewer)."""
    total = WARMUP + 2 * requests
    small, large = os.urandom(SMALL), os.urandom(LARGE)
    put = client.put_object  # type: ignore[attr-defined]
    put(Bucket=bucket, Key="large", Body=large)
    for i in range(64):
        put(Bucket=bucket, Key=f"small-{i}", Body=small)
    sign = client.generate_presigned_url  # type: ignore[attr-defined]

    def url(operation: str, key: str) -> str:
        return str(sign(operation, Params={"Bucket": bucket, "Key": key}, ExpiresIn=3600))

    puts = [url("put_object", f"put-{uuid.uuid4().hex[:8]}-{i}") for i in range(total)]
    gets = [url("get_object", f"small-{i}") for i in range(64)]
    large_get = url("get_object", "large")
    return {
        "PUT 4 KiB": (lambda c, i: c.put(puts[i], content=small), requests),
        "GET 4 KiB": (lambda c, i: c.get(gets[i % 64]), requests),
        "GET 8 MiB": (lambda c, i: c.get(large_get), max(10, requests // 10)),
    }


def send_all(send: Send, first: int, count: int, clients: int) -> None:
    """Requests first..first+count-1, from `clients` threads, each over its own keep-alive connection."""
    numbers = iter(range(first, first + count))
    lock = threading.Lock()
    failures: list[str] = []

    def one_client() -> None:
        with httpx.Client(timeout=120) as http:
            while not failures:
                with lock:
                    i = next(numbers, None)
                if i is None:
                    return
                answer = send(http, i)
                if answer.status_code != 200:
                    failures.append(f"{answer.status_code} {answer.text[:300]}")

    threads = [threading.Thread(target=one_client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise BenchError(failures[0])


def measure(src: Path, requests: int, clients: int, only: str = "") -> dict[str, dict[str, float]]:
    """Per operation: CPU, faults, context switches and each syscall's count, per request."""
    server_core, _ = cores()
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-s3-syscalls-") as tmp:
        work = Path(tmp)
        with region_server(work, server_core, src) as target:
            pid = target.pid
            assert pid is not None
            client = s3_client(target, 1)
            bucket = f"sys-{uuid.uuid4().hex[:8]}"
            client.create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": target.region}
            )
            for name, (send, n) in operations(client, bucket, requests).items():
                if only and only not in name:
                    continue
                send_all(send, 0, WARMUP, clients)
                before = counters(pid)
                send_all(send, WARMUP, n, clients)
                after = counters(pid)
                figures = {k: (after[k] - before[k]) / n for k in before}
                trace = work / f"strace-{len(out)}.txt"
                counts = traced(pid, trace, partial(send_all, send, WARMUP + n, n, clients))
                figures |= {call: calls / n for call, calls in counts.items()}
                out[name] = figures
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--against", required=True, help="the git ref to compare with (e.g. d181f21)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per small operation")
    parser.add_argument("--clients", type=int, default=1, help="clients sending at once (default 1)")
    parser.add_argument("--only", default="", help="the operations whose name holds this (e.g. 8 MiB)")
    args = parser.parse_args()
    with checked_out(args.against) as before:
        got = {
            "before": measure(before, args.requests, args.clients, args.only),
            "this": measure(ROOT / "src", args.requests, args.clients, args.only),
        }
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{args.against} beside this tree, {args.clients} client(s); load average {load}")
    for op, old in got["before"].items():
        new = got["this"][op]
        print(f"\n{op}, per request\n\n| Figure | {args.against} | this tree | difference |")
        print("|---|---:|---:|---:|")
        names = ["user us", "system us"]
        names += sorted((set(old) | set(new)) - set(names), key=lambda k: -max(old.get(k, 0), new.get(k, 0)))
        for key in names:
            a, b = old.get(key, 0.0), new.get(key, 0.0)
            if a or b:
                print(f"| {key} | {a:,.2f} | {b:,.2f} | {b - a:+,.2f} |", flush=True)


if __name__ == "__main__":
    main()
