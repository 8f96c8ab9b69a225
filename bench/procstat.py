"""What /proc says of a process the benchmarks measure: its CPU time, page faults and memory."""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    # The fields after the command name, which may hold spaces: hence the split at its closing parenthesis.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far, all its threads (utime and stime of stat)."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def minor_faults(pid: int) -> int:
    """The minor page faults of process `pid` so far (minflt of stat)."""
    return int(_stat(pid)[7])


def memory_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM: the peak RSS since the process started) of process `pid`, MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]
