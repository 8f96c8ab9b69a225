"""Issue 14 between regions: S3 behaviours asked of a region that does not own the bucket (forwarded).

Two real region processes: a bucket lives in Singapore, and each request goes to Ireland's endpoint,
which forwards it; the owner answers as S3 does (a browser's POST object, a conditional write, a
repeated CompleteMultipartUpload, an ACL read, a listing of uploads).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.support.regions import System, system_up

pytestmark = [pytest.mark.system, pytest.mark.xdist_group("s3-conformance-across")]

EU, AP = "eu-west-1", "ap-southeast-1"


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with system_up(tmp_path_factory.mktemp("s3-conformance-across")) as running:
        yield running


def client(system: System, region: str) -> Any:
    access = system.s3_access
    return boto3.client(
        "s3",
        endpoint_url=system.topology.region(region).s3_url,
        region_name=region,
        aws_access_key_id=access.access_key_id,
        aws_secret_access_key=access.secret_access_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def test_requests_to_a_region_that_does_not_own_the_bucket(system: System) -> None:
    owner, other = client(system, AP), client(system, EU)
    bucket = f"across-{uuid.uuid4().hex[:8]}"
    owner.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": AP})

    # POST object through Ireland: forwarded unsigned, the owner checks the policy.
    post = other.generate_presigned_post(bucket, "form/${filename}")
    answer = httpx.post(post["url"], data=post["fields"], files={"file": ("a.txt", b"posted", "text/plain")})
    assert answer.status_code == 204, answer.text
    assert owner.get_object(Bucket=bucket, Key="form/a.txt")["Body"].read() == b"posted"

    # A conditional write through Ireland.
    other.put_object(Bucket=bucket, Key="lock", Body=b"1", IfNoneMatch="*")
    with pytest.raises(ClientError) as taken:
        other.put_object(Bucket=bucket, Key="lock", Body=b"2", IfNoneMatch="*")
    assert taken.value.response["Error"]["Code"] == "PreconditionFailed"

    # A repeated complete, and the uploads listed, through Ireland.
    upload_id = other.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    assert [u["UploadId"] for u in other.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [upload_id]
    etag = other.upload_part(Bucket=bucket, Key="mp", UploadId=upload_id, PartNumber=1, Body=b"p")["ETag"]
    parts = {"Parts": [{"PartNumber": 1, "ETag": etag}]}
    first = other.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=upload_id, MultipartUpload=parts
    )
    again = other.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=upload_id, MultipartUpload=parts
    )
    assert again["ETag"] == first["ETag"]

    assert other.get_object_acl(Bucket=bucket, Key="mp")["Grants"][0]["Permission"] == "FULL_CONTROL"
