"""What the ceph/s3-tests conformance suite found wrong on the core data path, as S3 answers it, by boto3."""

from __future__ import annotations

import base64
import email.utils
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from bookstore.objectstore import checksums
from tests.support.s3_server import REGION, S3Server

BUCKET = "suite"
MiB = 1024 * 1024


@pytest.fixture
def s3(server: S3Server) -> Any:
    client = server.client()
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    return client


def code(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response = exc.value.response
    return str(response["Error"]["Code"]), int(response["ResponseMetadata"]["HTTPStatusCode"])


def started(
    s3: Any, key: str, parts: list[bytes], algorithm: str, **create: Any
) -> tuple[str, list[dict[str, Any]]]:
    """An upload of `parts` with their `algorithm` checksums, not completed: its id and its Parts list."""
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key, ChecksumAlgorithm=algorithm, **create)[
        "UploadId"
    ]
    listed = []
    for number, body in enumerate(parts, start=1):
        value = checksums.of(body, algorithm)  # type: ignore[arg-type]
        answer = s3.upload_part(
            Bucket=BUCKET,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=body,
            **{"ChecksumAlgorithm": algorithm, f"Checksum{algorithm}": value},
        )
        listed.append({"PartNumber": number, "ETag": answer["ETag"], f"Checksum{algorithm}": value})
    return upload_id, listed


# CompleteMultipartUpload's x-amz-checksum-* is the object's checksum, not its XML body's.


def test_complete_with_the_uploads_composite_checksum_succeeds(s3: Any) -> None:
    parts = [b"a" * (5 * MiB), b"tail"]
    upload_id, listed = started(s3, "composite", parts, "SHA256")
    inner = b"".join(base64.b64decode(checksums.of(p, "SHA256")) for p in parts)
    whole = checksums.of(inner, "SHA256")
    done = s3.complete_multipart_upload(
        Bucket=BUCKET,
        Key="composite",
        UploadId=upload_id,
        MultipartUpload={"Parts": listed},
        ChecksumSHA256=f"{whole}-2",
    )
    assert done["ChecksumSHA256"] == f"{whole}-2"
    head = s3.head_object(Bucket=BUCKET, Key="composite", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == f"{whole}-2"


def test_complete_with_the_full_object_crc_succeeds(s3: Any) -> None:
    parts = [b"b" * (5 * MiB), b"end"]
    upload_id, listed = started(s3, "full", parts, "CRC32C", ChecksumType="FULL_OBJECT")
    whole = checksums.of(b"".join(parts), "CRC32C")
    done = s3.complete_multipart_upload(
        Bucket=BUCKET, Key="full", UploadId=upload_id, MultipartUpload={"Parts": listed}, ChecksumCRC32C=whole
    )
    assert done["ChecksumCRC32C"] == whole
    assert done["ChecksumType"] == "FULL_OBJECT"


def test_complete_with_a_wrong_checksum_is_bad_digest_and_writes_nothing(s3: Any) -> None:
    upload_id, listed = started(s3, "wrong", [b"c" * 100], "SHA256")
    with pytest.raises(ClientError) as refused:
        s3.complete_multipart_upload(
            Bucket=BUCKET,
            Key="wrong",
            UploadId=upload_id,
            MultipartUpload={"Parts": listed},
            ChecksumSHA256=checksums.of(b"something else", "SHA256"),
        )
    assert code(refused) == ("BadDigest", 400)
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET)
    # The upload is still there: completing it with the right checksum (or none) works.
    done = s3.complete_multipart_upload(
        Bucket=BUCKET, Key="wrong", UploadId=upload_id, MultipartUpload={"Parts": listed}
    )
    assert done["ChecksumSHA256"].endswith("-1")


# SigV4 signed with a Date header as botocore's own signer writes it (RFC 2822 "-0000", meaning UTC). boto3
# without awscrt signs so; with awscrt (as here) it sends X-Amz-Date too, so the signer is called directly.


def test_botocore_signing_with_a_date_header_is_accepted(s3: Any, server: S3Server) -> None:
    s3.put_object(Bucket=BUCKET, Key="dated", Body=b"bar")
    url = f"{server.endpoint}/{BUCKET}/dated"
    headers = server.signed_headers("GET", url, {"Date": email.utils.formatdate(usegmt=True)})
    assert headers["Date"].endswith("-0000")
    assert "X-Amz-Date" not in headers
    answer = httpx.get(url, headers=headers)
    assert (answer.status_code, answer.content) == (200, b"bar")
