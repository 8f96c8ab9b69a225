"""A region's S3 API on a real uvicorn server on 127.0.0.1, driven by boto3, raw HTTP and the aws CLI."""

from __future__ import annotations

import calendar
import hashlib
import io
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import uvicorn
from boto3.s3.transfer import TransferConfig
from botocore.auth import S3SigV4Auth
from botocore.auth import SigV4Auth as SigV4Signer
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from bookstore.objectstore.app import create_s3_app
from bookstore.objectstore.errors import NoSuchKey
from bookstore.storage.local import LocalObjectStore
from tests.support.aws_cli import run_aws
from tests.support.threaded_server import serving

REGION = "ap-southeast-1"
KEY, SECRET = "AKIDBOOKSTORETEST", "bookstore-test-secret"
DOC_KEY, DOC_SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DOC_TIME_MS = calendar.timegm((2013, 5, 24, 0, 0, 0)) * 1000
MIB = 1024 * 1024
ODD_KEYS = [
    "..",
    "../../outside.txt",
    "a/../../../etc/passwd",
    "%2F",
    "dir%2Fnot-a-dir/%2e%2e",
    "/leading/slash",
    "folder/",
    "unicode/ключ/日本語/é😀",
    "spaces and + plus & amp?query=1#frag;semi",
    "x" * 1024,
    "é" * 512,
]


class MovableClock:
    """Wall-clock time plus an offset the test moves."""

    def __init__(self) -> None:
        self.offset_ms = 0
        self.fixed_ms: int | None = None

    def now_ms(self) -> int:
        if self.fixed_ms is not None:
            return self.fixed_ms
        return time.time_ns() // 1_000_000 + self.offset_ms


@dataclass
class Server:
    endpoint: str
    store: LocalObjectStore
    clock: MovableClock
    root: Path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    clock = MovableClock()
    root = tmp_path / "region" / "objects"
    store = LocalObjectStore(root, REGION, clock)
    app = create_s3_app(store, {KEY: SECRET, DOC_KEY: DOC_SECRET}, REGION, clock=clock)
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on such sockets, and without it every
    # response written in two parts (head, body) waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    with serving(uvicorn.Config(app, log_level="warning", lifespan="off"), sock) as (_, port):
        yield Server(f"http://127.0.0.1:{port}", store, clock, root)
    store.close()


def s3_client(server: Server, key: str = KEY, secret: str = SECRET, **config: Any) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(
            **{
                "signature_version": "s3v4",
                "s3": {"addressing_style": "path"},
                "retries": {"max_attempts": 1},
                **config,
            }
        ),
    )


@pytest.fixture
def s3(server: Server) -> Any:
    return s3_client(server)


