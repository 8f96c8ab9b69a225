"""SSE-S3 key rotation seen through the S3 API with boto3: every read answers as before, during and after."""

from __future__ import annotations

import os
from typing import Any

from tests.support.s3_server import REGION, S3Server

BUCKET = "rotation"
MIB = 1024 * 1024
SSE_C = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": "k" * 32}


def test_reads_through_the_s3_api_across_a_rotation_and_its_reencryption(server: S3Server) -> None:
    s3: Any = server.client()
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    small, big = os.urandom(3000), os.urandom(2 * MIB + 17)
    s3.put_object(Bucket=BUCKET, Key="small", Body=small, ChecksumAlgorithm="SHA256")
    s3.put_object(Bucket=BUCKET, Key="big", Body=big, ChecksumAlgorithm="CRC32")
    s3.put_object(Bucket=BUCKET, Key="secret", Body=small, **SSE_C)
    parts = [os.urandom(5 * MIB), os.urandom(1000)]
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="multipart")["UploadId"]
    etags = [
        s3.upload_part(Bucket=BUCKET, Key="multipart", UploadId=upload, PartNumber=1, Body=parts[0])["ETag"]
    ]
    before = {k: s3.head_object(Bucket=BUCKET, Key=k, ChecksumMode="ENABLED") for k in ("small", "big")}

    status = server.store.rotate_key(reencrypt=True)
    assert status.retiring_below == 2
    # The second part is written under the new key while the first is still under the old one.
    etags.append(
        s3.upload_part(Bucket=BUCKET, Key="multipart", UploadId=upload, PartNumber=2, Body=parts[1])["ETag"]
    )
    s3.complete_multipart_upload(
        Bucket=BUCKET,
        Key="multipart",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]},
    )
    whole = b"".join(parts)

    def check() -> None:
        assert s3.get_object(Bucket=BUCKET, Key="small")["Body"].read() == small
        got = s3.get_object(Bucket=BUCKET, Key="big")
        assert (got["Body"].read(), got["ServerSideEncryption"]) == (big, "AES256")
        ranged = s3.get_object(Bucket=BUCKET, Key="big", Range="bytes=1048570-1048600")["Body"].read()
        assert ranged == big[1_048_570:1_048_601]
        assert s3.get_object(Bucket=BUCKET, Key="multipart")["Body"].read() == whole
        across = s3.get_object(Bucket=BUCKET, Key="multipart", Range=f"bytes={5 * MIB - 3}-{5 * MIB + 3}")
        assert across["Body"].read() == whole[5 * MIB - 3 : 5 * MIB + 4]
        second = s3.get_object(Bucket=BUCKET, Key="multipart", PartNumber=2)
        assert (second["PartsCount"], second["Body"].read()) == (2, parts[1])
        assert s3.get_object(Bucket=BUCKET, Key="secret", **SSE_C)["Body"].read() == small
        for key, head in before.items():
            now = s3.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
            assert (now["ETag"], now.get("ChecksumSHA256"), now.get("ChecksumCRC32")) == (
                head["ETag"],
                head.get("ChecksumSHA256"),
                head.get("ChecksumCRC32"),
            )

    check()
    steps = 0
    while not server.store.reencrypt_step(1).done:
        steps += 1
        check()  # between any two steps, every object reads as written
    assert steps >= 3
    assert server.store.key_status().keys == (2,)
    check()
