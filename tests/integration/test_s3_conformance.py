"""S3 behaviours SDKs rely on (issue 14): each test shows a bug fixed or a feature as S3 documents it."""

from __future__ import annotations

import asyncio
import base64
import calendar
import email.utils
import hashlib
import hmac
import json
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from bookstore.objectstore import checksums
from bookstore.objectstore.conditional import WriteConditions
from bookstore.objectstore.errors import ConditionalRequestConflict
from bookstore.objectstore.sigv4 import signing_key
from tests.support.aws_cli import aws, aws_fails
from tests.support.s3_server import KEY, REGION, SECRET, S3Server, error_code

BUCKET = "conformance"
MIB = 1024 * 1024


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


def test_a_repeated_complete_answers_with_the_first_answers_checksum_and_encryption(s3: Any) -> None:
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="sums", ChecksumAlgorithm="SHA256")["UploadId"]
    body = b"q" * 10
    part = s3.upload_part(
        Bucket=BUCKET, Key="sums", UploadId=upload_id, PartNumber=1, Body=body, ChecksumAlgorithm="SHA256"
    )
    parts = [{"PartNumber": 1, "ETag": part["ETag"], "ChecksumSHA256": part["ChecksumSHA256"]}]
    first = s3.complete_multipart_upload(
        Bucket=BUCKET, Key="sums", UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    again = s3.complete_multipart_upload(
        Bucket=BUCKET, Key="sums", UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    assert first["ChecksumSHA256"] and first["ServerSideEncryption"] == "AES256"
    for field in ("ETag", "ChecksumSHA256", "ServerSideEncryption"):
        assert again.get(field) == first[field], field


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


# Bug 4 and ACLs: the owner's FULL_CONTROL, `private` only.


def test_get_object_acl_is_not_the_object(s3: Any, server: S3Server) -> None:
    s3.put_object(Bucket=BUCKET, Key="k", Body=b"secret bytes")
    answer = server.signed("GET", f"/{BUCKET}/k?acl")
    assert answer.status_code == 200
    assert b"secret bytes" not in answer.content and b"AccessControlPolicy" in answer.content
    got = s3.get_object_acl(Bucket=BUCKET, Key="k")
    assert [g["Permission"] for g in got["Grants"]] == ["FULL_CONTROL"]
    assert got["Grants"][0]["Grantee"]["ID"] == got["Owner"]["ID"]
    bucket_acl = s3.get_bucket_acl(Bucket=BUCKET)
    assert bucket_acl["Grants"] == got["Grants"]
    with pytest.raises(ClientError) as missing:
        s3.get_object_acl(Bucket=BUCKET, Key="nothing")
    assert code(missing) == "NoSuchKey"


def test_only_the_private_acl_is_accepted(s3: Any, server: S3Server, tmp_path: Path) -> None:
    s3.put_object(Bucket=BUCKET, Key="k", Body=b"x", ACL="private")
    s3.put_object_acl(Bucket=BUCKET, Key="k", ACL="private")
    s3.put_bucket_acl(Bucket=BUCKET, ACL="private")
    # The policy read back can be written back as it is.
    policy = s3.get_bucket_acl(Bucket=BUCKET)
    s3.put_bucket_acl(
        Bucket=BUCKET, AccessControlPolicy={"Grants": policy["Grants"], "Owner": policy["Owner"]}
    )
    attempts: tuple[Callable[[], Any], ...] = (
        lambda: s3.put_object(Bucket=BUCKET, Key="k", Body=b"x", ACL="public-read"),
        lambda: s3.put_object_acl(Bucket=BUCKET, Key="k", ACL="public-read"),
        lambda: s3.put_bucket_acl(Bucket=BUCKET, ACL="public-read-write"),
        lambda: s3.put_object_acl(
            Bucket=BUCKET, Key="k", GrantRead='uri="http://acs.amazonaws.com/groups/global/AllUsers"'
        ),
        lambda: s3.create_multipart_upload(Bucket=BUCKET, Key="m", ACL="authenticated-read"),
        lambda: s3.put_bucket_acl(
            Bucket=BUCKET,
            AccessControlPolicy={
                "Owner": policy["Owner"],
                "Grants": [
                    *policy["Grants"],
                    {
                        "Grantee": {
                            "Type": "Group",
                            "URI": "http://acs.amazonaws.com/groups/global/AllUsers",
                        },
                        "Permission": "READ",
                    },
                ],
            },
        ),
    )
    for attempt in attempts:
        with pytest.raises(ClientError) as refused:
            attempt()
        assert (status(refused), code(refused)) == (400, "AccessControlListNotSupported")
    for body in (b"not xml", b"<!DOCTYPE a [<!ENTITY b 'c'>]><AccessControlPolicy/>", b"<Other/>"):
        answer = server.signed("PUT", f"/{BUCKET}?acl", body)
        assert (answer.status_code, error_code(answer)) == (400, "MalformedXML"), body
    assert "FULL_CONTROL" in aws(
        server, tmp_path, "s3api", "get-object-acl", "--bucket", BUCKET, "--key", "k"
    )
    aws(server, tmp_path, "s3api", "put-bucket-acl", "--bucket", BUCKET, "--acl", "private")
    assert "AccessControlListNotSupported" in aws_fails(
        server, tmp_path, "s3api", "put-bucket-acl", "--bucket", BUCKET, "--acl", "public-read"
    )


# Bug 6: a configuration the bucket lacks is a 404 of S3's own code.


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        ("get_bucket_cors", "NoSuchCORSConfiguration"),
        ("get_bucket_tagging", "NoSuchTagSet"),
        ("get_bucket_lifecycle_configuration", "NoSuchLifecycleConfiguration"),
        ("get_bucket_policy", "NoSuchBucketPolicy"),
        ("get_bucket_website", "NoSuchWebsiteConfiguration"),
        ("get_bucket_replication", "ReplicationConfigurationNotFoundError"),
        ("get_public_access_block", "NoSuchPublicAccessBlockConfiguration"),
        ("get_object_lock_configuration", "ObjectLockConfigurationNotFoundError"),
    ],
)
def test_an_absent_configuration_is_a_404_of_its_own(s3: Any, operation: str, expected: str) -> None:
    with pytest.raises(ClientError) as absent:
        getattr(s3, operation)(Bucket=BUCKET)
    assert (status(absent), code(absent)) == (404, expected)