def make_bucket(s3: Any, name: str, versioned: bool = False) -> str:
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    if versioned:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def code(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response = exc.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def signed_request(
    method: str,
    url: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    key: str = KEY,
    secret: str = SECRET,
) -> httpx.Response:
    """A request signed by botocore's own S3 SigV4 signer, sent with httpx."""
    request = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    S3SigV4Auth(Credentials(key, secret), "s3", REGION).add_auth(request)
    return httpx.request(method, url, content=body, headers=dict(request.headers.items()))


def error_code(response: httpx.Response) -> str:
    text = response.text
    return text.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in text else ""


# The seed's commands, with the real aws CLI.


@pytest.fixture
def aws(server: Server, tmp_path: Path) -> Any:
    pytest.importorskip("awscli", reason="the aws CLI (awscli from PyPI) is not installed")
    home = tmp_path / "home"
    home.mkdir()

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = run_aws(server.endpoint, home, *args)
        if ok:
            assert done.returncode == 0, f"aws {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done

    run.home = home  # type: ignore[attr-defined]
    return run


def test_the_seeds_commands_run_as_written(server: Server, aws: Any, s3: Any) -> None:
    ireland, singapore = "bookstore-web-ireland", "bookstore-web-singapore"
    for bucket in (ireland, singapore):
        aws(
            "s3api",
            "create-bucket",
            "--bucket",
            bucket,
            "--region",
            REGION,
            "--create-bucket-configuration",
            f"LocationConstraint={REGION}",
        )
        aws(
            "s3api",
            "put-bucket-versioning",
            "--bucket",
            bucket,
            "--versioning-configuration",
            "Status=Enabled",
        )
    site = aws.home / "site"
    (site / "covers").mkdir(parents=True)
    files = {
        "index.html": b"<h1>Bookstore</h1>",
        "covers/lotr.svg": b"<svg>lotr</svg>",
        "covers/ünïcode name+plus.svg": b"<svg>unicode</svg>",
        "app.bin": os.urandom(9 * MIB + 123),  # above the CLI's 8 MiB threshold: a multipart upload
    }
    (site / "before-rule.txt").write_bytes(b"written before the replication rule")
    aws("s3", "cp", str(site / "before-rule.txt"), f"s3://{ireland}/before-rule.txt")

    replication = {
        "Role": "arn:aws:iam::123456789012:role/bookstore-s3-replication",
        "Rules": [
            {
                "Status": "Enabled",
                "Priority": 1,
                "DeleteMarkerReplication": {"Status": "Disabled"},
                "Filter": {},
                "Destination": {"Bucket": f"arn:aws:s3:::{singapore}"},
            }
        ],
    }
    (aws.home / "replication.json").write_text(json.dumps(replication))
    aws(
        "s3api",
        "put-bucket-replication",
        "--bucket",
        ireland,
        "--replication-configuration",
        "file://replication.json",
    )
    stored = json.loads(aws("s3api", "get-bucket-replication", "--bucket", ireland).stdout)
    rule = stored["ReplicationConfiguration"]["Rules"][0]
    assert rule["ID"] and rule["Priority"] == 1 and rule["Status"] == "Enabled"
    assert rule["DeleteMarkerReplication"] == {"Status": "Disabled"}
    assert rule["Destination"]["Bucket"] == f"arn:aws:s3:::{singapore}"

    aws("s3", "website", f"s3://{ireland}/", "--index-document", "index.html")
    assert s3.get_bucket_website(Bucket=ireland)["IndexDocument"] == {"Suffix": "index.html"}

    for name, data in files.items():
        (site / name).write_bytes(data)
    aws("s3", "cp", str(site), f"s3://{ireland}/", "--recursive", "--exclude", "before-rule.txt")
    listed = aws("s3", "ls", f"s3://{ireland}/", "--recursive").stdout
    for name in [*files, "before-rule.txt"]:
        assert name in listed
    assert "PRE covers/" in aws("s3", "ls", f"s3://{ireland}/").stdout
    buckets = aws("s3", "ls").stdout
    assert ireland in buckets and singapore in buckets

    # Versions written after the rule wait for replication; the one from before does not.
    assert s3.head_object(Bucket=ireland, Key="index.html")["ReplicationStatus"] == "PENDING"
    assert "ReplicationStatus" not in s3.head_object(Bucket=ireland, Key="before-rule.txt")
    assert s3.head_object(Bucket=ireland, Key="app.bin")["ETag"].endswith('-2"')

    aws("s3", "sync", f"s3://{ireland}", f"s3://{singapore}")
    for name, data in {**files, "before-rule.txt": (site / "before-rule.txt").read_bytes()}.items():
        assert s3.get_object(Bucket=singapore, Key=name)["Body"].read() == data, name
    assert (
        aws("s3", "sync", f"s3://{ireland}", f"s3://{singapore}").stdout.strip() == ""
    )  # nothing left to copy

    aws("s3", "cp", f"s3://{singapore}/app.bin", str(aws.home / "downloaded.bin"))
    assert (aws.home / "downloaded.bin").read_bytes() == files["app.bin"]


def test_the_cli_reports_a_malformed_replication_configuration(aws: Any, s3: Any) -> None:
    bucket = make_bucket(s3, "bookstore-web", versioned=True)
    bad = {
        "Role": "arn:aws:iam::123456789012:role/r",
        "Rules": [{"Status": "Maybe", "Priority": 1, "Destination": {"Bucket": "arn:aws:s3:::other"}}],
    }
    (aws.home / "bad.json").write_text(json.dumps(bad))
    done = aws(
        "s3api",
        "put-bucket-replication",
        "--bucket",
        bucket,
        "--replication-configuration",
        "file://bad.json",
        ok=False,
    )
    assert done.returncode != 0
    assert "MalformedXML" in done.stderr
    missing = aws("s3api", "get-bucket-replication", "--bucket", bucket, ok=False)
    assert "ReplicationConfigurationNotFoundError" in missing.stderr


# boto3.


def test_objects_round_trip_with_boto3(s3: Any) -> None:
    bucket = make_bucket(s3, "books")
    s3.put_object(
        Bucket=bucket,
        Key="covers/lotr.txt",
        Body=b"One ring",
        ContentType="text/plain",
        Metadata={"author": "Tolkien"},
        CacheControl="max-age=60",
        Tagging="kind=cover",
    )
    got = s3.get_object(Bucket=bucket, Key="covers/lotr.txt")
    assert got["Body"].read() == b"One ring"
    assert (got["ContentType"], got["Metadata"], got["CacheControl"]) == (
        "text/plain",
        {"author": "Tolkien"},
        "max-age=60",
    )
    assert got["ETag"] == f'"{hashlib.md5(b"One ring").hexdigest()}"'
    assert got["TagCount"] == 1
    assert s3.get_object_tagging(Bucket=bucket, Key="covers/lotr.txt")["TagSet"] == [
        {"Key": "kind", "Value": "cover"}
    ]
    assert s3.head_object(Bucket=bucket, Key="covers/lotr.txt")["ContentLength"] == 8

    for n in range(25):
        s3.put_object(Bucket=bucket, Key=f"many/{n:03d}", Body=str(n).encode())
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix="many/", PaginationConfig={"PageSize": 7}
    )
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    assert keys == [f"many/{n:03d}" for n in range(25)]
    v1_pages = s3.get_paginator("list_objects").paginate(
        Bucket=bucket, Delimiter="/", PaginationConfig={"PageSize": 1}
    )
    assert [p["Prefix"] for page in v1_pages for p in page.get("CommonPrefixes", [])] == ["covers/", "many/"]

    copied = s3.copy_object(
        Bucket=bucket,
        Key="copy.txt",
        CopySource={"Bucket": bucket, "Key": "covers/lotr.txt"},
        MetadataDirective="REPLACE",
        ContentType="text/markdown",
        Metadata={"copied": "yes"},
    )
    assert copied["CopyObjectResult"]["ETag"] == got["ETag"]
    head = s3.head_object(Bucket=bucket, Key="copy.txt")
    assert (head["ContentType"], head["Metadata"]) == ("text/markdown", {"copied": "yes"})
    with pytest.raises(ClientError) as self_copy:
        s3.copy_object(Bucket=bucket, Key="copy.txt", CopySource={"Bucket": bucket, "Key": "copy.txt"})
    assert code(self_copy) == ("InvalidRequest", 400)

    result = s3.delete_objects(
        Bucket=bucket,
        Delete={"Objects": [{"Key": f"many/{n:03d}"} for n in range(25)] + [{"Key": "x" * 1025}]},
    )
    assert len(result["Deleted"]) == 25 and result["Errors"][0]["Code"] == "KeyTooLongError"
    assert s3.list_objects_v2(Bucket=bucket, Prefix="many/")["KeyCount"] == 0

    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket=bucket, Key="absent")
    assert code(missing) == ("NoSuchKey", 404)
    with pytest.raises(ClientError) as no_bucket:
        s3.get_object(Bucket="no-such-bucket", Key="k")
    assert code(no_bucket) == ("NoSuchBucket", 404)
    with pytest.raises(ClientError) as head_missing:
        s3.head_bucket(Bucket="no-such-bucket")
    assert code(head_missing) == ("404", 404)
    with pytest.raises(ClientError) as not_empty:
        s3.delete_bucket(Bucket=bucket)
    assert code(not_empty) == ("BucketNotEmpty", 409)
    with pytest.raises(ClientError) as again:
        make_bucket(s3, bucket)
    assert code(again) == ("BucketAlreadyOwnedByYou", 409)
    with pytest.raises(ClientError) as elsewhere:
        s3.create_bucket(Bucket="in-ireland", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert code(elsewhere) == ("IllegalLocationConstraintException", 400)
    assert s3.get_bucket_location(Bucket=bucket)["LocationConstraint"] == REGION
    assert s3.head_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPHeaders"]["x-amz-bucket-region"] == REGION


def test_versions_delete_markers_and_version_deletes(s3: Any) -> None:
    bucket = make_bucket(s3, "versioned", versioned=True)
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="k", Body=b"two")["VersionId"]
    marker = s3.delete_object(Bucket=bucket, Key="k")
    assert marker["DeleteMarker"] is True
    with pytest.raises(ClientError) as hidden:
        s3.get_object(Bucket=bucket, Key="k")
    assert code(hidden) == ("NoSuchKey", 404)
    assert hidden.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-delete-marker"] == "true"
    with pytest.raises(ClientError) as on_marker:
        s3.head_object(Bucket=bucket, Key="k", VersionId=marker["VersionId"])
    assert code(on_marker) == ("405", 405)
    assert s3.get_object(Bucket=bucket, Key="k", VersionId=v1)["Body"].read() == b"one"
    listed = s3.list_object_versions(Bucket=bucket)
    assert [v["VersionId"] for v in listed["Versions"]] == [v2, v1]
    assert [(m["VersionId"], m["IsLatest"]) for m in listed["DeleteMarkers"]] == [(marker["VersionId"], True)]
    s3.delete_object(Bucket=bucket, Key="k", VersionId=marker["VersionId"])
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"two"
    s3.delete_object(Bucket=bucket, Key="k", VersionId=v2)
    assert s3.get_object(Bucket=bucket, Key="k")["VersionId"] == v1
    pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket, PaginationConfig={"PageSize": 1})
    assert [v["VersionId"] for page in pages for v in page.get("Versions", [])] == [v1]


