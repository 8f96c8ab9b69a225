"""S3 behaviours SDKs rely on (issue 14): each test shows a bug fixed or a feature as S3 documents it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from bookstore.objectstore.conditional import WriteConditions
from bookstore.objectstore.errors import ConditionalRequestConflict
from tests.support.aws_cli import aws, aws_fails
from tests.support.s3_server import KEY, REGION, SECRET, S3Server, error_code, s3_server

BUCKET = "conformance"
MIB = 1024 * 1024


@pytest.fixture
def server(tmp_path: Path) -> Iterator[S3Server]:
    with s3_server(tmp_path / "objects") as running:
        yield running


@pytest.fixture
def s3(server: S3Server) -> Any:
    client = server.client()
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    return client


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def status(exc: pytest.ExceptionInfo[ClientError]) -> int:
    return int(exc.value.response["ResponseMetadata"]["HTTPStatusCode"])


def versioned(s3: Any) -> None:
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})


# Bug 1: a version id marker is a position, not a row.


def test_emptying_a_versioned_bucket_page_by_page_with_boto3(server: S3Server, s3: Any) -> None:
    versioned(s3)
    for i in range(5):
        for _ in range(3):
            s3.put_object(Bucket=BUCKET, Key=f"k{i}", Body=b"x")
        s3.delete_object(Bucket=BUCKET, Key=f"k{i}")
    resource = boto3.resource(
        "s3",
        endpoint_url=server.endpoint,
        region_name=REGION,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
        config=Config(s3={"addressing_style": "path"}),
    )
    bucket = resource.Bucket(BUCKET)
    # Pages of 3: each page's last version is deleted before the next page is asked for.
    bucket.object_versions.page_size(3).delete()
    assert s3.list_object_versions(Bucket=BUCKET).get("Versions", []) == []
    assert s3.list_object_versions(Bucket=BUCKET).get("DeleteMarkers", []) == []
    s3.delete_bucket(Bucket=BUCKET)


def test_a_deleted_marker_version_resumes_after_its_place(s3: Any) -> None:
    versioned(s3)
    ids = [s3.put_object(Bucket=BUCKET, Key="a", Body=b"x")["VersionId"] for _ in range(4)]
    s3.put_object(Bucket=BUCKET, Key="b", Body=b"y")
    page = s3.list_object_versions(Bucket=BUCKET, MaxKeys=2)
    assert [v["VersionId"] for v in page["Versions"]] == [ids[3], ids[2]]
    s3.delete_object(Bucket=BUCKET, Key="a", VersionId=ids[2])
    rest = s3.list_object_versions(
        Bucket=BUCKET, KeyMarker=page["NextKeyMarker"], VersionIdMarker=page["NextVersionIdMarker"]
    )
    assert [(v["Key"], v.get("VersionId")) for v in rest["Versions"]][:2] == [("a", ids[1]), ("a", ids[0])]
    assert [v["Key"] for v in rest["Versions"]] == ["a", "a", "b"]


def test_emptying_a_versioned_bucket_with_the_aws_cli(server: S3Server, s3: Any, tmp_path: Path) -> None:
    versioned(s3)
    for i in range(4):
        s3.put_object(Bucket=BUCKET, Key=f"f{i}", Body=b"1")
        s3.put_object(Bucket=BUCKET, Key=f"f{i}", Body=b"2")
    aws(server, tmp_path, "s3", "rm", f"s3://{BUCKET}", "--recursive")
    # One page at a time, each deleted before the next is asked for from the previous page's markers.
    markers: list[str] = []
    while True:
        page = json.loads(
            aws(
                server,
                tmp_path,
                "s3api",
                "list-object-versions",
                "--bucket",
                BUCKET,
                "--no-paginate",
                "--max-keys",
                "3",
                *markers,
            )
        )
        for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
            s3.delete_object(Bucket=BUCKET, Key=v["Key"], VersionId=v["VersionId"])
        if not page["IsTruncated"]:
            break
        markers = ["--key-marker", page["NextKeyMarker"], "--version-id-marker", page["NextVersionIdMarker"]]
    aws(server, tmp_path, "s3", "rb", f"s3://{BUCKET}")


# Bug 2: CompleteMultipartUpload sent again answers as the first did.


def _upload(s3: Any, key: str) -> tuple[str, list[dict[str, Any]]]:
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    etag = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=1, Body=b"p" * 10)["ETag"]
    return upload_id, [{"PartNumber": 1, "ETag": etag}]


def test_a_repeated_complete_answers_200_with_the_same_result(s3: Any) -> None:
    versioned(s3)
    upload_id, parts = _upload(s3, "big")
    first = s3.complete_multipart_upload(
        Bucket=BUCKET, Key="big", UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    again = s3.complete_multipart_upload(
        Bucket=BUCKET, Key="big", UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    assert again["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert (again["ETag"], again["VersionId"], again["Key"]) == (first["ETag"], first["VersionId"], "big")
    assert len(s3.list_object_versions(Bucket=BUCKET)["Versions"]) == 1
    # Not for another key, nor for an id never seen.
    with pytest.raises(ClientError) as other:
        s3.complete_multipart_upload(
            Bucket=BUCKET, Key="other", UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    assert code(other) == "NoSuchUpload"


# Bug 3: conditional writes.


def test_if_none_match_star_on_put_object(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="lock", Body=b"mine", IfNoneMatch="*")
    with pytest.raises(ClientError) as taken:
        s3.put_object(Bucket=BUCKET, Key="lock", Body=b"yours", IfNoneMatch="*")
    assert (status(taken), code(taken)) == (412, "PreconditionFailed")
    assert s3.get_object(Bucket=BUCKET, Key="lock")["Body"].read() == b"mine"


def test_if_match_on_put_object(s3: Any) -> None:
    etag = s3.put_object(Bucket=BUCKET, Key="doc", Body=b"v1")["ETag"]
    with pytest.raises(ClientError) as stale:
        s3.put_object(Bucket=BUCKET, Key="doc", Body=b"v2", IfMatch='"0123456789abcdef0123456789abcdef"')
    assert (status(stale), code(stale)) == (412, "PreconditionFailed")
    s3.put_object(Bucket=BUCKET, Key="doc", Body=b"v2", IfMatch=etag)
    assert s3.get_object(Bucket=BUCKET, Key="doc")["Body"].read() == b"v2"
    with pytest.raises(ClientError) as missing:
        s3.put_object(Bucket=BUCKET, Key="none", Body=b"v", IfMatch=etag)
    assert (status(missing), code(missing)) == (404, "NoSuchKey")


def test_if_none_match_star_on_complete_multipart_upload(s3: Any) -> None:
    upload_id, parts = _upload(s3, "once")
    s3.put_object(Bucket=BUCKET, Key="once", Body=b"first")
    with pytest.raises(ClientError) as taken:
        s3.complete_multipart_upload(
            Bucket=BUCKET, Key="once", UploadId=upload_id, MultipartUpload={"Parts": parts}, IfNoneMatch="*"
        )
    assert (status(taken), code(taken)) == (412, "PreconditionFailed")
    s3.delete_object(Bucket=BUCKET, Key="once")
    s3.complete_multipart_upload(
        Bucket=BUCKET, Key="once", UploadId=upload_id, MultipartUpload={"Parts": parts}, IfNoneMatch="*"
    )
    assert s3.get_object(Bucket=BUCKET, Key="once")["Body"].read() == b"p" * 10


def test_if_match_on_complete_multipart_upload(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="swap", Body=b"old")
    upload_id, parts = _upload(s3, "swap")
    with pytest.raises(ClientError) as stale:
        s3.complete_multipart_upload(
            Bucket=BUCKET, Key="swap", UploadId=upload_id, MultipartUpload={"Parts": parts}, IfMatch='"nope"'
        )
    assert (status(stale), code(stale)) == (412, "PreconditionFailed")


def test_a_racing_conditional_write_answers_409() -> None:
    async def race() -> None:
        conditions = WriteConditions()
        async with conditions.held(BUCKET, "k"):
            with pytest.raises(ConditionalRequestConflict):
                async with conditions.held(BUCKET, "k"):
                    pass
            async with conditions.held(BUCKET, "other"):
                pass
        async with conditions.held(BUCKET, "k"):
            pass

    asyncio.run(race())


def test_if_none_match_other_than_star_on_a_write_is_not_implemented(server: S3Server, s3: Any) -> None:
    answer = server.signed("PUT", f"/{BUCKET}/k", b"x", {"If-None-Match": '"abc"'})
    assert (answer.status_code, error_code(answer)) == (501, "NotImplemented")


def test_conditional_put_with_the_aws_cli(server: S3Server, s3: Any, tmp_path: Path) -> None:
    source = tmp_path / "body.txt"
    source.write_bytes(b"cli")
    put = (
        "s3api",
        "put-object",
        "--bucket",
        BUCKET,
        "--key",
        "c",
        "--body",
        str(source),
        "--if-none-match",
        "*",
    )
    aws(server, tmp_path, *put)
    assert "PreconditionFailed" in aws_fails(server, tmp_path, *put)
    assert s3.get_object(Bucket=BUCKET, Key="c")["Body"].read() == b"cli"
