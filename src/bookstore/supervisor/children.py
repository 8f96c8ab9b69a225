"""The supervisor's child processes (regions, the edge, a launched `bookstore up`) die with their parent."""

from __future__ import annotations

import ctypes
import ctypes.util
import signal

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """In a region process before exec: the kernel sends it SIGTERM when the supervisor dies, however."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