def test_odd_keys_round_trip_and_stay_inside_the_store(server: Server, s3: Any) -> None:
    bucket = make_bucket(s3, "odd-keys")
    for key in ODD_KEYS:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    for key in ODD_KEYS:
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode(), key
        assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == len(key.encode())
    listed = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page["Contents"]
    ]
    assert listed == sorted(ODD_KEYS, key=lambda k: k.encode())
    s3.copy_object(Bucket=bucket, Key="copied", CopySource={"Bucket": bucket, "Key": ODD_KEYS[2]})
    assert s3.get_object(Bucket=bucket, Key="copied")["Body"].read() == ODD_KEYS[2].encode()
    # Nothing was written outside the store's root, and nothing inside it is named after a key.
    assert sorted(p.name for p in server.root.parent.iterdir()) == ["objects"]
    assert not (server.root.parent.parent / "etc").exists()
    for path in server.root.rglob("*"):
        rel = path.relative_to(server.root)
        assert rel.parts[0] in ("blobs", "tmp", "keys") or rel.name.startswith("objects.sqlite3"), rel
    with pytest.raises(ClientError) as too_long:
        s3.put_object(Bucket=bucket, Key="x" * 1025, Body=b"x")
    assert code(too_long) == ("KeyTooLongError", 400)