def test_configurations_never_set_answer_as_s3_does(s3: Any, server: S3Server, tmp_path: Path) -> None:
    assert s3.get_bucket_accelerate_configuration(Bucket=BUCKET).get("Status") is None
    assert "LoggingEnabled" not in s3.get_bucket_logging(Bucket=BUCKET)
    assert s3.get_bucket_request_payment(Bucket=BUCKET)["Payer"] == "BucketOwner"
    owned = s3.get_bucket_ownership_controls(Bucket=BUCKET)["OwnershipControls"]
    assert owned["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert s3.list_bucket_analytics_configurations(Bucket=BUCKET).get("AnalyticsConfigurationList") is None
    assert s3.list_bucket_metrics_configurations(Bucket=BUCKET)["IsTruncated"] is False
    with pytest.raises(ClientError) as absent:
        s3.get_bucket_inventory_configuration(Bucket=BUCKET, Id="x")
    assert (status(absent), code(absent)) == (404, "NoSuchConfiguration")
    assert "NoSuchTagSet" in aws_fails(server, tmp_path, "s3api", "get-bucket-tagging", "--bucket", BUCKET)


def test_bucket_tagging(s3: Any, server: S3Server, tmp_path: Path) -> None:
    tags = [{"Key": "team", "Value": "books"}, {"Key": "cost", "Value": ""}]
    s3.put_bucket_tagging(Bucket=BUCKET, Tagging={"TagSet": tags})
    assert s3.get_bucket_tagging(Bucket=BUCKET)["TagSet"] == tags
    got = json.loads(aws(server, tmp_path, "s3api", "get-bucket-tagging", "--bucket", BUCKET))
    assert got["TagSet"] == tags
    s3.delete_bucket_tagging(Bucket=BUCKET)
    assert "NoSuchTagSet" in aws_fails(server, tmp_path, "s3api", "get-bucket-tagging", "--bucket", BUCKET)


# Bug 7: tag limits.


@pytest.mark.parametrize(
    "tags",
    [
        [{"Key": f"k{i}", "Value": "v"} for i in range(11)],
        [{"Key": "k" * 129, "Value": "v"}],
        [{"Key": "k", "Value": "v" * 257}],
        [{"Key": "k", "Value": "1"}, {"Key": "k", "Value": "2"}],
    ],
)
def test_object_tag_limits(s3: Any, tags: list[dict[str, str]]) -> None:
    s3.put_object(Bucket=BUCKET, Key="k", Body=b"x")
    with pytest.raises(ClientError) as refused:
        s3.put_object_tagging(Bucket=BUCKET, Key="k", Tagging={"TagSet": tags})
    assert (status(refused), code(refused)) == (400, "InvalidTag")


def test_tag_limits_on_a_write_and_a_bucket(s3: Any) -> None:
    with pytest.raises(ClientError) as header:
        s3.put_object(Bucket=BUCKET, Key="k", Body=b"x", Tagging="&".join(f"k{i}=v" for i in range(11)))
    assert code(header) == "InvalidTag"
    s3.put_object(Bucket=BUCKET, Key="k", Body=b"x", Tagging="k" * 128 + "=" + "v" * 256)
    s3.put_bucket_tagging(
        Bucket=BUCKET, Tagging={"TagSet": [{"Key": f"k{i}", "Value": "v"} for i in range(50)]}
    )
    with pytest.raises(ClientError) as many:
        s3.put_bucket_tagging(
            Bucket=BUCKET, Tagging={"TagSet": [{"Key": f"k{i}", "Value": "v"} for i in range(51)]}
        )
    assert code(many) == "InvalidTag"


# ListMultipartUploads.


def test_list_multipart_uploads(s3: Any, server: S3Server, tmp_path: Path) -> None:
    ids: dict[str, list[str]] = {}
    for key in ("a/1", "a/2", "b", "b", "c"):
        ids.setdefault(key, []).append(s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"])
    listed = s3.list_multipart_uploads(Bucket=BUCKET)
    assert [(u["Key"], u["UploadId"]) for u in listed["Uploads"]] == [
        ("a/1", ids["a/1"][0]),
        ("a/2", ids["a/2"][0]),
        *sorted([("b", i) for i in ids["b"]], key=lambda kv: listed_order(listed, kv[1])),
        ("c", ids["c"][0]),
    ]
    assert all(u["Initiated"] for u in listed["Uploads"])
    rolled = s3.list_multipart_uploads(Bucket=BUCKET, Delimiter="/")
    assert [p["Prefix"] for p in rolled["CommonPrefixes"]] == ["a/"]
    assert [u["Key"] for u in rolled["Uploads"]] == ["b", "b", "c"]
    first = s3.list_multipart_uploads(Bucket=BUCKET, MaxUploads=3)
    assert first["IsTruncated"] and len(first["Uploads"]) == 3
    rest = s3.list_multipart_uploads(
        Bucket=BUCKET, KeyMarker=first["NextKeyMarker"], UploadIdMarker=first["NextUploadIdMarker"]
    )
    assert [u["UploadId"] for u in first["Uploads"] + rest["Uploads"]] == [
        u["UploadId"] for u in listed["Uploads"]
    ]
    assert [u["Key"] for u in s3.list_multipart_uploads(Bucket=BUCKET, Prefix="a/")["Uploads"]] == [
        "a/1",
        "a/2",
    ]
    cli = json.loads(aws(server, tmp_path, "s3api", "list-multipart-uploads", "--bucket", BUCKET))
    assert len(cli["Uploads"]) == 5


def listed_order(listed: dict[str, Any], upload_id: str) -> int:
    return [u["UploadId"] for u in listed["Uploads"]].index(upload_id)


# Object Lock and SigV2: refused with S3's codes.


def test_object_lock_is_refused_as_s3_refuses_it(s3: Any, server: S3Server) -> None:
    with pytest.raises(ClientError) as create:
        s3.create_bucket(
            Bucket="locked",
            CreateBucketConfiguration={"LocationConstraint": REGION},
            ObjectLockEnabledForBucket=True,
        )
    assert (status(create), code(create)) == (501, "NotImplemented")
    with pytest.raises(ClientError) as put_config:
        s3.put_object_lock_configuration(
            Bucket=BUCKET, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"}
        )
    assert (status(put_config), code(put_config)) == (409, "InvalidBucketState")
    s3.put_object(Bucket=BUCKET, Key="k", Body=b"x")
    attempts: tuple[Callable[[], Any], ...] = (
        lambda: s3.get_object_retention(Bucket=BUCKET, Key="k"),
        lambda: s3.get_object_legal_hold(Bucket=BUCKET, Key="k"),
        lambda: s3.put_object_legal_hold(Bucket=BUCKET, Key="k", LegalHold={"Status": "ON"}),
        lambda: s3.put_object(Bucket=BUCKET, Key="k2", Body=b"x", ObjectLockLegalHoldStatus="ON"),
    )
    for attempt in attempts:
        with pytest.raises(ClientError) as refused:
            attempt()
        assert (status(refused), code(refused)) == (400, "InvalidRequest")


def test_signature_version_2_is_refused(s3: Any, server: S3Server) -> None:
    signed_v2 = httpx.get(f"{server.endpoint}/{BUCKET}", headers={"Authorization": f"AWS {KEY}:c2lnbmF0dXJl"})
    assert (signed_v2.status_code, error_code(signed_v2)) == (400, "InvalidRequest")
    presigned_v2 = httpx.get(
        f"{server.endpoint}/{BUCKET}/k?AWSAccessKeyId={KEY}&Expires=9999999999&Signature=x"
    )
    assert (presigned_v2.status_code, error_code(presigned_v2)) == (400, "InvalidRequest")


# Bug 7: the v1 listing leaves its Prefix as sent.


def test_v1_listing_with_url_encoding_keeps_the_prefix(s3: Any, server: S3Server, tmp_path: Path) -> None:
    s3.put_object(Bucket=BUCKET, Key="a b/c+d", Body=b"x")
    # boto3 asks for encoding-type=url itself and decodes what S3 encodes: not v1's Prefix.
    v1 = s3.list_objects(Bucket=BUCKET, Prefix="a b/")
    assert (v1["Prefix"], [o["Key"] for o in v1["Contents"]]) == ("a b/", ["a b/c+d"])
    v2 = s3.list_objects_v2(Bucket=BUCKET, Prefix="a b/")
    assert (v2["Prefix"], [o["Key"] for o in v2["Contents"]]) == ("a b/", ["a b/c+d"])
    cli = json.loads(aws(server, tmp_path, "s3api", "list-objects", "--bucket", BUCKET, "--prefix", "a b/"))
    assert (cli["Prefix"], [o["Key"] for o in cli["Contents"]]) == ("a b/", ["a b/c+d"])


# Bug 5: non-ASCII metadata is signed as the client signed it.


def _rfc2047(text: str) -> str:
    return "=?UTF-8?B?" + base64.b64encode(text.encode("utf-8")).decode("ascii") + "?="


def _send_title(title: str) -> Callable[..., None]:
    """A hook that puts `title` in x-amz-meta-title (botocore sends it as UTF-8) before signing."""

    def add_title(request: Any, **_: Any) -> None:
        request.headers["x-amz-meta-title"] = title

    return add_title


def test_non_ascii_metadata(s3: Any, server: S3Server, tmp_path: Path) -> None:
    # botocore refuses such metadata as a parameter; other SDKs send it as UTF-8, and so does this hook.
    hook = _send_title("Café déjà vu 書")
    s3.meta.events.register("before-sign.s3.PutObject", hook)
    s3.put_object(Bucket=BUCKET, Key="k", Body=b"x", Metadata={"plain": "ok"})
    s3.meta.events.unregister("before-sign.s3.PutObject", hook)
    # Stored as text (its signature checked over the UTF-8 bytes sent) ...
    assert server.store.head_object(BUCKET, "k").metadata == {"plain": "ok", "title": "Café déjà vu 書"}
    # ... and answered as S3 answers it: an RFC 2047 encoded word (a header is ASCII), ASCII as is.
    wanted = {"plain": "ok", "title": _rfc2047("Café déjà vu 書")}
    assert s3.head_object(Bucket=BUCKET, Key="k")["Metadata"] == wanted
    assert s3.get_object(Bucket=BUCKET, Key="k")["Metadata"] == wanted
    assert s3.get_object(Bucket=BUCKET, Key="k", Range="bytes=0-0")["Metadata"] == wanted


def test_metadata_sent_as_encoded_words_is_stored_decoded(s3: Any, server: S3Server, tmp_path: Path) -> None:
    # What botocore lets through: the encoded word itself (B or Q encoding), decoded before it is stored.
    s3.put_object(
        Bucket=BUCKET,
        Key="b",
        Body=b"x",
        Metadata={
            "title": _rfc2047("Ærø"),
            "q": "=?utf-8?Q?caf=C3=A9_cr=C3=A8me?=",
            "odd": "=?x-none?B?AA==?=",
        },
    )
    assert server.store.head_object(BUCKET, "b").metadata == {
        "title": "Ærø",
        "q": "café crème",
        "odd": "=?x-none?B?AA==?=",  # an unknown charset: kept as written
    }
    got = s3.head_object(Bucket=BUCKET, Key="b")["Metadata"]
    assert got == {"title": _rfc2047("Ærø"), "q": _rfc2047("café crème"), "odd": "=?x-none?B?AA==?="}
    # A copy that keeps the metadata keeps the text; one that replaces it reads the new headers so too.
    s3.copy_object(Bucket=BUCKET, Key="copy", CopySource=f"{BUCKET}/b")
    assert s3.head_object(Bucket=BUCKET, Key="copy")["Metadata"]["title"] == _rfc2047("Ærø")
    s3.copy_object(
        Bucket=BUCKET,
        Key="copy",
        CopySource=f"{BUCKET}/b",
        Metadata={"title": _rfc2047("Œuvre")},
        MetadataDirective="REPLACE",
    )
    assert server.store.head_object(BUCKET, "copy").metadata == {"title": "Œuvre"}
    # Multipart uploads too.
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="mp", Metadata={"title": _rfc2047("Ça")})
    part = s3.upload_part(Bucket=BUCKET, Key="mp", UploadId=upload["UploadId"], PartNumber=1, Body=b"x")
    s3.complete_multipart_upload(
        Bucket=BUCKET,
        Key="mp",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    assert s3.head_object(Bucket=BUCKET, Key="mp")["Metadata"] == {"title": _rfc2047("Ça")}
    # The aws CLI (which sends ASCII only, as botocore) reads the same answer.
    aws(
        server,
        tmp_path,
        "s3api",
        "put-object",
        "--bucket",
        BUCKET,
        "--key",
        "cli",
        "--metadata",
        json.dumps({"title": _rfc2047("Ñandú")}),
    )
    assert server.store.head_object(BUCKET, "cli").metadata == {"title": "Ñandú"}
    head = json.loads(aws(server, tmp_path, "s3api", "head-object", "--bucket", BUCKET, "--key", "cli"))
    assert head["Metadata"] == {"title": _rfc2047("Ñandú")}


def test_the_metadata_limit_counts_the_utf8_of_the_text(s3: Any, server: S3Server) -> None:
    # 2 KB of UTF-8 text fits however it was sent; a byte more does not.
    s3.put_object(Bucket=BUCKET, Key="fits", Body=b"x", Metadata={"tt": _rfc2047("é" * 1023)})
    assert server.store.head_object(BUCKET, "fits").metadata == {"tt": "é" * 1023}
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=BUCKET, Key="over", Body=b"x", Metadata={"ttt": _rfc2047("é" * 1023)})
    assert (status(refused), code(refused)) == (400, "MetadataTooLarge")


def test_post_object_metadata_beyond_latin1(s3: Any, server: S3Server) -> None:
    # A form's fields are UTF-8 text; before, such a value made every later GET of the object a 500.
    post = s3.generate_presigned_post(
        BUCKET,
        "form.txt",
        Fields={"x-amz-meta-title": "東京", "Content-Disposition": 'inline; filename="東京.txt"'},
        Conditions=[{"x-amz-meta-title": "東京"}, {"Content-Disposition": 'inline; filename="東京.txt"'}],
    )
    answer = _post(post, b"hello")
    assert answer.status_code == 204, answer.text
    assert server.store.head_object(BUCKET, "form.txt").metadata == {"title": "東京"}
    got = httpx.get(s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "form.txt"}))
    assert got.status_code == 200, got.text
    assert got.headers["x-amz-meta-title"] == _rfc2047("東京")
    # Other stored headers go out as the UTF-8 bytes a request's header would have brought.
    assert dict(got.headers.raw)[b"content-disposition"] == 'inline; filename="東京.txt"'.encode()


