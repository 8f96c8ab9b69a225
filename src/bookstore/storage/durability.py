"""How durable an acknowledged write is, and what each choice asks of SQLite and of the file system.

- "process" (the default): a write is acknowledged once committed to SQLite's WAL (synchronous=NORMAL);
  it survives kill -9 of the process, but a power loss or OS crash may lose the last commits.
- "power": the commit is on disk before the acknowledgement (synchronous=FULL: the WAL is fsynced at
  every commit; object blobs and the directories they are renamed into are fsynced), so it survives a
  power loss too. Group commit shares one fsync among concurrent writes: SqliteDatabase.run_group for
  cart and checkout writes, SqliteEngine.commit_shared for S3 PUTs (the local object store runs in
  worker threads under "power", so concurrent PUTs can join one commit).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

Durability = Literal["process", "power"]
DEFAULT: Durability = "process"


def synchronous(durability: Durability) -> str:
    """SQLite's `PRAGMA synchronous` value for the durability."""
    return "FULL" if durability == "power" else "NORMAL"


def fsync_directory(path: Path) -> None:
    """Make a rename or creation in `path` durable (the directory entry itself, not the file's data)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
