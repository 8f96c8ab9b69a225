"""Ownership of a region's data directory: one owner at a time, held by an fcntl lock on `owner.lock`.

The owner is the one process that may run a region's start-up work on the directory (the object
store's sweep of unreferenced blobs, schema set-up, seeding the blog). The lock is an exclusive
`flock` on DATA/<region>/owner.lock: the kernel drops it when the owner exits, kill -9 included, so a
crashed region never leaves a stale lock behind. The file holds the owner's pid and what it is (for
the refusal's message); only the lock itself counts. Advisory: every builder of a region takes it
(region.compose.build_region), nothing else writes the directory.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from bookstore.domain.errors import Conflict

LOCK_FILE = "owner.lock"
_POLL_S = 0.05


class DataDirInUse(Conflict):
    """Another process owns the data directory (a running region, or a command working on it)."""

    code = "DataDirInUse"

    def __init__(self, directory: Path, holder: str) -> None:
        super().__init__(
            f"the data directory {directory} is in use by {holder}: a command changes a running region "
            "through its API, or stop the region first"
        )
        self.directory = directory
        self.holder = holder


class DirectoryOwnership:
    """The held lock of one data directory; `release()` (or process exit) gives it up."""

    def __init__(self, directory: Path, fd: int) -> None:
        self.directory = directory
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            # Closing the descriptor drops the flock; the file stays (removing it would race a new owner).
            os.close(fd)


def own(directory: Path, holder: str, *, wait_s: float = 0.0) -> DirectoryOwnership:
    """Take `directory`'s ownership for `holder` (e.g. "region eu-west-1"), waiting up to `wait_s`.

    Raises DataDirInUse naming the current owner when it is still held after `wait_s` seconds.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise DataDirInUse(directory, _holder(path)) from None
                time.sleep(_POLL_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{holder} (pid {os.getpid()})\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return DirectoryOwnership(directory, fd)


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        text = ""
    return text or "another process"