# Bug 7: the smaller ones.


def _sign_with_date_header(server: S3Server, method: str, path: str) -> dict[str, str]:
    """SigV4 headers that carry the time in Date (an HTTP date), not X-Amz-Date, as SigV4 allows."""
    now = time.gmtime()
    basic, day = time.strftime("%Y%m%dT%H%M%SZ", now), time.strftime("%Y%m%d", now)
    host = server.endpoint.removeprefix("http://")
    headers = {
        "date": email.utils.formatdate(calendar.timegm(now), usegmt=True),
        "host": host,
        "x-amz-content-sha256": hashlib.sha256(b"").hexdigest(),
    }
    names = sorted(headers)
    canonical = "\n".join(
        [
            method,
            path,
            "",
            *(f"{n}:{headers[n]}" for n in names),
            "",
            ";".join(names),
            headers["x-amz-content-sha256"],
        ]
    )
    scope = f"{day}/{REGION}/s3/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{basic}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = signing_key(SECRET, day, REGION, "s3")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={KEY}/{scope}, SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    del headers["host"]
    return headers


def test_sigv4_with_a_date_header_instead_of_x_amz_date(s3: Any, server: S3Server) -> None:
    s3.put_object(Bucket=BUCKET, Key="k", Body=b"dated")
    answer = httpx.get(
        f"{server.endpoint}/{BUCKET}/k", headers=_sign_with_date_header(server, "GET", f"/{BUCKET}/k")
    )
    assert (answer.status_code, answer.content) == (200, b"dated")


