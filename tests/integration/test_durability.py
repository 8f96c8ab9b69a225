"""The durability setting (issue 12 item 8): each store that acknowledges writes applies the chosen one."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from bookstore.config import Storage, Topology
from bookstore.kernel.clock import SystemClock
from bookstore.region.compose import build_region
from bookstore.storage.local.objects import LocalObjectStore

EU = "eu-west-1"
# PRAGMA synchronous answers a number: 1 = NORMAL, 2 = FULL.
SYNCHRONOUS = {"process": 1, "power": 2}


def test_the_default_is_process_durability() -> None:
    assert Topology().storage.durability == "process"


def test_a_topology_file_chooses_power(tmp_path: Path) -> None:
    path = tmp_path / "topology.toml"
    path.write_text('[storage]\ndurability = "power"\n')
    assert Topology.load(path).storage.durability == "power"
    path.write_text('[storage]\ndurability = "battery"\n')
    with pytest.raises(ValueError, match="durability"):
        Topology.load(path)


@pytest.mark.parametrize("durability", ["process", "power"])
def test_every_store_that_acknowledges_writes_reads_back_its_setting(tmp_path: Path, durability: str) -> None:
    topology = Topology(storage=Storage(durability=durability))
    services = build_region(topology, EU, tmp_path)
    try:
        assert services.replica is not None and services.objects is not None and services.blog is not None
        # Read on each store's own writer connection: the pragma is per connection.
        engines = {
            "tables": services.replica.db.engine,  # type: ignore[attr-defined]
            "objects": services.objects.engine,  # type: ignore[attr-defined]
            "blog": services.blog.repository.db.engine,  # type: ignore[attr-defined]
        }
        read = {name: engine.pragma("synchronous") for name, engine in engines.items()}
        assert read == dict.fromkeys(engines, SYNCHRONOUS[durability])
    finally:
        services.close()


@pytest.mark.parametrize("durability", ["process", "power"])
def test_power_fsyncs_each_blob_and_the_directory_it_is_renamed_into(
    tmp_path: Path, durability: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append("directory" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    services = build_region(Topology(storage=Storage(durability=durability)), EU, tmp_path)
    try:
        store = services.objects
        assert store is not None
        store.create_bucket("durable")
        monkeypatch.setattr("bookstore.storage.local.blobs.os.fsync", recording_fsync)
        store.put_object("durable", "blob", os.urandom(200_000))
    finally:
        services.close()
    assert synced == (["file", "directory"] if durability == "power" else ["file"])


def test_concurrent_puts_under_power_share_one_commit_and_each_returns_after_it(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects", EU, SystemClock(), durability="power")
    try:
        store.create_bucket("shared")
        commits: list[str] = []
        store.engine.trace_writes(
            lambda statement: commits.append(statement) if statement == "COMMIT" else None
        )
        n = 16
        returned_after: dict[int, int] = {}

        def put(i: int) -> None:
            store.put_object("shared", f"k{i}", f"body {i} ".encode() * 400)  # 4 KiB-ish, inline
            returned_after[i] = len(commits)

        threads = [threading.Thread(target=put, args=(i,)) for i in range(n)]
        # The writer is busy (as while a commit's fsync runs): PUTs arriving meanwhile wait together.
        with store.engine.exclusive():
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 30
            while store.engine.waiting() < n and time.monotonic() < deadline:
                time.sleep(0.01)
            assert store.engine.waiting() == n
        for thread in threads:
            thread.join(timeout=30)
        assert commits == ["COMMIT"]  # one commit, one fsync of the WAL, for all of them
        assert returned_after == dict.fromkeys(range(n), 1)  # none returned before that commit
        for i in range(n):
            assert store.get_object("shared", f"k{i}").read() == f"body {i} ".encode() * 400
    finally:
        store.close()


def test_under_power_the_local_store_runs_in_worker_threads(tmp_path: Path) -> None:
    # An fsync per commit is no call "well under a millisecond" (ObjectStore.runs_inline): off the event loop,
    # concurrent PUTs can share their commits.
    for durability, inline in (("process", True), ("power", False)):
        store = LocalObjectStore(tmp_path / durability, EU, SystemClock(), durability=durability)  # type: ignore[arg-type]
        try:
            assert store.runs_inline is inline
        finally:
            store.close()
