"""glibc's malloc tuned for a server that streams MiB buffers: freed memory kept for reuse, not returned.

A streamed GET decrypts a MiB piece at a time in a worker thread and frees it once sent; four pieces
of an answer are alive at once. glibc's defaults (a trim threshold that follows the largest freed
mapping, about 2 MiB here) gave every freed batch back to the kernel, so each new piece was fresh
memory whose pages the kernel had to fault in and zero again: about 1,000 page faults per 8 MiB GET,
a third of its server CPU (docs/performance.md). Fixed thresholds keep up to TRIM_THRESHOLD of free
memory per malloc arena for the next pieces; allocations above MMAP_THRESHOLD still get their own
mapping, returned whole when freed.
"""

from __future__ import annotations

import ctypes

# mallopt's parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 * 1024 * 1024
TRIM_THRESHOLD = 32 * 1024 * 1024


def keep_freed_buffers() -> bool:
    """Set the thresholds (see the module docstring); False where the C library has no such malloc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt answers 1 on success, 0 on refusal (musl's stub always refuses).
    mmap_set = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    return bool(mmap_set and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
