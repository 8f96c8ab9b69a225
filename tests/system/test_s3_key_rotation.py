"""SSE-S3 key rotation under kill -9: every object stays readable, and re-encryption resumes and ends.

Two levels: a process re-encrypting a store killed at chosen points (a new body durable but not yet
committed; committed but the old body not yet removed) and at a random one; and a running region,
rotated with `bookstore s3 rotate-key --reencrypt` while writes arrive, killed in the middle.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config

from bookstore.kernel.clock import SystemClock
from bookstore.runtime.secret import s3_credentials
from bookstore.storage.local.objects import LocalObjectStore
from tests.support.regions import bookstore, isolated_topology, region_process, start_region

pytestmark = pytest.mark.system

BUCKET = "rotated"
MIB = 1024 * 1024

# Re-encrypts the store at argv[1] one body a step, printing a line per step; with argv[2] "written" or
# "committed" it kills itself (SIGKILL, as kill -9) at the (argv[3]+1)th new body written, or at the first
# removal of an old body after a commit, beyond argv[3] of them.
CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from bookstore.kernel.clock import SystemClock
    from bookstore.storage.local.blobs import BlobFiles
    from bookstore.storage.local.objects import LocalObjectStore

    root, point, after = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    seen = 0

    def dying(original):
        def wrapped(self, *args, **kwargs):
            global seen
            result = original(self, *args, **kwargs)
            seen += 1
            if seen > after:
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        return wrapped

    if point == "written":
        BlobFiles.write = dying(BlobFiles.write)
    elif point == "committed":
        BlobFiles.unlink = dying(BlobFiles.unlink)
    store = LocalObjectStore(root, "eu-west-1", SystemClock())
    if store.key_status().retiring_below is None:
        store.rotate_key(reencrypt=True)
    print("rotated", flush=True)
    while not store.reencrypt_step(1).done:
        print("step", flush=True)
    store.close()
    print("done", flush=True)
    """
)


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def fill(root: Path) -> dict[str, str]:
    """A store with inline bodies, blob files, a multipart object and an SSE-S3 upload in progress."""
    store = LocalObjectStore(root, "eu-west-1", SystemClock(), min_part_size=MIB)
    store.create_bucket(BUCKET)
    written = {}
    for n in range(12):
        data = os.urandom(1000 if n % 2 else 100_000 + n)
        store.put_object(BUCKET, f"k{n}", data)
        written[f"k{n}"] = md5(data)
    upload = store.create_upload(BUCKET, "multipart")
    parts = [os.urandom(MIB), os.urandom(1000)]
    etags = [(i, store.upload_part(BUCKET, "multipart", upload, i, p).etag) for i, p in enumerate(parts, 1)]
    store.complete_upload(BUCKET, "multipart", upload, etags)
    written["multipart"] = md5(b"".join(parts))
    store.close()
    return written


def readable(root: Path, written: dict[str, str]) -> LocalObjectStore:
    store = LocalObjectStore(root, "eu-west-1", SystemClock(), min_part_size=MIB)
    for key, digest in written.items():
        assert md5(store.get_object(BUCKET, key).read()) == digest, key
    return store


def child(root: Path, point: str, after: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), point, str(after)], stdout=subprocess.PIPE, text=True
    )


@pytest.mark.parametrize(
    ("point", "after"), [("written", 0), ("written", 3), ("committed", 0), ("committed", 2)]
)
def test_a_kill_at_each_step_of_reencryption_leaves_every_object_readable(
    tmp_path: Path, point: str, after: int
) -> None:
    written = fill(tmp_path)
    killed = child(tmp_path, point, after)
    killed.wait(60)
    assert killed.returncode == -signal.SIGKILL
    # Every object reads back, under the old key or the new one, and the rotation is still pending.
    store = readable(tmp_path, written)
    assert store.key_status().retiring_below == 2
    store.close()
    # Run again without dying: it resumes, ends, and retires the old key.
    resumed = child(tmp_path, "none", 0)
    out, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 0 and out.strip().endswith("done"), out
    store = readable(tmp_path, written)
    assert store.key_status().keys == (2,)
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["sse-000002.key"]
    store.close()


def test_a_kill_9_at_a_random_step_leaves_every_object_readable(tmp_path: Path) -> None:
    written = fill(tmp_path)
    running = child(tmp_path, "none", 0)
    assert running.stdout is not None
    for _ in range(6):
        running.stdout.readline()  # "rotated", then steps
    running.send_signal(signal.SIGKILL)
    running.wait(30)
    readable(tmp_path, written).close()
    resumed = child(tmp_path, "none", 0)
    out, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 0 and out.strip().endswith("done"), out
    store = readable(tmp_path, written)
    assert store.key_status().keys == (2,)
    store.close()


def test_rotate_key_on_a_running_region_reencrypts_in_the_background_and_survives_kill_9(
    tmp_path: Path,
) -> None:
    topology, topo_file = isolated_topology(tmp_path / "topology.toml", ("eu-west-1",))
    region, data = topology.home, tmp_path / "data"
    cli = ("--data-dir", str(data), "--topology", str(topo_file))
    # Before the region starts, nothing owns its directory: the command works on it (and makes it).
    assert json.loads(bookstore("s3", "keys", "--json", *cli).stdout)["keys"] == [1]
    written: dict[str, str] = {}
    with region_process(region, data, topo_file) as process:
        s3 = client(region.s3_url, region.id, data)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": region.id})
        for n in range(300):
            body = os.urandom(2000 if n % 4 == 0 else 80_000)
            s3.put_object(Bucket=BUCKET, Key=f"k{n:03d}", Body=body)
            written[f"k{n:03d}"] = md5(body)
        # Only the operator may rotate: a request without its signature is refused.
        refused = httpx.post(f"{region.api_url}/replication/commands/s3/rotate-key", json={"reencrypt": True})
        assert refused.status_code in (401, 403)
        rotated = json.loads(bookstore("s3", "rotate-key", "--reencrypt", "--json", *cli).stdout)
        assert (rotated["newest"], rotated["retiringBelow"]) == (2, 2)
        # The command answered before the bodies were rewritten (that runs in the background): kill -9
        # the region in the middle of it.
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    keys_dir = data / region.id / "objects" / "keys"
    assert sorted(p.name for p in keys_dir.iterdir()) == ["retire", "sse-000001.key", "sse-000002.key"]
    restarted = start_region(region, data, topo_file)
    try:
        s3 = client(region.s3_url, region.id, data)
        for key, digest in written.items():
            assert md5(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()) == digest, key
        # Writes while it re-encrypts go under the new key.
        for n in range(20):
            body = os.urandom(70_000)
            s3.put_object(Bucket=BUCKET, Key=f"during{n}", Body=body)
            written[f"during{n}"] = md5(body)
        # The region resumes the re-encryption by itself and retires key 1.
        deadline = time.monotonic() + 120
        while True:
            status = json.loads(bookstore("s3", "keys", "--json", *cli).stdout)
            if status["retiringBelow"] is None or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert (status["keys"], status["retiringBelow"]) == ([2], None), status
        assert set(status["bodies"]) == {"2"}
        for key, digest in written.items():
            assert md5(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()) == digest, key
        assert sorted(p.name for p in keys_dir.iterdir()) == ["sse-000002.key"]
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(30)


def client(url: str, region: str, data: Path) -> Any:
    access = s3_credentials(data, create=False)
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name=region,
        aws_access_key_id=access.access_key_id,
        aws_secret_access_key=access.secret_access_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
