"""A 1 GiB `aws s3 cp` up and down through one region's S3 API: the region's peak memory growth and time.

The aws CLI (awscli from PyPI, run with this interpreter) uploads in 8 MiB parts on 10 threads and
downloads in ranged GETs, as users run it. The region's peak resident memory (VmHWM) is reset
(/proc/PID/clear_refs) before each copy and read after it, so the figure is what the copy added.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.objects import SOURCE, Target, region_server
from bench.report import BenchError, Figure, Goal, Section

MIB = 1024 * 1024
SIZE = 1024 * MIB
# Bounded means independent of the object's size: a region holding parts whole on 10 threads stays
# well under 256 MiB; one buffering the object would grow by about 1,024 MiB.
GROWTH_GOAL_MIB = 256.0


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {field} for process {pid}")


def _aws(target: Target, home: Path, *args: str) -> None:
    config = home / "aws-config"
    config.write_text("[default]\ns3 =\n    addressing_style = path\n")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "AWS_ACCESS_KEY_ID": target.access_key,
        "AWS_SECRET_ACCESS_KEY": target.secret_key,
        "AWS_ENDPOINT_URL": target.endpoint,
        "AWS_DEFAULT_REGION": target.region,
        "AWS_CONFIG_FILE": str(config),
    }
    done = subprocess.run(
        [sys.executable, "-m", "awscli", *args], env=env, capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        raise BenchError(f"aws {' '.join(args)} exited {done.returncode}: {done.stderr[-500:]}")


def _copy(target: Target, home: Path, *args: str) -> tuple[float, float]:
    """(MiB the region's peak memory grew by, seconds) for one aws CLI command."""
    assert target.pid is not None
    Path(f"/proc/{target.pid}/clear_refs").write_text("5")
    before = _kib(target.pid, "VmHWM")
    started = time.perf_counter()
    _aws(target, home, *args)
    seconds = time.perf_counter() - started
    return (_kib(target.pid, "VmHWM") - before) / 1024, seconds


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 * MIB):
            sha.update(chunk)
    return sha.hexdigest()


def run_bench() -> Section:
    with tempfile.TemporaryDirectory(prefix="bench-cli-copy-") as tmp:
        work = Path(tmp)
        source, copy = work / "one-gib.bin", work / "back.bin"
        with source.open("wb") as f:
            for index in range(SIZE // MIB):
                f.write(random.Random(index).randbytes(MIB))
        with region_server(work, None) as target:
            _aws(target, work, "s3", "mb", "s3://cli-copy")
            up = _copy(target, work, "s3", "cp", str(source), "s3://cli-copy/one-gib.bin")
            down = _copy(target, work, "s3", "cp", "s3://cli-copy/one-gib.bin", str(copy))
        if _digest(copy) != _digest(source):
            raise BenchError("the 1 GiB object read back differs from what was uploaded")
    label = "aws s3 cp of 1 GiB through one region"
    return Section(
        module="cli_copy",
        title="A 1 GiB aws s3 cp up and down: the region's memory",
        figures=[
            Figure(f"{label}, up: region's peak memory growth", up[0], "MiB", Goal.maximum(GROWTH_GOAL_MIB)),
            Figure(f"{label}, up: time", up[1], "s", note=f"{SIZE / MIB / up[1]:.0f} MiB/s"),
            Figure(
                f"{label}, down: region's peak memory growth", down[0], "MiB", Goal.maximum(GROWTH_GOAL_MIB)
            ),
            Figure(f"{label}, down: time", down[1], "s", note=f"{SIZE / MIB / down[1]:.0f} MiB/s"),
        ],
        method=" ".join(
            (
                f"One region process (`bookstore region serve --region {SOURCE}`) on a fresh data",
                "directory; `aws s3 cp` of a 1 GiB file of random bytes up (multipart, 8 MiB parts,",
                "10 threads: the CLI's defaults) and back down, the copy checked by SHA-256. Peak",
                "resident memory (VmHWM) reset before each copy; the figure is its growth. The goal is",
                "a bound independent of the object's size: holding the object would add about 1,024 MiB.",
            )
        ),
    )


if __name__ == "__main__":
    from bench.report import Machine, render

    print(render(Machine.describe(), [run_bench()], []))