def test_range_gets(s3: Any) -> None:
    bucket = make_bucket(s3, "ranges")
    data = os.urandom(3 * MIB + 11)
    s3.put_object(Bucket=bucket, Key="blob", Body=data)
    size = len(data)
    for header, (first, last) in {
        "bytes=0-99": (0, 99),
        "bytes=100-": (100, size - 1),
        "bytes=-50": (size - 50, size - 1),
        f"bytes={MIB - 5}-{2 * MIB + 5}": (MIB - 5, 2 * MIB + 5),
        "bytes=10-99999999999": (10, size - 1),
    }.items():
        got = s3.get_object(Bucket=bucket, Key="blob", Range=header)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert got["ContentRange"] == f"bytes {first}-{last}/{size}"
        assert got["Body"].read() == data[first : last + 1]
    with pytest.raises(ClientError) as unsatisfiable:
        s3.get_object(Bucket=bucket, Key="blob", Range=f"bytes={size}-")
    assert code(unsatisfiable) == ("InvalidRange", 416)
    assert (
        s3.get_object(Bucket=bucket, Key="blob", Range="bytes=9-3")["Body"].read() == data
    )  # ignored, as S3 does


def test_multipart_uploads(s3: Any) -> None:
    bucket = make_bucket(s3, "multipart", versioned=True)
    data = os.urandom(11 * MIB + 7)
    transfer = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, max_concurrency=2)
    s3.upload_fileobj(io.BytesIO(data), bucket, "big.bin", Config=transfer)
    head = s3.head_object(Bucket=bucket, Key="big.bin")
    assert head["ContentLength"] == len(data) and head["ETag"].endswith('-3"')
    down = io.BytesIO()
    s3.download_fileobj(bucket, "big.bin", down, Config=transfer)
    assert down.getvalue() == data

    upload = s3.create_multipart_upload(Bucket=bucket, Key="manual", ContentType="application/x-test")[
        "UploadId"
    ]
    part = s3.upload_part(Bucket=bucket, Key="manual", UploadId=upload, PartNumber=1, Body=b"tiny")
    parts = s3.list_parts(Bucket=bucket, Key="manual", UploadId=upload)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in parts] == [(1, part["ETag"], 4)]
    s3.abort_multipart_upload(Bucket=bucket, Key="manual", UploadId=upload)
    with pytest.raises(ClientError) as gone:
        s3.list_parts(Bucket=bucket, Key="manual", UploadId=upload)
    assert code(gone) == ("NoSuchUpload", 404)

    upload = s3.create_multipart_upload(Bucket=bucket, Key="manual")["UploadId"]
    small = s3.upload_part(Bucket=bucket, Key="manual", UploadId=upload, PartNumber=1, Body=b"small")
    last = s3.upload_part(Bucket=bucket, Key="manual", UploadId=upload, PartNumber=2, Body=b"last")
    with pytest.raises(ClientError) as too_small:
        s3.complete_multipart_upload(
            Bucket=bucket,
            Key="manual",
            UploadId=upload,
            MultipartUpload={
                "Parts": [{"PartNumber": 1, "ETag": small["ETag"]}, {"PartNumber": 2, "ETag": last["ETag"]}]
            },
        )
    assert code(too_small) == ("EntityTooSmall", 400)
    copied = s3.upload_part_copy(
        Bucket=bucket,
        Key="manual",
        UploadId=upload,
        PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "big.bin"},
        CopySourceRange=f"bytes=0-{5 * MIB - 1}",
    )
    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key="manual",
        UploadId=upload,
        MultipartUpload={
            "Parts": [
                {"PartNumber": 1, "ETag": copied["CopyPartResult"]["ETag"]},
                {"PartNumber": 2, "ETag": last["ETag"]},
            ]
        },
    )
    assert done["VersionId"]
    assert s3.get_object(Bucket=bucket, Key="manual")["Body"].read() == data[: 5 * MIB] + b"last"


