"""PUT and GET of an 8 MiB object against one region process: the part of bench/objects.py that
encryption at rest and checksums could slow down, alone and quick (no moto, no replication).

    .venv/bin/python -m bench.large_objects [ROUNDS] [--gets-only]

Prints, for PUT, GET and a 1 MiB range GET of an 8 MiB object, the median time of ROUNDS sequential
requests from one boto3 client, in MB/s, the region's CPU seconds per GiB moved, and the region's minor
page faults per request (memory the kernel had to map in: a fresh buffer per piece shows there).
`--gets-only` writes one object first and measures the two GETs of it alone (no PUT between them to
change the server's memory). Run it with PYTHONPATH pointing at another checkout's src/ to measure that
code with the same client.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench import procstat
from bench.objects import LARGE, MIB, cpu_seconds, region_server, s3_client


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--gets-only"]
    gets_only = "--gets-only" in sys.argv[1:]
    rounds = int(args[0]) if args else 20
    with (
        tempfile.TemporaryDirectory(prefix="bench-large-") as work,
        region_server(Path(work), None) as target,
    ):
        client = s3_client(target, 1)
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": target.region})
        body = os.urandom(LARGE)
        timings: dict[str, list[float]] = {"PUT": [], "GET": [], "GET 1 MiB range": []}
        if gets_only:
            del timings["PUT"]
            client.put_object(Bucket=bucket, Key="k", Body=body)
        cpu: dict[str, float] = dict.fromkeys(timings, 0.0)
        faults: dict[str, int] = dict.fromkeys(timings, 0)
        moved: dict[str, int] = dict.fromkeys(timings, 0)
        for n in range(rounds + 1):
            for op in timings:
                before_faults = minor_faults(target.pid)
                before_cpu, start = cpu_seconds(target.pid), time.perf_counter()
                if op == "PUT":
                    client.put_object(Bucket=bucket, Key=f"k{n}", Body=body)
                    size = LARGE
                elif op == "GET":
                    key = "k" if gets_only else f"k{n}"
                    size = len(client.get_object(Bucket=bucket, Key=key)["Body"].read())
                else:
                    wanted = f"bytes={3 * MIB + 5}-{4 * MIB + 4}"
                    key = "k" if gets_only else f"k{n}"
                    size = len(client.get_object(Bucket=bucket, Key=key, Range=wanted)["Body"].read())
                if n == 0:
                    continue  # the first round warms the server and the client up
                timings[op].append(time.perf_counter() - start)
                cpu[op] += cpu_seconds(target.pid) - before_cpu
                faults[op] += minor_faults(target.pid) - before_faults
                moved[op] += size
        for op, times in timings.items():
            rate = moved[op] / len(times) / statistics.median(times) / 1e6
            per_gib = cpu[op] / (moved[op] / (1024 * MIB))
            per_request = faults[op] / len(times)
            print(
                f"{op:>16}: {rate:7.1f} MB/s (median of {len(times)}), region CPU {per_gib:.2f} s/GiB, "
                f"{per_request:.0f} minor page faults per request"
            )


def minor_faults(pid: int | None) -> int:
    """The minor page faults of a process so far; 0 when unknown."""
    if pid is None:
        return 0
    try:
        return procstat.minor_faults(pid)
    except OSError:
        return 0


if __name__ == "__main__":
    main()
