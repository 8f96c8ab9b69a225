"""The region's malloc tuning: MiB buffers freed and made again reuse memory instead of faulting it in."""

from __future__ import annotations

import subprocess
import sys

import pytest

# A child process (the tuning is process-wide): rounds of four MiB pieces made in a worker thread and
# freed in the main one, as a streamed GET's pieces are; prints the minor page faults per round.
_ROUNDS = r"""
import resource, sys, threading
from bookstore.runtime import allocator
if sys.argv[1] == "tuned" and not allocator.keep_freed_buffers():
    sys.exit(print("unavailable"))
def batch(out):
    out.extend(b"x" * (1 << 20) for _ in range(4))
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for warm in (True, False):
    start = faults()
    for _ in range(30):
        out = []
        t = threading.Thread(target=batch, args=(out,))
        t.start(); t.join()
        del out
    if not warm:
        print((faults() - start) / 30)
"""


def _faults_per_round(mode: str) -> float:
    run = subprocess.run([sys.executable, "-c", _ROUNDS, mode], capture_output=True, text=True, check=True)
    if run.stdout.strip() == "unavailable":
        pytest.skip("this C library's malloc has no mallopt thresholds")
    return float(run.stdout)


def test_freed_mib_pieces_are_reused_rather_than_faulted_in_again() -> None:
    tuned = _faults_per_round("tuned")
    # Four MiB a round are 1,024 pages: with glibc's own thresholds most are faulted in again each
    # round (else this scenario would not show what the tuning is for).
    assert _faults_per_round("default") > 500
    assert tuned < 50