def test_boto3_streaming_uploads_with_trailing_checksums(s3: Any) -> None:
    """What botocore sends over TLS: STREAMING-UNSIGNED-PAYLOAD-TRAILER with a CRC32 trailer."""
    bucket = make_bucket(s3, "streaming")
    seen: list[str] = []

    def as_over_tls(params: dict[str, Any], **_: Any) -> None:
        algorithm = params["context"].get("checksum", {}).get("request_algorithm")
        if algorithm:
            algorithm["in"] = "trailer"

    def record(request: Any, **_: Any) -> None:
        seen.append(request.headers.get("x-amz-content-sha256", b"").decode())

    s3.meta.events.register("before-call.s3.PutObject", as_over_tls)
    s3.meta.events.register("before-send.s3.PutObject", record)
    data = os.urandom(300_000)
    put = s3.put_object(Bucket=bucket, Key="streamed", Body=io.BytesIO(data))
    assert seen == ["STREAMING-UNSIGNED-PAYLOAD-TRAILER"]
    assert "x-amz-checksum-crc32" in put["ResponseMetadata"]["HTTPHeaders"]
    assert s3.get_object(Bucket=bucket, Key="streamed")["Body"].read() == data


def test_unsigned_payloads_are_accepted_with_their_checksum(server: Server) -> None:
    """A client that does not sign the body sends x-amz-content-sha256: UNSIGNED-PAYLOAD."""
    unsigned = s3_client(server, s3={"addressing_style": "path", "payload_signing_enabled": False})
    bucket = make_bucket(unsigned, "unsigned")
    seen: list[str] = []
    unsigned.meta.events.register(
        "before-send.s3.PutObject",
        lambda request, **_: seen.append(request.headers["x-amz-content-sha256"].decode()),
    )
    unsigned.put_object(Bucket=bucket, Key="k", Body=b"not signed, but checksummed")
    assert seen == ["UNSIGNED-PAYLOAD"]
    assert server.store.get_object(bucket, "k").read() == b"not signed, but checksummed"
    # The CRC32 botocore sends still guards the body: a wrong one is refused and nothing is stored.
    request = AWSRequest(
        method="PUT",
        url=f"{server.endpoint}/{bucket}/bad-crc",
        data=b"body",
        headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD", "x-amz-checksum-crc32": "AAAAAA=="},
    )
    SigV4Signer(Credentials(KEY, SECRET), "s3", REGION).add_auth(request)
    refused = httpx.put(request.url, content=b"body", headers=dict(request.headers.items()))
    assert (refused.status_code, error_code(refused)) == (400, "BadDigest")
    with pytest.raises(NoSuchKey):
        server.store.head_object(bucket, "bad-crc")


# Authentication.


