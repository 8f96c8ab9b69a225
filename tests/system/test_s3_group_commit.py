"""Group commit of S3 PUTs under `durability = "power"` (issue 12 item 8), on a real region process.

Concurrent small PUTs share their SQLite commits (one fsync of the WAL for several), and each is still
acknowledged only after its own commit: every acknowledged object reads back after a kill -9.
Commits are counted where they land, in the WAL of the object store's metadata file (one commit frame
per transaction), so the count needs nothing from inside the process.
"""

from __future__ import annotations

import hashlib
import os
import signal
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from bookstore.config import Region
from bookstore.runtime.secret import s3_credentials
from tests.support.regions import isolated_topology, region_process

pytestmark = pytest.mark.system

BUCKET = "grouped"
CLIENTS = 16
SIZE = 4 * 1024  # inline in the metadata row: the PUT is one SQLite transaction


def client(region: Region, data: Path) -> Any:
    access = s3_credentials(data, create=False)
    return boto3.client(
        "s3",
        endpoint_url=region.s3_url,
        region_name=region.id,
        aws_access_key_id=access.access_key_id,
        aws_secret_access_key=access.secret_access_key,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            max_pool_connections=CLIENTS,
        ),
    )


def wal_commits(wal: Path) -> int:
    """Commit frames in a SQLite WAL file: frames of the current salt whose 'size after commit' is set."""
    data = wal.read_bytes()
    if len(data) < 32:
        return 0
    page_size = struct.unpack(">I", data[8:12])[0]
    salt = data[16:24]
    commits, offset = 0, 32
    while offset + 24 + page_size <= len(data):
        header = data[offset : offset + 24]
        if header[8:16] != salt:
            break  # frames left from before the WAL was last restarted
        if struct.unpack(">I", header[4:8])[0] != 0:
            commits += 1
        offset += 24 + page_size
    return commits


def test_concurrent_puts_share_commits_and_survive_kill_9(tmp_path: Path) -> None:
    topology, topology_file = isolated_topology(
        tmp_path / "topology.toml", ("eu-west-1",), extra='\n[storage]\ndurability = "power"\n'
    )
    region, data = topology.home, tmp_path / "data"
    data.mkdir()
    wal = data / region.id / "objects" / "objects.sqlite3-wal"
    acknowledged: dict[str, str] = {}
    failed: list[str] = []
    with region_process(region, data, topology_file) as process:
        s3 = client(region, data)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": region.id})
        assert wal.exists()

        def put(key: str) -> None:
            body = os.urandom(SIZE)
            s3.put_object(Bucket=BUCKET, Key=key, Body=body)
            acknowledged[key] = hashlib.md5(body, usedforsecurity=False).hexdigest()

        # A burst of CLIENTS concurrent PUTs: fewer commits than PUTs.
        before = wal_commits(wal)
        start = threading.Barrier(CLIENTS)

        def burst(i: int) -> None:
            start.wait()
            put(f"burst/{i:02d}")

        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(burst, range(CLIENTS)))
        commits = wal_commits(wal) - before
        assert len(acknowledged) == CLIENTS
        assert 1 <= commits < CLIENTS, f"{commits} commits for {CLIENTS} concurrent PUTs"

        # PUTs keep coming from every client while the region is killed with SIGKILL.
        stop = threading.Event()

        def keep_putting(i: int) -> None:
            n = 0
            while not stop.is_set():
                try:
                    put(f"flow/{i:02d}/{n:05d}")
                except Exception as exc:
                    failed.append(str(exc))  # the kill: unacknowledged, so promised nothing
                    return
                n += 1

        writers = [threading.Thread(target=keep_putting, args=(i,)) for i in range(CLIENTS)]
        for writer in writers:
            writer.start()
        while len(acknowledged) < CLIENTS + 200 and not failed:
            threading.Event().wait(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        stop.set()
        for writer in writers:
            writer.join(timeout=60)
    assert len(acknowledged) >= CLIENTS + 200, failed[:3]

    # Every PUT acknowledged before the kill reads back whole from the restarted region.
    with region_process(region, data, topology_file):
        s3 = client(region, data)
        missing = []
        for key, md5 in sorted(acknowledged.items()):
            try:
                body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            except Exception as exc:
                missing.append(f"{key}: {exc}")
                continue
            if hashlib.md5(body, usedforsecurity=False).hexdigest() != md5:
                missing.append(f"{key}: other content")
        assert missing == []
