"""The command line beside a running region (issue 12 item 7): it never damages the region's data.

`users add`, `users confirm-code`, `conflicts` and `seed` run while a region serves S3 writes. They used
to build the whole region on its data directory, whose object-store sweep then removed the blobs of
writes in flight. Now the region owns the directory (storage.local.ownership) and the commands go
through its signed operator endpoint.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config

from bookstore.config import Region
from bookstore.runtime.secret import s3_credentials
from tests.support.regions import bookstore, isolated_topology, region_process

pytestmark = pytest.mark.system

PASSWORD = "a long enough password"
BUCKET = "beside-the-cli"
BLOB_SIZE = 200 * 1024  # above the inline limit: a blob file, the kind a sweep removes
MIB = 1024 * 1024
ROUNDS = 2


@dataclass
class Running:
    region: Region
    data: Path
    topology_file: Path
    s3: Any

    def cli(self, *args: str) -> Any:
        return bookstore(
            *args, "--data-dir", str(self.data), "--topology", str(self.topology_file), check=False
        )


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    topology, topo_file = isolated_topology(tmp_path / "topology.toml", ("eu-west-1",))
    data = tmp_path / "data"
    # Before the region starts nothing owns its directory: the command works on it directly.
    assert (
        "56 book(s) written"
        in bookstore("seed", "--data-dir", str(data), "--topology", str(topo_file)).stdout
    )
    with region_process(topology.home, data, topo_file):
        access = s3_credentials(data, create=False)
        s3 = boto3.client(
            "s3",
            endpoint_url=topology.home.s3_url,
            region_name=topology.home.id,
            aws_access_key_id=access.access_key_id,
            aws_secret_access_key=access.secret_access_key,
            config=Config(
                signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1}
            ),
        )
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": topology.home.id})
        yield Running(topology.home, data, topo_file, s3)


@dataclass
class Uploads:
    """PUTs of blob-sized objects, one after another, until stopped: what was acknowledged, what failed."""

    s3: Any
    acknowledged: dict[str, str] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def put(self, key: str) -> None:
        body = os.urandom(BLOB_SIZE)
        try:
            self.s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        except Exception as exc:
            self.failed.append(f"{key}: {exc}")
        else:
            self.acknowledged[key] = hashlib.md5(body, usedforsecurity=False).hexdigest()

    def run(self, name: str) -> None:
        n = 0
        while not self.stop.is_set():
            self.put(f"{name}/{n:05d}")
            n += 1


def read_back(s3: Any, key: str) -> str:
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def test_commands_beside_a_running_region_keep_every_upload_and_object(running: Running) -> None:
    s3, api = running.s3, httpx.Client(base_url=running.region.api_url, timeout=30)
    uploads = Uploads(s3)
    for n in range(60):
        uploads.put(f"before/{n:05d}")
    # A multipart upload in flight across the commands: one part before, one after.
    multipart = s3.create_multipart_upload(Bucket=BUCKET, Key="multipart")["UploadId"]
    first, last = os.urandom(5 * MIB), os.urandom(MIB)
    etag1 = s3.upload_part(Bucket=BUCKET, Key="multipart", UploadId=multipart, PartNumber=1, Body=first)[
        "ETag"
    ]
    signups = [f"signup-{uuid.uuid4().hex[:8]}-{i}@example.com" for i in range(ROUNDS)]
    for email in signups:
        assert api.post("/auth/signup", json={"email": email, "password": PASSWORD}).status_code == 201

    writers = [threading.Thread(target=uploads.run, args=(f"during-{i}",)) for i in range(2)]
    for w in writers:
        w.start()
    added = [f"added-{uuid.uuid4().hex[:8]}-{i}@example.com" for i in range(ROUNDS)]
    commands = [
        *(("users", "add", email, "--password", PASSWORD) for email in added),
        *(("users", "confirm-code", email) for email in signups),
        *(("conflicts", "--json") for _ in range(ROUNDS)),
        *(("seed",) for _ in range(ROUNDS)),
    ]
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda args: running.cli(*args), commands))
    finally:
        uploads.stop.set()
        for w in writers:
            w.join(60)
    etag2 = s3.upload_part(Bucket=BUCKET, Key="multipart", UploadId=multipart, PartNumber=2, Body=last)[
        "ETag"
    ]
    s3.complete_multipart_upload(
        Bucket=BUCKET,
        Key="multipart",
        UploadId=multipart,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag1}, {"PartNumber": 2, "ETag": etag2}]},
    )

    for args, result in zip(commands, results, strict=True):
        assert result.returncode == 0, f"{args}: {result.stderr}"
    # Every command did its work in the running region.
    for email in added:
        assert api.post("/auth/signin", json={"email": email, "password": PASSWORD}).status_code == 200
    codes = [
        r.stdout.strip() for args, r in zip(commands, results, strict=True) if args[1:2] == ("confirm-code",)
    ]
    for email, code in zip(signups, codes, strict=True):
        assert api.post("/auth/confirm", json={"email": email, "code": code}).status_code == 200
    assert all(
        "0 book(s) written" in r.stdout
        for args, r in zip(commands, results, strict=True)
        if args == ("seed",)
    )

    # Nothing in flight failed, nothing acknowledged went missing.
    assert uploads.failed == []
    assert len(uploads.acknowledged) > 60
    damaged = [key for key, md5 in uploads.acknowledged.items() if read_back(s3, key) != md5]
    assert damaged == []
    whole = s3.get_object(Bucket=BUCKET, Key="multipart")["Body"].read()
    assert whole == first + last