def test_an_upload_part_copy_range_past_the_source_is_refused(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="src", Body=b"0123456789")
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="dst")["UploadId"]
    for wanted in ("bytes=0-10", "bytes=10-12", "bytes=5-"):
        with pytest.raises(ClientError) as refused:
            s3.upload_part_copy(
                Bucket=BUCKET,
                Key="dst",
                UploadId=upload_id,
                PartNumber=1,
                CopySource={"Bucket": BUCKET, "Key": "src"},
                CopySourceRange=wanted,
            )
        assert (status(refused), code(refused)) == (400, "InvalidArgument"), wanted
    part = s3.upload_part_copy(
        Bucket=BUCKET,
        Key="dst",
        UploadId=upload_id,
        PartNumber=1,
        CopySource={"Bucket": BUCKET, "Key": "src"},
        CopySourceRange="bytes=0-9",
    )
    assert part["CopyPartResult"]["ETag"]


def test_a_content_md5_of_the_wrong_length_is_invalid_digest(server: S3Server, s3: Any) -> None:
    short = base64.b64encode(b"short").decode()
    answer = server.signed("PUT", f"/{BUCKET}/k", b"body", {"Content-MD5": short})
    assert (answer.status_code, error_code(answer)) == (400, "InvalidDigest")
    wrong = base64.b64encode(hashlib.md5(b"other", usedforsecurity=False).digest()).decode()
    answer = server.signed("PUT", f"/{BUCKET}/k", b"body", {"Content-MD5": wrong})
    assert (answer.status_code, error_code(answer)) == (400, "BadDigest")


