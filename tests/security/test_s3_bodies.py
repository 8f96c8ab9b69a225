"""Issue 13 item 2 (S3 side): a large body is streamed to disk, never held whole in a region's memory.

A real region process takes a 256 MiB PutObject and a 128 MiB UploadPart, generated lazily by the
client; its peak resident memory (VmHWM, reset before each upload) must not grow by more than a small
bound, and the objects must read back byte for byte. Before bodies were streamed, the region held the
whole body (and a copy of it) in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config

from bookstore.config import Region
from bookstore.runtime.secret import s3_credentials
from tests.support.large_bodies import (
    GROWTH_BOUND,
    MIB,
    md5_of,
    peak_growth,
    pieces,
    put_lazily,
    read_md5,
    reset_peak,
    signed_headers,
)
from tests.support.regions import isolated_topology, region_process

pytestmark = [pytest.mark.system, pytest.mark.xdist_group("s3-bodies")]


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Region, int, Any]]:
    root = tmp_path_factory.mktemp("s3-bodies")
    topology, topology_file = isolated_topology(root / "topology.toml", regions=("eu-west-1",))
    region = topology.region("eu-west-1")
    data = root / "data"
    data.mkdir()
    with region_process(region, data, topology_file) as process:
        access = s3_credentials(data, create=False)
        s3 = boto3.client(
            "s3",
            endpoint_url=region.s3_url,
            region_name=region.id,
            aws_access_key_id=access.access_key_id,
            aws_secret_access_key=access.secret_access_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )
        s3.create_bucket(Bucket="big", CreateBucketConfiguration={"LocationConstraint": region.id})
        # Warm up: the first requests load code and fill caches that are no part of a body's cost.
        for _ in range(3):
            s3.put_object(Bucket="big", Key="warm", Body=b"x" * 4 * MIB)
            s3.get_object(Bucket="big", Key="warm")["Body"].read()
        yield region, process.pid, s3


def test_a_256_mib_put_object_is_streamed_to_disk(region: tuple[Region, int, Any]) -> None:
    info, pid, s3 = region
    size, seed = 256 * MIB, b"put"
    before = reset_peak(pid)
    answer = put_lazily(s3, f"{info.s3_url}/big/large.bin", size, seed)
    assert answer.status_code == 200, answer.text
    growth = peak_growth(pid, before)
    assert growth < GROWTH_BOUND, f"the region's peak memory grew by {growth / MIB:.0f} MiB"
    expected = md5_of(size, seed)
    assert answer.headers["etag"] == f'"{expected}"'
    assert read_md5(s3, "big", "large.bin") == expected


def test_a_128_mib_upload_part_is_streamed_to_disk(region: tuple[Region, int, Any]) -> None:
    info, pid, s3 = region
    size, seed = 128 * MIB, b"part"
    upload = s3.create_multipart_upload(Bucket="big", Key="parts.bin")["UploadId"]
    before = reset_peak(pid)
    answer = put_lazily(s3, f"{info.s3_url}/big/parts.bin?partNumber=1&uploadId={upload}", size, seed)
    assert answer.status_code == 200, answer.text
    growth = peak_growth(pid, before)
    assert growth < GROWTH_BOUND, f"the region's peak memory grew by {growth / MIB:.0f} MiB"
    tail = s3.upload_part(Bucket="big", Key="parts.bin", UploadId=upload, PartNumber=2, Body=b"end")
    s3.complete_multipart_upload(
        Bucket="big",
        Key="parts.bin",
        UploadId=upload,
        MultipartUpload={
            "Parts": [
                {"PartNumber": 1, "ETag": answer.headers["etag"]},
                {"PartNumber": 2, "ETag": tail["ETag"]},
            ]
        },
    )
    expected = hashlib.md5(usedforsecurity=False)
    for piece in pieces(size, seed):
        expected.update(piece)
    expected.update(b"end")
    assert read_md5(s3, "big", "parts.bin") == expected.hexdigest()


def test_a_body_longer_than_its_declared_decoded_length_is_refused(region: tuple[Region, int, Any]) -> None:
    info, _, s3 = region
    # An aws-chunked body that goes on past its x-amz-decoded-content-length: refused as it arrives.
    url = f"{info.s3_url}/big/liar.bin"
    headers = signed_headers(
        s3,
        "PUT",
        url,
        {
            "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            "content-encoding": "aws-chunked",
            "x-amz-decoded-content-length": "10",
        },
    )

    def chunked() -> Iterator[bytes]:
        for piece in pieces(64 * MIB, b"liar"):
            yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        yield b"0\r\n\r\n"

    answer = httpx.put(url, content=chunked(), headers=headers, timeout=120)
    assert answer.status_code == 400, answer.text
    assert "<Code>IncompleteBody</Code>" in answer.text
    assert "liar.bin" not in str(s3.list_objects_v2(Bucket="big").get("Contents", []))
