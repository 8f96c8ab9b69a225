"""Issue 13 item 2 (between regions): no region holds a large object whole while it crosses the link.

Two real region processes (`bookstore up`, the link simulator between them). Each test resets both
regions' peak resident memory (VmHWM), moves 256 MiB from one region to the other, and checks that
neither region's peak grew by more than a small bound and that the bytes arrived whole: a PUT sent to
Ireland for a bucket that lives in Singapore (forwarded), an aws-chunked UploadPart (128 MiB) forwarded
the same way, a version replicated from an Ireland bucket to a Singapore one, and a CopyObject in
Ireland whose source lives in Singapore. Before these paths
streamed, Ireland read a forwarded PUT's spool into memory to sign it, the replicator read a version
whole to send it, and a copy's source was read whole by Singapore and again by Ireland.
"""

from __future__ import annotations

import base64
import os
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.support import waiting
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
from tests.support.regions import System, system_up
from tests.support.s3_replication import replicate

pytestmark = [pytest.mark.system, pytest.mark.xdist_group("s3-bodies-across")]

EU, AP = "eu-west-1", "ap-southeast-1"
SIZE = 256 * MIB
# Generous for a loaded 2-core machine: 256 MiB crosses the link, is hashed and written with fsync.
WAIT_S = 300.0


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with system_up(tmp_path_factory.mktemp("s3-across")) as running:
        yield running


@pytest.fixture(scope="module")
def clients(system: System) -> dict[str, Any]:
    """An S3 client of each region's own endpoint."""
    access = system.s3_access
    return {
        region: boto3.client(
            "s3",
            endpoint_url=system.topology.region(region).s3_url,
            region_name=region,
            aws_access_key_id=access.access_key_id,
            aws_secret_access_key=access.secret_access_key,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                read_timeout=WAIT_S,
            ),
        )
        for region in (EU, AP)
    }


def pids(system: System) -> dict[str, int]:
    return {r["regionId"]: r["pid"] for r in system.control("GET", "/regions")["regions"]}


def bucket(s3: Any, region: str, prefix: str, *, versioned: bool = False) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
    if versioned:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


class Peaks:
    """Both regions' peak memory, reset on entry; `growth()` is how far each rose since."""

    def __init__(self, system: System) -> None:
        self.pids = pids(system)
        self.before = {region: reset_peak(pid) for region, pid in self.pids.items()}

    def check(self) -> None:
        growth = {region: peak_growth(pid, self.before[region]) for region, pid in self.pids.items()}
        held = {region: f"{grown / MIB:.0f} MiB" for region, grown in growth.items()}
        assert all(grown < GROWTH_BOUND for grown in growth.values()), f"peak memory grew by {held}"


def test_a_256_mib_put_to_a_bucket_of_the_other_region_is_streamed_through(
    system: System, clients: dict[str, Any]
) -> None:
    far = bucket(clients[EU], AP, "forwarded")
    url = f"{system.topology.region(EU).s3_url}/{far}/large.bin"
    peaks = Peaks(system)
    answer = put_lazily(clients[EU], url, SIZE, b"forwarded")
    assert answer.status_code == 200, answer.text
    peaks.check()
    expected = md5_of(SIZE, b"forwarded")
    assert answer.headers["etag"] == f'"{expected}"'
    # Read back at the region that owns the bucket: the bytes it stored are the ones sent to Ireland.
    assert read_md5(clients[AP], far, "large.bin") == expected


def test_a_128_mib_aws_chunked_upload_part_to_a_bucket_of_the_other_region_is_streamed_through(
    system: System, clients: dict[str, Any]
) -> None:
    # What SDKs send by default: aws-chunked with a CRC32 trailer. Ireland decodes it as it arrives and
    # forwards the decoded part from its spool, the trailer turned into a header Singapore checks again.
    size, seed = 128 * MIB, b"forwarded part"
    far = bucket(clients[EU], AP, "forwarded-part")
    upload = clients[EU].create_multipart_upload(Bucket=far, Key="parts.bin")["UploadId"]
    url = f"{system.topology.region(EU).s3_url}/{far}/parts.bin?partNumber=1&uploadId={upload}"
    crc = 0
    for piece in pieces(size, seed):
        crc = zlib.crc32(piece, crc)
    checksum = base64.b64encode(crc.to_bytes(4, "big")).decode()
    headers = signed_headers(
        clients[EU],
        "PUT",
        url,
        {
            "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            "content-encoding": "aws-chunked",
            "x-amz-decoded-content-length": str(size),
            "x-amz-trailer": "x-amz-checksum-crc32",
        },
    )

    def chunked() -> Iterator[bytes]:
        for piece in pieces(size, seed):
            yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        yield f"0\r\nx-amz-checksum-crc32:{checksum}\r\n\r\n".encode()

    peaks = Peaks(system)
    answer = httpx.put(url, content=chunked(), headers=headers, timeout=WAIT_S)
    assert answer.status_code == 200, answer.text
    peaks.check()
    assert answer.headers["x-amz-checksum-crc32"] == checksum
    clients[EU].complete_multipart_upload(
        Bucket=far,
        Key="parts.bin",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": answer.headers["etag"]}]},
    )
    # Read back where the bucket lives: the single part's bytes, decoded, as they were sent.
    digest = md5_of(size, seed)
    assert answer.headers["etag"] == f'"{digest}"'
    assert read_md5(clients[AP], far, "parts.bin") == digest