@pytest.mark.parametrize("expires", ["0", "-7", "604801"])
def test_a_presigned_url_with_an_expiry_out_of_range_is_403(s3: Any, server: S3Server, expires: str) -> None:
    s3.put_object(Bucket=BUCKET, Key="k", Body=b"x")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "k"}, ExpiresIn=60)
    bad = re.sub(r"X-Amz-Expires=\d+", f"X-Amz-Expires={expires}", url)
    assert httpx.get(bad).status_code == 403


def _first_answer(server: S3Server, request: bytes) -> bytes:
    """What the server answers to `request` (headers only, the body held back) before anything else."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(request)
        return conn.recv(65536)


def test_a_refused_request_gets_no_100_continue(s3: Any, server: S3Server) -> None:
    path = "/no-such-bucket/k"
    headers = server.signed_headers(
        "PUT", server.endpoint + path, {"Content-Length": "5", "Expect": "100-continue"}
    )
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() != "host")
    host = server.endpoint.removeprefix("http://")
    first = _first_answer(server, f"PUT {path} HTTP/1.1\r\nHost: {host}\r\n{lines}\r\n".encode())
    assert first.startswith(b"HTTP/1.1 404"), first
    unsigned = (
        f"PUT /{BUCKET}/k HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    )
    assert _first_answer(server, unsigned.encode()).startswith(b"HTTP/1.1 403")
    # A request that will be served is asked for its body.
    good = server.signed_headers(
        "PUT", f"{server.endpoint}/{BUCKET}/k", {"Content-Length": "5", "Expect": "100-continue"}
    )
    lines = "".join(f"{k}: {v}\r\n" for k, v in good.items() if k.lower() != "host")
    assert _first_answer(
        server, f"PUT /{BUCKET}/k HTTP/1.1\r\nHost: {host}\r\n{lines}\r\n".encode()
    ).startswith(b"HTTP/1.1 100")


# POST object: a browser's form upload with a signed policy.


def _post(post: dict[str, Any], content: bytes, extra: dict[str, str] | None = None) -> httpx.Response:
    fields = dict(post["fields"], **(extra or {}))
    return httpx.post(post["url"], data=fields, files={"file": ("photo.jpg", content, "image/jpeg")})


def test_post_object_with_a_presigned_post(s3: Any) -> None:
    post = s3.generate_presigned_post(
        BUCKET,
        "uploads/${filename}",
        Fields={"success_action_status": "201", "x-amz-meta-origin": "browser"},
        Conditions=[
            ["starts-with", "$key", "uploads/"],
            {"success_action_status": "201"},
            {"x-amz-meta-origin": "browser"},
            ["content-length-range", 1, 1024],
        ],
        ExpiresIn=300,
    )
    answer = _post(post, b"jpeg bytes")
    assert answer.status_code == 201, answer.text
    assert "<Key>uploads/photo.jpg</Key>" in answer.text
    got = s3.get_object(Bucket=BUCKET, Key="uploads/photo.jpg")
    assert got["Body"].read() == b"jpeg bytes"
    assert got["Metadata"] == {"origin": "browser"}
    assert got["ContentType"] == "image/jpeg"


def test_post_object_default_answer_is_204(s3: Any) -> None:
    post = s3.generate_presigned_post(BUCKET, "plain.txt")
    answer = _post(post, b"hello")
    assert answer.status_code == 204, answer.text
    assert answer.headers["ETag"].strip('"') == hashlib.md5(b"hello", usedforsecurity=False).hexdigest()
    assert s3.get_object(Bucket=BUCKET, Key="plain.txt")["Body"].read() == b"hello"


def test_post_object_refusals(s3: Any, server: S3Server) -> None:
    post = s3.generate_presigned_post(BUCKET, "k", Conditions=[["content-length-range", 1, 4]])
    # A field the policy does not allow.
    extra = _post(post, b"x", {"x-amz-meta-sneaky": "1"})
    assert (extra.status_code, error_code(extra)) == (403, "AccessDenied")
    # Bigger than the policy allows.
    big = _post(post, b"12345")
    assert (big.status_code, error_code(big)) == (400, "EntityTooLarge")
    # Another key than the policy signed.
    other = _post(post, b"x", {"key": "other"})
    assert (other.status_code, error_code(other)) == (403, "AccessDenied")
    # A tampered signature.
    forged = _post(post, b"x", {"x-amz-signature": "0" * 64})
    assert (forged.status_code, error_code(forged)) == (403, "AccessDenied")
    # An expired policy.
    expired = s3.generate_presigned_post(BUCKET, "k", ExpiresIn=-10)
    late = _post(expired, b"x")
    assert (late.status_code, error_code(late)) == (403, "AccessDenied")
    # No policy at all: an anonymous upload.
    bare = httpx.post(f"{server.endpoint}/{BUCKET}", data={"key": "k"}, files={"file": ("f", b"x")})
    assert (bare.status_code, error_code(bare)) == (403, "AccessDenied")
    # Not a form.
    broken = httpx.post(
        f"{server.endpoint}/{BUCKET}",
        content=b"garbage",
        headers={"Content-Type": "multipart/form-data; boundary=zz"},
    )
    assert broken.status_code == 400
    with pytest.raises(ClientError):
        s3.head_object(Bucket=BUCKET, Key="k")


# GET and HEAD ?partNumber=N.


def test_get_and_head_by_part_number(s3: Any, server: S3Server, tmp_path: Path) -> None:
    first, second = b"a" * (5 * MIB), b"b" * 1000
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="mp")["UploadId"]
    done = [
        {
            "PartNumber": n,
            "ETag": s3.upload_part(Bucket=BUCKET, Key="mp", UploadId=upload_id, PartNumber=n, Body=b)["ETag"],
        }
        for n, b in ((1, first), (2, second))
    ]
    s3.complete_multipart_upload(Bucket=BUCKET, Key="mp", UploadId=upload_id, MultipartUpload={"Parts": done})
    got = s3.get_object(Bucket=BUCKET, Key="mp", PartNumber=2)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert (got["Body"].read(), got["PartsCount"]) == (second, 2)
    assert (
        got["ContentRange"] == f"bytes {len(first)}-{len(first) + len(second) - 1}/{len(first) + len(second)}"
    )
    head = s3.head_object(Bucket=BUCKET, Key="mp", PartNumber=1)
    assert (head["ContentLength"], head["PartsCount"]) == (len(first), 2)
    with pytest.raises(ClientError) as past:
        s3.get_object(Bucket=BUCKET, Key="mp", PartNumber=3)
    assert (status(past), code(past)) == (416, "InvalidPartNumber")
    with pytest.raises(ClientError) as both:
        s3.get_object(Bucket=BUCKET, Key="mp", PartNumber=1, Range="bytes=0-1")
    assert (status(both), code(both)) == (400, "InvalidRequest")
    # An object written whole is its own part 1.
    s3.put_object(Bucket=BUCKET, Key="whole", Body=b"whole")
    assert s3.get_object(Bucket=BUCKET, Key="whole", PartNumber=1)["Body"].read() == b"whole"
    with pytest.raises(ClientError) as none:
        s3.get_object(Bucket=BUCKET, Key="whole", PartNumber=2)
    assert code(none) == "InvalidPartNumber"
    out = tmp_path / "part2"
    aws(
        server,
        tmp_path,
        "s3api",
        "get-object",
        "--bucket",
        BUCKET,
        "--key",
        "mp",
        "--part-number",
        "2",
        str(out),
    )
    assert out.read_bytes() == second


def test_a_repeated_complete_and_tag_limits_with_the_aws_cli(
    s3: Any, server: S3Server, tmp_path: Path
) -> None:
    upload_id, parts = _upload(s3, "cli-mp")
    doc = tmp_path / "parts.json"
    doc.write_text(json.dumps({"Parts": parts}))
    complete = ("s3api", "complete-multipart-upload", "--bucket", BUCKET, "--key", "cli-mp")
    args = (*complete, "--upload-id", upload_id, "--multipart-upload", f"file://{doc}")
    first = json.loads(aws(server, tmp_path, *args))
    assert json.loads(aws(server, tmp_path, *args))["ETag"] == first["ETag"]
    tag_set = json.dumps({"TagSet": [{"Key": f"k{i}", "Value": "v"} for i in range(11)]})
    refused = aws_fails(
        server,
        tmp_path,
        "s3api",
        "put-object-tagging",
        "--bucket",
        BUCKET,
        "--key",
        "cli-mp",
        "--tagging",
        tag_set,
    )
    assert "InvalidTag" in refused


def test_a_delete_of_a_sub_resource_never_deletes_the_bucket(s3: Any, server: S3Server) -> None:
    for query in ("acl", "object-lock", "uploads", "versioning"):
        answer = server.signed("DELETE", f"/{BUCKET}?{query}")
        assert (answer.status_code, error_code(answer)) == (405, "MethodNotAllowed"), query
    s3.head_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="k", Body=b"x")
    assert server.signed("DELETE", f"/{BUCKET}/k?acl").status_code == 405
    assert s3.get_object(Bucket=BUCKET, Key="k")["Body"].read() == b"x"


def test_a_method_s3_has_not_is_refused_in_s3_xml(s3: Any, server: S3Server) -> None:
    s3.put_object(Bucket=BUCKET, Key="k", Body=b"x")
    for path in (f"/{BUCKET}", f"/{BUCKET}/k"):
        answer = server.signed("PATCH", path, b"y")
        assert (answer.status_code, error_code(answer)) == (405, "MethodNotAllowed"), path
        assert answer.headers["x-amz-request-id"]
    assert s3.get_object(Bucket=BUCKET, Key="k")["Body"].read() == b"x"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"--x\r\n"),
        ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="key"\r\n\r\nk'),
        ("multipart/form-data; boundary=x", b"--x--\r\n"),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="key"\r\n\r\n' + b"k" * 70_000 + b"\r\n--x--\r\n",
        ),
        ("multipart/form-data; boundary=x", b"\xff\xfe" * 100),
    ],
)
def test_a_broken_post_form_is_a_4xx(s3: Any, server: S3Server, content_type: str, body: bytes) -> None:
    answer = httpx.post(f"{server.endpoint}/{BUCKET}", content=body, headers={"Content-Type": content_type})
    assert 400 <= answer.status_code < 500, answer.text
    assert error_code(answer)


# Found by the ceph/s3-tests conformance suite (see docs/architecture.md, "Measured against ceph/s3-tests").


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
    parts = [b"a" * (5 * MIB), b"tail"]
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
    parts = [b"b" * (5 * MIB), b"end"]
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
    assert (code(refused), status(refused)) == ("BadDigest", 400)
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


def test_a_delete_markers_405_carries_its_last_modified(s3: Any, server: S3Server) -> None:
    versioned(s3)
    s3.put_object(Bucket=BUCKET, Key="k", Body=b"x")
    marker = s3.delete_object(Bucket=BUCKET, Key="k")["VersionId"]
    listed = s3.list_object_versions(Bucket=BUCKET)["DeleteMarkers"][0]["LastModified"]
    for operation in (s3.head_object, s3.get_object):
        with pytest.raises(ClientError) as refused:
            operation(Bucket=BUCKET, Key="k", VersionId=marker)
        assert status(refused) == 405
        answered = refused.value.response["ResponseMetadata"]["HTTPHeaders"]
        assert answered["x-amz-delete-marker"] == "true"
        assert email.utils.parsedate_to_datetime(answered["last-modified"]) == listed.replace(microsecond=0)
