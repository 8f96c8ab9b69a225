"""Instructions the S3 app alone executes per small request, counted by callgrind: this tree beside a ref's.

    .venv/bin/python -m bench.s3_app_instructions --against d181f21 [--requests 300] [--repeat 1]

bench.s3_instructions counts a whole region, background loops included, which run longer per request
the slower valgrind goes on a loaded machine: its figures move by several percent between runs. This
one counts only the S3 API: for each tree (this checkout's src/, then the ref's, checked out as
bench.s3_against does), a child process of this module runs under `valgrind --tool=callgrind` with one
LocalObjectStore (default durability, in a temporary directory) and the tree's `create_s3_app`, on one
event loop, with no server, socket or background task. Requests are boto3-presigned here, before the
count (the same URLs for both trees), and handed to the app as ASGI scopes: the store makes a bucket,
64 objects of 4 KiB are put, then for PUT 4 KiB (a new key each time) and GET 4 KiB: warm-up, counters
zeroed, N requests, counters dumped; the figure is the dump's total over N. The HTTP server's parsing
and writing (uvicorn) and the region's middlewares are not counted: the same code in both trees.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
REGION = "eu-west-1"
ACCESS_KEY, SECRET_KEY = "AKIABOOKSTOREBENCH01", "bookstore-bench-secret-key"
# Never contacted: the URLs are signed for it and handed to the app in process.
ENDPOINT = "http://127.0.0.1:9"
BUCKET = "app-ins"
KEYS = 64
WARMUP = 30
SMALL = 4 * 1024

# One request as the child replays it: method, path (raw), query (raw), body (hex in the file).
Request = tuple[str, str, str, bytes]


def _requests(requests: int) -> dict[str, list[tuple[str, str, str, str]]]:
    """The presigned requests of each phase, as JSON holds them (a body in hex, "" when none)."""
    import boto3
    from botocore.config import Config

    client = boto3.session.Session().client(
        "s3",
        endpoint_url=ENDPOINT,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    body = os.urandom(SMALL).hex()

    def signed(operation: str, params: dict[str, Any], content: str = "") -> tuple[str, str, str, str]:
        url = urlsplit(client.generate_presigned_url(operation, Params=params, ExpiresIn=3600))
        return (
            "PUT" if operation == "put_object" else "GET",
            url.path,
            url.query,
            content,
        )

    setup = [signed("put_object", {"Bucket": BUCKET, "Key": f"small-{i}"}, body) for i in range(KEYS)]
    count = WARMUP + requests
    return {
        "setup": setup,
        "PUT 4 KiB": [
            signed("put_object", {"Bucket": BUCKET, "Key": f"put-{i}"}, body) for i in range(count)
        ],
        "GET 4 KiB": [
            signed("get_object", {"Bucket": BUCKET, "Key": f"small-{i % KEYS}"}) for i in range(count)
        ],
    }


# -- the child, under callgrind, with the tree's bookstore first on its path ---------------------------


class _WallClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


_HOST = urlsplit(ENDPOINT).netloc.encode()


async def _send(app: Any, request: Request) -> int:
    method, path, query, body = request
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(path),
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", _HOST), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 9),
    }
    received = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received:
            return {"type": "http.disconnect"}
        received = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


def child(requests_file: Path, commands: TextIO, answers: TextIO) -> None:
    """Serve the phases named on `commands` (one a line: "<phase> <first> <count>"), "ok" after each."""
    from bookstore.objectstore.app import create_s3_app
    from bookstore.storage.local.objects import LocalObjectStore

    phases: dict[str, list[Request]] = {
        name: [(m, p, q, bytes.fromhex(b)) for m, p, q, b in rs]
        for name, rs in json.loads(requests_file.read_text()).items()
    }
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory(prefix="bench-s3-app-") as tmp:
        store = LocalObjectStore(Path(tmp) / "store", REGION, _WallClock())
        store.create_bucket(BUCKET)
        app = create_s3_app(store, {ACCESS_KEY: SECRET_KEY}, REGION, staging=Path(tmp))

        async def run(batch: list[Request]) -> None:
            for request in batch:
                status = await _send(app, request)
                if status != 200:
                    raise SystemExit(f"{request[0]} {request[1]} answered {status}")

        for line in commands:
            phase, first, count = line.rsplit(" ", 2)
            loop.run_until_complete(run(phases[phase][int(first) : int(first) + int(count)]))
            answers.write("ok\n")
            answers.flush()
        store.close()


# -- the parent ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _child(work: Path, src: Path, requests_file: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    out = work / "callgrind.out"
    argv = ["env", f"PYTHONPATH={src}{os.pathsep}{ROOT}", "valgrind", "--tool=callgrind"]
    argv += [f"--callgrind-out-file={out}", sys.executable, "-m", "bench.s3_app_instructions"]
    argv += ["--child", str(requests_file)]
    with (work / "child.log").open("w") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        yield proc, out
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _ask(proc: subprocess.Popen[str], line: str, log: Path) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    if proc.stdout.readline().strip() != "ok":
        raise SystemExit(f"the child failed at {line!r}:\n{log.read_text()[-3000:]}")


def measure(src: Path, requests_file: Path, requests: int) -> dict[str, float]:
    """Instructions per request of each operation, for the tree `src`."""
    from bench.instructions import _callgrind_control, _dumped

    with tempfile.TemporaryDirectory(prefix="bench-s3-app-instructions-") as tmp:
        work = Path(tmp)
        log = work / "child.log"
        with _child(work, src, requests_file) as (proc, out):
            _ask(proc, f"setup 0 {KEYS}", log)
            figures: dict[str, float] = {}
            for label in ("PUT 4 KiB", "GET 4 KiB"):
                _ask(proc, f"{label} 0 {WARMUP}", log)
                before = set(out.parent.glob(out.name + ".*"))
                _callgrind_control("--zero", proc.pid)
                _ask(proc, f"{label} {WARMUP} {requests}", log)
                _callgrind_control("--dump", proc.pid)
                figures[label] = _dumped(out, before) / requests
            return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--against", default="", help="the git ref to compare with (e.g. d181f21)")
    parser.add_argument("--requests", type=int, default=300, help="requests per operation (default 300)")
    parser.add_argument("--repeat", type=int, default=1, help="measure each tree this many times")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, sys.stdin, sys.stdout)
        return
    # Here, not at the top: the child imports this module with another tree's bookstore on its path.
    from bench.instructions import print_table
    from bench.s3_against import checked_out

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-s3-app-requests-")))
        requests_file = tmp / "requests.json"
        requests_file.write_text(json.dumps(_requests(args.requests)))
        trees = [("this tree", ROOT / "src")]
        if args.against:
            trees.append((args.against, stack.enter_context(checked_out(args.against))))
        results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
        for _ in range(args.repeat):
            for name, src in trees:
                results[name].append(measure(src, requests_file, args.requests))
    print(
        f"\nInstructions per request, the S3 app alone (callgrind, {args.requests} requests per operation)\n"
    )
    print_table(results, "this tree")


if __name__ == "__main__":
    main()