def test_bad_signatures_unknown_keys_and_anonymous_requests_change_nothing(server: Server, s3: Any) -> None:
    bucket = make_bucket(s3, "guarded", versioned=True)
    s3.put_object(Bucket=bucket, Key="kept", Body=b"original")
    for key, secret, expected in (
        (KEY, "wrong-secret", "SignatureDoesNotMatch"),
        ("AKIDUNKNOWN", SECRET, "InvalidAccessKeyId"),
    ):
        intruder = s3_client(server, key=key, secret=secret)
        attempts = [
            lambda c=intruder: c.put_object(Bucket=bucket, Key="kept", Body=b"overwritten"),
            lambda c=intruder: c.put_object(Bucket=bucket, Key="new", Body=b"new"),
            lambda c=intruder: c.delete_object(Bucket=bucket, Key="kept"),
            lambda c=intruder: c.create_bucket(
                Bucket="intruder", CreateBucketConfiguration={"LocationConstraint": REGION}
            ),
            lambda c=intruder: c.put_bucket_versioning(
                Bucket=bucket, VersioningConfiguration={"Status": "Suspended"}
            ),
            lambda c=intruder: c.get_object(Bucket=bucket, Key="kept"),
            intruder.list_buckets,
        ]
        for attempt in attempts:
            with pytest.raises(ClientError) as refused:
                attempt()
            assert code(refused) == (expected, 403)
    anonymous = httpx.put(f"{server.endpoint}/{bucket}/anon", content=b"x")
    assert (anonymous.status_code, error_code(anonymous)) == (403, "AccessDenied")
    assert httpx.get(f"{server.endpoint}/{bucket}/kept").status_code == 403
    # An x-amz- header added after signing is refused too.
    request = AWSRequest(method="PUT", url=f"{server.endpoint}/{bucket}/late", data=b"x")
    S3SigV4Auth(Credentials(KEY, SECRET), "s3", REGION).add_auth(request)
    late = httpx.put(
        request.url, content=b"x", headers={**dict(request.headers.items()), "x-amz-meta-late": "1"}
    )
    assert (late.status_code, error_code(late)) == (403, "AccessDenied")
    # A body that differs from the signed hash.
    request = AWSRequest(method="PUT", url=f"{server.endpoint}/{bucket}/tampered", data=b"signed body")
    S3SigV4Auth(Credentials(KEY, SECRET), "s3", REGION).add_auth(request)
    tampered = httpx.put(request.url, content=b"other body!", headers=dict(request.headers.items()))
    assert (tampered.status_code, error_code(tampered)) == (400, "XAmzContentSHA256Mismatch")

    store = server.store
    assert store.get_object(bucket, "kept").read() == b"original"
    assert [v.key for v in store.list_versions(bucket).versions] == ["kept"]
    assert [b.name for b in store.list_buckets()] == [bucket]
    assert store.get_bucket(bucket).versioning == "Enabled"
    # Requests signed too far from the server's clock are refused.
    server.clock.offset_ms = 20 * 60 * 1000
    with pytest.raises(ClientError) as skewed:
        s3.put_object(Bucket=bucket, Key="skewed", Body=b"x")
    assert code(skewed) == ("RequestTimeTooSkewed", 403)


def test_presigned_urls_work_until_they_expire(server: Server, s3: Any) -> None:
    bucket = make_bucket(s3, "presigned")
    s3.put_object(Bucket=bucket, Key="cover.svg", Body=b"<svg/>")
    get_url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "cover.svg"}, ExpiresIn=60
    )
    put_url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "upload.txt"}, ExpiresIn=60
    )
    assert httpx.get(get_url).content == b"<svg/>"
    assert httpx.put(put_url, content=b"uploaded").status_code == 200
    assert server.store.get_object(bucket, "upload.txt").read() == b"uploaded"

    late_put = s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "late.txt"}, ExpiresIn=60
    )
    server.clock.offset_ms = 61_000
    for response in (httpx.get(get_url), httpx.put(late_put, content=b"too late")):
        assert (response.status_code, error_code(response)) == (403, "AccessDenied")
        assert "expired" in response.text
    with pytest.raises(NoSuchKey):
        server.store.head_object(bucket, "late.txt")
    tampered = get_url.replace("cover.svg", "upload.txt")
    assert httpx.get(tampered).status_code == 403

    server.clock.offset_ms = 0
    legacy = s3_client(server, signature_version="s3")
    v2_url = legacy.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "cover.svg"})
    refused = httpx.get(v2_url)
    assert (refused.status_code, error_code(refused)) == (400, "InvalidRequest")


