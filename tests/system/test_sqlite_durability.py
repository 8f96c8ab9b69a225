"""Real processes on one SQLite file: acknowledged writes survive kill -9; concurrent writers share a log."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bookstore.kernel.clock import SystemClock
from bookstore.storage.sqlite.tables import SqliteDatabase
from bookstore.tables import BOOKS

pytestmark = pytest.mark.system

# Opens the file and says "ready"; once the file `go` exists writes `count` books (forever when
# negative), printing each key once its put has returned.
WRITER = """
import sys
import time
from pathlib import Path

from bookstore.kernel.clock import SystemClock
from bookstore.storage.sqlite.tables import SqliteDatabase
from bookstore.tables import BOOKS

path, prefix, count, go = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
books = SqliteDatabase(path, "eu-west-1", SystemClock(), durability=sys.argv[5]).table(BOOKS)
print("ready", flush=True)
while not go.exists():
    time.sleep(0.005)
i = 0
while count < 0 or i < count:
    key = f"{prefix}-{i:06d}"
    books.put({"id": key, "category": "Cars", "price": 15.98, "tags": [prefix, i]})
    sys.stdout.write(key + "\\n")
    sys.stdout.flush()
    i += 1
"""


def writer(path: Path, prefix: str, count: int = -1, durability: str = "process") -> subprocess.Popen[str]:
    """A writer process that has opened the database (with `durability`) and waits for the file `go`."""
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), prefix, str(count), str(path.parent / "go"), durability],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    ready = process.stdout.readline()
    if ready != "ready\n":
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"writer did not start: {err}")
    return process


@pytest.mark.parametrize("durability", ["process", "power"])
def test_every_acknowledged_write_survives_kill_9(tmp_path: Path, durability: str) -> None:
    # Both promise this much; "power" adds a power loss, which a test on one machine cannot cut.
    path = tmp_path / "region.db"
    process = writer(path, "k", durability=durability)
    (tmp_path / "go").touch()
    acknowledged: list[str] = []
    try:
        assert process.stdout is not None
        while len(acknowledged) < 300:
            line = process.stdout.readline()
            assert line.endswith("\n"), (
                f"writer stopped early: {process.stderr.read() if process.stderr else ''}"
            )
            acknowledged.append(line.strip())
        process.send_signal(signal.SIGKILL)  # in the middle of the stream of writes
        process.wait(timeout=10)
        # Keys printed before the kill are still in the pipe; each of them was acknowledged too.
        acknowledged += [
            line.strip() for line in process.stdout.read().splitlines(keepends=True) if line.endswith("\n")
        ]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL

    with SqliteDatabase(path, "eu-west-1", SystemClock()) as db:
        books = db.table(BOOKS)
        missing = [key for key in acknowledged if books.get({"id": key}) is None]
        assert missing == []
        logged = [e.key["id"] for e in db.read_log(limit=len(acknowledged) + 10).entries]
        # The log holds every acknowledged write in order, and perhaps the one the kill interrupted.
        assert logged[: len(acknowledged)] == acknowledged
        assert len(logged) - len(acknowledged) in (0, 1)
        assert books.get({"id": acknowledged[-1]}) == {
            "id": acknowledged[-1],
            "category": "Cars",
            "price": 15.98,
            "tags": ["k", len(acknowledged) - 1],
        }


def test_processes_writing_one_file_at_once_share_one_ordered_log(tmp_path: Path) -> None:
    path = tmp_path / "region.db"
    SqliteDatabase(path, "eu-west-1", SystemClock()).close()  # created first so both writers find it
    processes = [writer(path, prefix, 1000) for prefix in ("server", "cli")]
    (tmp_path / "go").touch()  # both have opened the file: they start writing together
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err for _, err in outputs]

    with SqliteDatabase(path, "eu-west-1", SystemClock()) as db:
        books = db.table(BOOKS)
        keys = [line for out, _ in outputs for line in out.splitlines()]
        assert len(keys) == 2000 and all(books.get({"id": k}) is not None for k in keys)
        log = db.read_log(limit=5000).entries
        assert sorted(e.key["id"] for e in log) == sorted(keys)
        versions = [e.version for e in log]
        # Commit order and version order agree, and no two writes share a version.
        assert versions == sorted(versions) and len(set(versions)) == len(versions)
        for prefix in ("server", "cli"):
            mine = [e.key["id"] for e in log if e.key["id"].startswith(prefix)]
            assert mine == sorted(mine)