def test_a_256_mib_object_is_replicated_without_holding_it(system: System, clients: dict[str, Any]) -> None:
    s3 = clients[EU]
    source = bucket(s3, EU, "replicated-ie", versioned=True)
    destination = bucket(s3, AP, "replicated-sg", versioned=True)
    replicate(s3, source, destination)
    peaks = Peaks(system)
    answer = put_lazily(s3, f"{system.topology.region(EU).s3_url}/{source}/large.bin", SIZE, b"replicated")
    assert answer.status_code == 200, answer.text
    version = answer.headers["x-amz-version-id"]
    waiting.wait_for(
        "the 256 MiB version replicated",
        lambda: s3.head_object(Bucket=source, Key="large.bin", VersionId=version).get("ReplicationStatus"),
        lambda status: status == "COMPLETED",
        WAIT_S,
        (ClientError,),
    )
    peaks.check()
    replica = clients[AP].head_object(Bucket=destination, Key="large.bin", VersionId=version)
    assert replica["ReplicationStatus"] == "REPLICA"
    expected = md5_of(SIZE, b"replicated")
    assert replica["ETag"] == f'"{expected}"'
    assert read_md5(clients[AP], destination, "large.bin", VersionId=version) == expected


def test_a_cross_region_copy_of_a_256_mib_object_streams_its_source(
    system: System, clients: dict[str, Any]
) -> None:
    far = bucket(clients[AP], AP, "copy-source")
    near = bucket(clients[EU], EU, "copy-target")
    sent = put_lazily(clients[AP], f"{system.topology.region(AP).s3_url}/{far}/source.bin", SIZE, b"copied")
    assert sent.status_code == 200, sent.text
    peaks = Peaks(system)
    result = clients[EU].copy_object(
        Bucket=near, Key="copy.bin", CopySource={"Bucket": far, "Key": "source.bin"}
    )
    peaks.check()
    expected = md5_of(SIZE, b"copied")
    assert result["CopyObjectResult"]["ETag"] == f'"{expected}"'
    assert read_md5(clients[EU], near, "copy.bin") == expected


def test_forwarded_parts_and_ranged_part_copies_across_regions_arrive_intact(
    system: System, clients: dict[str, Any]
) -> None:
    # The streamed paths at sizes on both sides of the MiB below which bodies travel whole.
    s3 = clients[EU]
    far, near = bucket(s3, AP, "parts-far"), bucket(s3, EU, "parts-near")
    source = os.urandom(12 * MIB)
    s3.put_object(Bucket=far, Key="source.bin", Body=source)
    # UploadPart forwarded to Singapore: a 6 MiB part sent from Ireland's spool, then a small one.
    upload = s3.create_multipart_upload(Bucket=far, Key="parts.bin")["UploadId"]
    parts = [
        s3.upload_part(Bucket=far, Key="parts.bin", UploadId=upload, PartNumber=n, Body=body)["ETag"]
        for n, body in ((1, source[: 6 * MIB]), (2, b"tail"))
    ]
    s3.complete_multipart_upload(
        Bucket=far,
        Key="parts.bin",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(parts, 1)]},
    )
    assert clients[AP].get_object(Bucket=far, Key="parts.bin")["Body"].read() == source[: 6 * MIB] + b"tail"
    # UploadPartCopy in Ireland of ranges of Singapore's object: one streamed, one read whole.
    upload = s3.create_multipart_upload(Bucket=near, Key="copied.bin")["UploadId"]
    ranges = ((1, MIB, 7 * MIB - 1), (2, 12 * MIB - 100, 12 * MIB - 1))
    copied = [
        s3.upload_part_copy(
            Bucket=near,
            Key="copied.bin",
            UploadId=upload,
            PartNumber=n,
            CopySource={"Bucket": far, "Key": "source.bin"},
            CopySourceRange=f"bytes={first}-{last}",
        )["CopyPartResult"]["ETag"]
        for n, first, last in ranges
    ]
    s3.complete_multipart_upload(
        Bucket=near,
        Key="copied.bin",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(copied, 1)]},
    )
    expected = b"".join(source[first : last + 1] for _, first, last in ranges)
    assert s3.get_object(Bucket=near, Key="copied.bin")["Body"].read() == expected
