"""The durability setting (issue 12 item 8): each store that acknowledges writes applies the chosen one."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bookstore.bootstrap import build_region
from bookstore.config import Storage, Topology
from bookstore.storage.local import objects as local_objects

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
    topology = Topology(storage=Storage(durability=durability))  # type: ignore[arg-type]
    services = build_region(topology, EU, tmp_path)
    try:
        assert services.replica is not None and services.objects is not None and services.blog is not None
        # Read on each store's own writer connection: the pragma is per connection.
        connections = {
            "tables": services.replica.db._writer,  # type: ignore[attr-defined]
            "objects": services.objects._db,  # type: ignore[attr-defined]
            "blog": services.blog.repository.db._writer,  # type: ignore[attr-defined]
        }
        read = {name: conn.execute("PRAGMA synchronous").fetchone()[0] for name, conn in connections.items()}
        assert read == dict.fromkeys(connections, SYNCHRONOUS[durability])
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

    services = build_region(Topology(storage=Storage(durability=durability)), EU, tmp_path)  # type: ignore[arg-type]
    try:
        store = services.objects
        assert store is not None
        store.create_bucket("durable")
        monkeypatch.setattr(local_objects.os, "fsync", recording_fsync)
        store.put_object("durable", "blob", os.urandom(200_000))
    finally:
        services.close()
    assert synced == (["file", "directory"] if durability == "power" else ["file"])