def test_the_documented_aws_signature_examples_verify(server: Server) -> None:
    """The worked examples of the AWS SigV4 documentation, exactly as published (2013-05-24)."""
    server.clock.fixed_ms = DOC_TIME_MS
    server.store.create_bucket("examplebucket")
    host = {"host": "s3.amazonaws.com"}
    payload = b"a" * 66560

    def chunked(
        seed: str, signatures: list[str], trailer: bytes, signed_headers: str, mode: str
    ) -> httpx.Response:
        body = (
            f"10000;chunk-signature={signatures[0]}\r\n".encode()
            + payload[:65536]
            + f"\r\n400;chunk-signature={signatures[1]}\r\n".encode()
            + payload[65536:]
            + f"\r\n0;chunk-signature={signatures[2]}\r\n".encode()
            + trailer
            + b"\r\n"
        )
        headers = {
            **host,
            "x-amz-date": "20130524T000000Z",
            "x-amz-storage-class": "REDUCED_REDUNDANCY",
            "authorization": (
                f"AWS4-HMAC-SHA256 Credential={DOC_KEY}/20130524/us-east-1/s3/aws4_request,"
                f"SignedHeaders={signed_headers},Signature={seed}"
            ),
            "x-amz-content-sha256": mode,
            "content-encoding": "aws-chunked",
            "x-amz-decoded-content-length": "66560",
        }
        if trailer:
            headers["x-amz-trailer"] = "x-amz-checksum-crc32c"
        return httpx.put(f"{server.endpoint}/examplebucket/chunkObject.txt", content=body, headers=headers)

    signatures = [
        "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
        "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
        "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
    ]
    plain_headers = (
        "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;"
        "x-amz-storage-class"
    )
    seed = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    broken = chunked(
        seed,
        [signatures[0], "0" * 64, signatures[2]],
        b"",
        plain_headers,
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    )
    assert (broken.status_code, error_code(broken)) == (403, "SignatureDoesNotMatch")
    with pytest.raises(NoSuchKey):
        server.store.head_object("examplebucket", "chunkObject.txt")
    accepted = chunked(seed, signatures, b"", plain_headers, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
    assert accepted.status_code == 200, accepted.text
    stored = server.store.get_object("examplebucket", "chunkObject.txt")
    assert stored.read() == payload and stored.version.content_type == "binary/octet-stream"
    assert "Content-Encoding" not in stored.version.headers  # aws-chunked was the transfer, not the object

    trailer_headers = (
        "content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;"
        "x-amz-storage-class;x-amz-trailer"
    )
    with_trailer = chunked(
        "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e",
        [
            "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
            "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
            "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
        ],
        b"x-amz-checksum-crc32c:sOO8/Q==\r\n"
        b"x-amz-trailer-signature:d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435\r\n",
        trailer_headers,
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
    )
    assert with_trailer.status_code == 200, with_trailer.text

    # GET examples: with path-style addressing /test.txt names a bucket, so a verified signature
    # gets as far as NoSuchBucket (404), an unverified one stops at 403.
    doc_host = {"host": "examplebucket.s3.amazonaws.com"}
    get_headers = {
        **doc_host,
        "range": "bytes=0-9",
        "x-amz-content-sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "x-amz-date": "20130524T000000Z",
        "authorization": (
            f"AWS4-HMAC-SHA256 Credential={DOC_KEY}/20130524/us-east-1/s3/aws4_request,"
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        ),
    }
    assert error_code(httpx.get(f"{server.endpoint}/test.txt", headers=get_headers)) == "NoSuchBucket"
    presigned = (
        f"{server.endpoint}/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential={DOC_KEY}%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z"
        "&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )
    assert error_code(httpx.get(presigned, headers=doc_host)) == "NoSuchBucket"
    server.clock.fixed_ms = DOC_TIME_MS + 86_401_000
    expired = httpx.get(presigned, headers=doc_host)
    assert (expired.status_code, error_code(expired)) == (403, "AccessDenied")


# Bucket configurations.


def test_replication_configuration_over_http(server: Server, s3: Any) -> None:
    bucket = make_bucket(s3, "source-bucket")
    config: dict[str, Any] = {
        "Role": "arn:aws:iam::123456789012:role/r",
        "Rules": [
            {
                "ID": "all",
                "Status": "Enabled",
                "Priority": 1,
                "DeleteMarkerReplication": {"Status": "Disabled"},
                "Filter": {},
                "Destination": {"Bucket": "arn:aws:s3:::dest-bucket"},
            }
        ],
    }
    with pytest.raises(ClientError) as unversioned:
        s3.put_bucket_replication(Bucket=bucket, ReplicationConfiguration=config)
    assert code(unversioned) == ("InvalidRequest", 400)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

    url = f"{server.endpoint}/{bucket}?replication"
    malformed = [
        b"not xml at all",
        b"<ReplicationConfiguration><Role>r</Role><Rule><Status>Enabled</Status>",
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
        b"<ReplicationConfiguration><Role>&lol2;</Role></ReplicationConfiguration>",
        b"<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>",
        b"<ReplicationConfiguration><Role>r</Role><Rule><Status>Enabled</Status><Priority>1</Priority>"
        b"<Filter/><DeleteMarkerReplication><Status>Disabled</Status></DeleteMarkerReplication>"
        b"<Destination><Bucket>arn:aws:s3:::dest-bucket</Bucket></Destination><Surprise/></Rule>"
        b"</ReplicationConfiguration>",
        b"<ReplicationConfiguration><Role>r</Role><Rule><Status>Enabled</Status><Priority>1</Priority>"
        b"<Filter><Prefix>a</Prefix><Tag><Key>k</Key><Value>v</Value></Tag></Filter>"
        b"<Destination><Bucket>arn:aws:s3:::dest-bucket</Bucket></Destination></Rule></ReplicationConfiguration>",
    ]
    for body in malformed:
        response = signed_request("PUT", url, body)
        assert (response.status_code, error_code(response)) == (400, "MalformedXML"), body
    with pytest.raises(ClientError) as maybe:
        s3.put_bucket_replication(
            Bucket=bucket,
            ReplicationConfiguration={**config, "Rules": [{**config["Rules"][0], "Status": "Maybe"}]},
        )
    assert code(maybe) == ("MalformedXML", 400)
    with pytest.raises(ClientError) as not_arn:
        bad_rule = {**config["Rules"][0], "Destination": {"Bucket": "dest-bucket"}}
        s3.put_bucket_replication(Bucket=bucket, ReplicationConfiguration={**config, "Rules": [bad_rule]})
    assert code(not_arn) == ("InvalidArgument", 400)
    with pytest.raises(ClientError) as none_yet:
        s3.get_bucket_replication(Bucket=bucket)
    assert code(none_yet) == ("ReplicationConfigurationNotFoundError", 404)

    s3.put_bucket_replication(Bucket=bucket, ReplicationConfiguration=config)
    assert s3.get_bucket_replication(Bucket=bucket)["ReplicationConfiguration"] == config
    tagged = {
        "Role": "r",
        "Rules": [
            {
                "ID": "tagged",
                "Status": "Enabled",
                "Priority": 3,
                "Filter": {
                    "And": {
                        "Prefix": "covers/",
                        "Tags": [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}],
                    }
                },
                "DeleteMarkerReplication": {"Status": "Disabled"},
                "ExistingObjectReplication": {"Status": "Enabled"},
                "SourceSelectionCriteria": {"ReplicaModifications": {"Status": "Enabled"}},
                "Destination": {"Bucket": "arn:aws:s3:::dest-bucket", "StorageClass": "STANDARD"},
            }
        ],
    }
    s3.put_bucket_replication(Bucket=bucket, ReplicationConfiguration=tagged)
    assert s3.get_bucket_replication(Bucket=bucket)["ReplicationConfiguration"] == tagged

    # Replication status shows as x-amz-replication-status.
    s3.put_object(Bucket=bucket, Key="covers/x.svg", Body=b"x", Tagging="a=1&b=2")
    s3.put_object(Bucket=bucket, Key="covers/y.svg", Body=b"y", Tagging="a=1")
    assert s3.head_object(Bucket=bucket, Key="covers/x.svg")["ReplicationStatus"] == "PENDING"
    assert "ReplicationStatus" not in s3.head_object(Bucket=bucket, Key="covers/y.svg")
    version = server.store.head_object(bucket, "covers/x.svg")
    server.store.set_replication_status(bucket, "covers/x.svg", version.version_id, "COMPLETED")
    assert s3.get_object(Bucket=bucket, Key="covers/x.svg")["ReplicationStatus"] == "COMPLETED"
    make_bucket(s3, "dest-bucket", versioned=True)
    server.store.put_replica(replace(version, bucket="dest-bucket"), b"x")
    replica = s3.head_object(Bucket="dest-bucket", Key="covers/x.svg")
    assert (replica["ReplicationStatus"], replica["VersionId"]) == ("REPLICA", version.version_id)

    s3.delete_bucket_replication(Bucket=bucket)
    with pytest.raises(ClientError) as deleted:
        s3.get_bucket_replication(Bucket=bucket)
    assert code(deleted) == ("ReplicationConfigurationNotFoundError", 404)


def test_website_configuration(s3: Any) -> None:
    bucket = make_bucket(s3, "website")
    with pytest.raises(ClientError) as none_yet:
        s3.get_bucket_website(Bucket=bucket)
    assert code(none_yet) == ("NoSuchWebsiteConfiguration", 404)
    config = {
        "IndexDocument": {"Suffix": "index.html"},
        "ErrorDocument": {"Key": "error.html"},
        "RoutingRules": [
            {"Condition": {"KeyPrefixEquals": "old/"}, "Redirect": {"ReplaceKeyPrefixWith": "new/"}}
        ],
    }
    s3.put_bucket_website(Bucket=bucket, WebsiteConfiguration=config)
    got = s3.get_bucket_website(Bucket=bucket)
    assert {k: got[k] for k in config} == config
    with pytest.raises(ClientError) as bad:
        s3.put_bucket_website(
            Bucket=bucket, WebsiteConfiguration={"IndexDocument": {"Suffix": "a/index.html"}}
        )
    assert code(bad) == ("InvalidArgument", 400)
    s3.delete_bucket_website(Bucket=bucket)
    with pytest.raises(ClientError) as gone:
        s3.get_bucket_website(Bucket=bucket)
    assert code(gone) == ("NoSuchWebsiteConfiguration", 404)


def test_unserved_subresources_are_refused_not_misrouted(server: Server, s3: Any) -> None:
    bucket = make_bucket(s3, "subresources")
    for query in ("policyStatus", "torrent", "select"):
        response = signed_request("GET", f"{server.endpoint}/{bucket}?{query}")
        assert (response.status_code, error_code(response)) == (501, "NotImplemented"), query
        response = signed_request("DELETE", f"{server.endpoint}/{bucket}?{query}")
        assert response.status_code == 501
    assert server.store.get_bucket(bucket).name == bucket  # the DELETEs did not delete the bucket
