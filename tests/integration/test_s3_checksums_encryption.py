"""Checksums (verified, stored, returned, multipart), GetObjectAttributes and encryption at rest, by boto3."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import stat
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from bookstore.objectstore import checksums
from tests.support.aws_cli import aws
from tests.support.s3_server import REGION, S3Server

BUCKET = "data"
MiB = 1024 * 1024


@pytest.fixture
def s3(server: S3Server) -> Any:
    client = server.client()
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    return client


def code(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response = exc.value.response
    return str(response["Error"]["Code"]), int(response["ResponseMetadata"]["HTTPStatusCode"])


def pattern(size: int) -> bytes:
    """Bytes that differ at every position (a range read off by one shows)."""
    block = bytes(range(256)) * 4096
    return (block * (size // len(block) + 1))[:size]


# Checksums.


@pytest.mark.parametrize("algorithm", checksums.ALGORITHMS)
def test_each_checksum_is_verified_stored_and_returned(s3: Any, algorithm: checksums.Algorithm) -> None:
    body = b"checksummed content " * 1000
    put = s3.put_object(Bucket=BUCKET, Key="k", Body=body, ChecksumAlgorithm=algorithm)
    expected = checksums.of(body, algorithm)
    assert put[f"Checksum{algorithm}"] == expected
    got = s3.get_object(Bucket=BUCKET, Key="k", ChecksumMode="ENABLED")
    assert got["Body"].read() == body
    assert got[f"Checksum{algorithm}"] == expected
    assert got["ChecksumType"] == "FULL_OBJECT"
    head = s3.head_object(Bucket=BUCKET, Key="k", ChecksumMode="ENABLED")
    assert head[f"Checksum{algorithm}"] == expected
    # Without ChecksumMode, no checksum is returned (as S3).
    assert f"Checksum{algorithm}" not in s3.head_object(Bucket=BUCKET, Key="k")


@pytest.mark.parametrize("algorithm", ["CRC32C", "CRC64NVME", "SHA1"])
def test_a_wrong_checksum_is_refused_and_nothing_is_written(s3: Any, algorithm: str) -> None:
    wrong = checksums.of(b"something else", algorithm)  # type: ignore[arg-type]
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=BUCKET, Key="k", Body=b"the content", **{f"Checksum{algorithm}": wrong})
    assert code(refused) == ("BadDigest", 400)
    with pytest.raises(ClientError) as absent:
        s3.head_object(Bucket=BUCKET, Key="k")
    assert code(absent)[1] == 404


def test_an_upload_that_names_no_checksum_gets_crc64nvme(server: S3Server, s3: Any) -> None:
    plain = server.client(request_checksum_calculation="when_required")
    body = pattern(100_000)
    plain.put_object(Bucket=BUCKET, Key="k", Body=body)
    head = s3.head_object(Bucket=BUCKET, Key="k", ChecksumMode="ENABLED")
    assert head["ChecksumCRC64NVME"] == checksums.of(body, "CRC64NVME")


def upload(s3: Any, key: str, parts: list[bytes], **create: Any) -> dict[str, Any]:
    algorithm = create.get("ChecksumAlgorithm")
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key, **create)["UploadId"]
    done = []
    for number, part in enumerate(parts, start=1):
        extra = {"ChecksumAlgorithm": algorithm} if algorithm else {}
        answer = s3.upload_part(
            Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=number, Body=part, **extra
        )
        entry = {"PartNumber": number, "ETag": answer["ETag"]}
        if algorithm:
            entry[f"Checksum{algorithm}"] = answer[f"Checksum{algorithm}"]
        done.append(entry)
    result: dict[str, Any] = s3.complete_multipart_upload(
        Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done}
    )
    return result


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "SHA1", "SHA256"])
def test_a_multipart_upload_has_a_composite_checksum(s3: Any, algorithm: checksums.Algorithm) -> None:
    parts = [pattern(5 * MiB), b"tail" * 1000]
    result = upload(s3, "big", parts, ChecksumAlgorithm=algorithm)
    inner = b"".join(base64.b64decode(checksums.of(p, algorithm)) for p in parts)
    expected = f"{checksums.of(inner, algorithm)}-2"
    assert result[f"Checksum{algorithm}"] == expected
    head = s3.head_object(Bucket=BUCKET, Key="big", ChecksumMode="ENABLED")
    assert head[f"Checksum{algorithm}"] == expected
    assert head["ChecksumType"] == "COMPOSITE"


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "CRC64NVME"])
def test_a_full_object_multipart_checksum_is_the_crc_of_the_whole(
    s3: Any, algorithm: checksums.Algorithm
) -> None:
    parts = [pattern(5 * MiB), b"tail" * 1000]
    upload(s3, "big", parts, ChecksumAlgorithm=algorithm, ChecksumType="FULL_OBJECT")
    head = s3.head_object(Bucket=BUCKET, Key="big", ChecksumMode="ENABLED")
    assert head[f"Checksum{algorithm}"] == checksums.of(b"".join(parts), algorithm)
    assert head["ChecksumType"] == "FULL_OBJECT"


def test_a_part_without_its_uploads_checksum_is_refused(server: S3Server, s3: Any) -> None:
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="k", ChecksumAlgorithm="SHA256")["UploadId"]
    plain = server.client(request_checksum_calculation="when_required")
    with pytest.raises(ClientError) as refused:
        plain.upload_part(Bucket=BUCKET, Key="k", UploadId=upload_id, PartNumber=1, Body=b"x")
    assert code(refused) == ("InvalidRequest", 400)


def test_sha1_does_not_take_the_full_object_type(s3: Any) -> None:
    with pytest.raises(ClientError) as refused:
        s3.create_multipart_upload(
            Bucket=BUCKET, Key="k", ChecksumAlgorithm="SHA1", ChecksumType="FULL_OBJECT"
        )
    assert code(refused) == ("InvalidRequest", 400)


def test_get_object_attributes(s3: Any) -> None:
    body = b"attributes" * 100
    s3.put_object(Bucket=BUCKET, Key="small", Body=body, ChecksumAlgorithm="SHA256")
    got = s3.get_object_attributes(
        Bucket=BUCKET, Key="small", ObjectAttributes=["ETag", "Checksum", "StorageClass", "ObjectSize"]
    )
    assert got["ETag"] == hashlib.md5(body).hexdigest()
    assert got["Checksum"]["ChecksumSHA256"] == checksums.of(body, "SHA256")
    assert got["StorageClass"] == "STANDARD"
    assert got["ObjectSize"] == len(body)
    pieces = [pattern(5 * MiB), pattern(5 * MiB)[::-1], b"end"]
    upload(s3, "big", pieces, ChecksumAlgorithm="CRC32")
    parts = s3.get_object_attributes(Bucket=BUCKET, Key="big", ObjectAttributes=["ObjectParts", "Checksum"])
    assert parts["ObjectParts"]["TotalPartsCount"] == 3
    assert parts["Checksum"]["ChecksumCRC32"].endswith("-3")
    listed = parts["ObjectParts"]["Parts"]
    assert [(p["PartNumber"], p["Size"], p["ChecksumCRC32"]) for p in listed] == [
        (n, len(piece), checksums.of(piece, "CRC32")) for n, piece in enumerate(pieces, start=1)
    ]
    paged = s3.get_object_attributes(
        Bucket=BUCKET, Key="big", ObjectAttributes=["ObjectParts"], MaxParts=1, PartNumberMarker=1
    )["ObjectParts"]
    assert [p["PartNumber"] for p in paged["Parts"]] == [2]
    assert paged["IsTruncated"] and paged["NextPartNumberMarker"] == 2
    with pytest.raises(ClientError) as bad:
        s3.get_object_attributes(Bucket=BUCKET, Key="small", ObjectAttributes=["Colour"])
    assert code(bad) == ("InvalidArgument", 400)


# Encryption at rest.


def test_objects_are_encrypted_at_rest_with_sse_s3(server: S3Server, s3: Any) -> None:
    marker = b"PLAINTEXT-MARKER-"
    small = marker * 100
    big = marker * (3 * MiB // len(marker))
    assert s3.put_object(Bucket=BUCKET, Key="small", Body=small)["ServerSideEncryption"] == "AES256"
    s3.put_object(Bucket=BUCKET, Key="big", Body=big)
    upload(s3, "parts", [big + b"x" * (5 * MiB - len(big)), marker])
    assert s3.head_object(Bucket=BUCKET, Key="big")["ServerSideEncryption"] == "AES256"
    assert s3.get_object(Bucket=BUCKET, Key="small")["Body"].read() == small
    assert s3.get_object(Bucket=BUCKET, Key="big")["Body"].read() == big
    # No file under the store (blobs, SQLite and its WAL) holds the plaintext.
    root = server.store.root
    for path in root.rglob("*"):
        if path.is_file():
            assert marker not in path.read_bytes(), path
    key = root / "keys" / "sse-000001.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(key.read_bytes()) == 32


@pytest.mark.parametrize(
    ("first", "last"), [(0, 0), (15, 16), (17, 1_048_600), (1_048_575, 3 * MiB - 1), (5 * MiB, 5 * MiB + 40)]
)
def test_range_gets_of_encrypted_objects(s3: Any, first: int, last: int) -> None:
    parts = [pattern(5 * MiB), pattern(MiB + 7)[::-1]]
    whole = b"".join(parts)
    upload(s3, "parts", parts)
    s3.put_object(Bucket=BUCKET, Key="one", Body=whole)
    for key in ("one", "parts"):
        got = s3.get_object(Bucket=BUCKET, Key=key, Range=f"bytes={first}-{last}")["Body"].read()
        assert got == whole[first : last + 1], key


def new_key() -> str:
    """A 32-byte SSE-C key as boto3 takes it: text, whose UTF-8 bytes are the key."""
    return secrets.token_hex(16)


def sse_c(key: str) -> dict[str, Any]:
    """boto3's SSE-C arguments (it base64-encodes the key and adds its MD5)."""
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}


def test_sse_c_needs_the_customers_key_to_read(server: S3Server, s3: Any) -> None:
    key, other = new_key(), new_key()
    body = pattern(2 * MiB + 3)
    put = s3.put_object(Bucket=BUCKET, Key="secret", Body=body, **sse_c(key))
    assert put["SSECustomerAlgorithm"] == "AES256"
    assert put["SSECustomerKeyMD5"] == base64.b64encode(hashlib.md5(key.encode()).digest()).decode()
    assert "ServerSideEncryption" not in put
    got = s3.get_object(Bucket=BUCKET, Key="secret", **sse_c(key))
    assert got["Body"].read() == body
    assert got["SSECustomerKeyMD5"] == put["SSECustomerKeyMD5"]
    ranged = s3.get_object(Bucket=BUCKET, Key="secret", Range="bytes=1000-1999", **sse_c(key))
    assert ranged["Body"].read() == body[1000:2000]
    assert s3.head_object(Bucket=BUCKET, Key="secret", **sse_c(key))["ContentLength"] == len(body)
    for call in (s3.get_object, s3.head_object):
        with pytest.raises(ClientError) as without:
            call(Bucket=BUCKET, Key="secret")
        assert code(without)[1] == 400
        with pytest.raises(ClientError) as wrong:
            call(Bucket=BUCKET, Key="secret", **sse_c(other))
        assert code(wrong)[1] == 403
    # A key given for an object not stored with one is refused.
    s3.put_object(Bucket=BUCKET, Key="plain", Body=b"plain")
    with pytest.raises(ClientError) as misplaced:
        s3.get_object(Bucket=BUCKET, Key="plain", **sse_c(key))
    assert code(misplaced) == ("InvalidRequest", 400)
    # Neither the key nor the plaintext is anywhere under the store.
    for path in server.store.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            raw = key.encode()
            assert raw not in data and base64.b64encode(raw) not in data and body[:4096] not in data, path


def test_sse_c_key_md5_must_match(s3: Any) -> None:
    key = new_key()
    wrong_md5 = base64.b64encode(hashlib.md5(b"another key").digest()).decode()
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=BUCKET, Key="k", Body=b"x", SSECustomerKeyMD5=wrong_md5, **sse_c(key))
    assert code(refused) == ("InvalidArgument", 400)


def test_sse_c_multipart_upload(s3: Any) -> None:
    key = new_key()
    parts = [pattern(5 * MiB), b"last part"]
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="k", **sse_c(key))["UploadId"]
    with pytest.raises(ClientError) as keyless:
        s3.upload_part(Bucket=BUCKET, Key="k", UploadId=upload_id, PartNumber=1, Body=parts[0])
    assert code(keyless)[1] == 400
    done = []
    for number, part in enumerate(parts, start=1):
        answer = s3.upload_part(
            Bucket=BUCKET, Key="k", UploadId=upload_id, PartNumber=number, Body=part, **sse_c(key)
        )
        done.append({"PartNumber": number, "ETag": answer["ETag"]})
    s3.complete_multipart_upload(Bucket=BUCKET, Key="k", UploadId=upload_id, MultipartUpload={"Parts": done})
    assert s3.get_object(Bucket=BUCKET, Key="k", **sse_c(key))["Body"].read() == b"".join(parts)
    with pytest.raises(ClientError):
        s3.get_object(Bucket=BUCKET, Key="k")


def test_copy_of_an_sse_c_object_needs_its_key(s3: Any) -> None:
    key = new_key()
    s3.put_object(Bucket=BUCKET, Key="src", Body=b"secret copy", **sse_c(key))
    with pytest.raises(ClientError) as keyless:
        s3.copy_object(Bucket=BUCKET, Key="dst", CopySource={"Bucket": BUCKET, "Key": "src"})
    assert code(keyless)[1] == 400
    s3.copy_object(
        Bucket=BUCKET,
        Key="dst",
        CopySource={"Bucket": BUCKET, "Key": "src"},
        CopySourceSSECustomerAlgorithm="AES256",
        CopySourceSSECustomerKey=key,
    )
    got = s3.get_object(Bucket=BUCKET, Key="dst")
    assert got["Body"].read() == b"secret copy"
    assert got["ServerSideEncryption"] == "AES256"


def test_sse_kms_is_refused_clearly(s3: Any) -> None:
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=BUCKET, Key="k", Body=b"x", ServerSideEncryption="aws:kms")
    assert code(refused) == ("NotImplemented", 501)
    assert "SSE-KMS" in refused.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as unknown:
        s3.put_object(Bucket=BUCKET, Key="k", Body=b"x", ServerSideEncryption="rot13")
    assert code(unknown) == ("InvalidArgument", 400)


def test_bucket_default_encryption(s3: Any) -> None:
    with pytest.raises(ClientError) as absent:
        s3.get_bucket_encryption(Bucket=BUCKET)
    assert code(absent) == ("ServerSideEncryptionConfigurationNotFoundError", 404)
    config = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}
    s3.put_bucket_encryption(Bucket=BUCKET, ServerSideEncryptionConfiguration=config)
    rules = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    kms = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]}
    with pytest.raises(ClientError) as refused:
        s3.put_bucket_encryption(Bucket=BUCKET, ServerSideEncryptionConfiguration=kms)
    assert code(refused) == ("NotImplemented", 501)
    s3.delete_bucket_encryption(Bucket=BUCKET)
    with pytest.raises(ClientError) as gone:
        s3.get_bucket_encryption(Bucket=BUCKET)
    assert code(gone)[1] == 404


@pytest.mark.parametrize("algorithm", ["CRC32C", "CRC64NVME", "SHA1"])
def test_a_checksum_in_an_aws_chunked_trailer_is_verified(
    server: S3Server, s3: Any, algorithm: checksums.Algorithm
) -> None:
    content = pattern(70_000)
    name = f"x-amz-checksum-{algorithm.lower()}"

    def send(value: str) -> Any:
        body = f"{len(content):x}\r\n".encode() + content + f"\r\n0\r\n{name}:{value}\r\n\r\n".encode()
        headers = {
            "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            "content-encoding": "aws-chunked",
            "x-amz-decoded-content-length": str(len(content)),
            "x-amz-trailer": name,
        }
        return server.signed("PUT", f"/{BUCKET}/trailed", body, headers)

    wrong = send(checksums.of(b"other", algorithm))
    assert (wrong.status_code, "BadDigest" in wrong.text) == (400, True)
    right = send(checksums.of(content, algorithm))
    assert right.status_code == 200, right.text
    head = s3.head_object(Bucket=BUCKET, Key="trailed", ChecksumMode="ENABLED")
    assert head[f"Checksum{algorithm}"] == checksums.of(content, algorithm)


def test_the_aws_cli_with_checksums_sse_c_and_bucket_encryption(
    server: S3Server, s3: Any, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    content = pattern(9 * MiB + 11)  # over the CLI's 8 MiB threshold: a multipart upload
    big.write_bytes(content)
    key = "c" * 32
    aws(server, tmp_path, "s3", "cp", str(big), f"s3://{BUCKET}/plain.bin")
    aws(
        server,
        tmp_path,
        "s3",
        "cp",
        str(big),
        f"s3://{BUCKET}/secret.bin",
        "--sse-c",
        "AES256",
        "--sse-c-key",
        key,
    )
    down = tmp_path / "down.bin"
    aws(
        server,
        tmp_path,
        "s3",
        "cp",
        f"s3://{BUCKET}/secret.bin",
        str(down),
        "--sse-c",
        "AES256",
        "--sse-c-key",
        key,
    )
    assert down.read_bytes() == content
    aws(server, tmp_path, "s3", "cp", f"s3://{BUCKET}/plain.bin", str(down))
    assert down.read_bytes() == content
    head = json.loads(
        aws(
            server,
            tmp_path,
            "s3api",
            "head-object",
            "--bucket",
            BUCKET,
            "--key",
            "plain.bin",
            "--checksum-mode",
            "ENABLED",
        )
    )
    assert head["ServerSideEncryption"] == "AES256"
    assert any(name.startswith("Checksum") and name != "ChecksumType" for name in head), head
    attributes = json.loads(
        aws(
            server,
            tmp_path,
            "s3api",
            "get-object-attributes",
            "--bucket",
            BUCKET,
            "--key",
            "plain.bin",
            "--object-attributes",
            "ObjectSize",
            "ObjectParts",
        )
    )
    assert attributes["ObjectSize"] == len(content) and attributes["ObjectParts"]["TotalPartsCount"] == 2
    config = '{"Rules":[{"ApplyServerSideEncryptionByDefault":{"SSEAlgorithm":"AES256"}}]}'
    aws(
        server,
        tmp_path,
        "s3api",
        "put-bucket-encryption",
        "--bucket",
        BUCKET,
        "--server-side-encryption-configuration",
        config,
    )
    got = json.loads(aws(server, tmp_path, "s3api", "get-bucket-encryption", "--bucket", BUCKET))
    assert got["ServerSideEncryptionConfiguration"]["Rules"][0]["ApplyServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "AES256"
    }


def test_a_copied_part_gets_its_uploads_checksum(s3: Any) -> None:
    source = pattern(5 * MiB)
    s3.put_object(Bucket=BUCKET, Key="source", Body=source)
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="k", ChecksumAlgorithm="SHA256")["UploadId"]
    copied = s3.upload_part_copy(
        Bucket=BUCKET,
        Key="k",
        UploadId=upload_id,
        PartNumber=1,
        CopySource={"Bucket": BUCKET, "Key": "source"},
    )
    sent = s3.upload_part(
        Bucket=BUCKET, Key="k", UploadId=upload_id, PartNumber=2, Body=b"end", ChecksumAlgorithm="SHA256"
    )
    parts = [
        {"PartNumber": 1, "ETag": copied["CopyPartResult"]["ETag"]},
        {"PartNumber": 2, "ETag": sent["ETag"], "ChecksumSHA256": sent["ChecksumSHA256"]},
    ]
    s3.complete_multipart_upload(Bucket=BUCKET, Key="k", UploadId=upload_id, MultipartUpload={"Parts": parts})
    inner = base64.b64decode(checksums.of(source, "SHA256")) + base64.b64decode(
        checksums.of(b"end", "SHA256")
    )
    head = s3.head_object(Bucket=BUCKET, Key="k", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == f"{checksums.of(inner, 'SHA256')}-2"


def test_a_part_checksum_that_differs_at_completion_is_refused(s3: Any) -> None:
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="k", ChecksumAlgorithm="CRC32")["UploadId"]
    sent = s3.upload_part(
        Bucket=BUCKET, Key="k", UploadId=upload_id, PartNumber=1, Body=b"only", ChecksumAlgorithm="CRC32"
    )
    wrong = [{"PartNumber": 1, "ETag": sent["ETag"], "ChecksumCRC32": checksums.of(b"other", "CRC32")}]
    with pytest.raises(ClientError) as refused:
        s3.complete_multipart_upload(
            Bucket=BUCKET, Key="k", UploadId=upload_id, MultipartUpload={"Parts": wrong}
        )
    assert code(refused) == ("InvalidPart", 400)
    right = [{"PartNumber": 1, "ETag": sent["ETag"], "ChecksumCRC32": sent["ChecksumCRC32"]}]
    s3.complete_multipart_upload(Bucket=BUCKET, Key="k", UploadId=upload_id, MultipartUpload={"Parts": right})


def test_list_parts_shows_each_parts_checksum(s3: Any) -> None:
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="k", ChecksumAlgorithm="CRC32C")["UploadId"]
    s3.upload_part(
        Bucket=BUCKET, Key="k", UploadId=upload_id, PartNumber=1, Body=b"one", ChecksumAlgorithm="CRC32C"
    )
    (part,) = s3.list_parts(Bucket=BUCKET, Key="k", UploadId=upload_id)["Parts"]
    assert part["ChecksumCRC32C"] == checksums.of(b"one", "CRC32C")


def test_copying_an_object_onto_itself_changes_its_encryption(s3: Any) -> None:
    key, other = new_key(), new_key()
    s3.put_object(Bucket=BUCKET, Key="k", Body=b"re-keyed", **sse_c(key))
    s3.copy_object(
        Bucket=BUCKET,
        Key="k",
        CopySource={"Bucket": BUCKET, "Key": "k"},
        CopySourceSSECustomerAlgorithm="AES256",
        CopySourceSSECustomerKey=key,
        **sse_c(other),
    )
    assert s3.get_object(Bucket=BUCKET, Key="k", **sse_c(other))["Body"].read() == b"re-keyed"
    with pytest.raises(ClientError) as old:
        s3.get_object(Bucket=BUCKET, Key="k", **sse_c(key))
    assert code(old)[1] == 403
    s3.copy_object(
        Bucket=BUCKET,
        Key="k",
        CopySource={"Bucket": BUCKET, "Key": "k"},
        CopySourceSSECustomerAlgorithm="AES256",
        CopySourceSSECustomerKey=other,
        ServerSideEncryption="AES256",
    )
    assert s3.get_object(Bucket=BUCKET, Key="k")["ServerSideEncryption"] == "AES256"


def test_two_checksums_on_one_body_are_refused(server: S3Server) -> None:
    body = b"twice"
    headers = {
        "x-amz-content-sha256": hashlib.sha256(body).hexdigest(),
        "x-amz-checksum-crc32": checksums.of(body, "CRC32"),
        "x-amz-checksum-sha1": checksums.of(body, "SHA1"),
    }
    server.client().create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    answer = server.signed("PUT", f"/{BUCKET}/k", body, headers)
    assert answer.status_code == 400 and "InvalidRequest" in answer.text


def test_sse_c_objects_by_part_number_and_under_conditional_writes(s3: Any) -> None:
    key = new_key()
    parts = [pattern(5 * MiB), b"the last part"]
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="k", **sse_c(key))["UploadId"]
    done = []
    for number, part in enumerate(parts, start=1):
        answer = s3.upload_part(
            Bucket=BUCKET, Key="k", UploadId=upload_id, PartNumber=number, Body=part, **sse_c(key)
        )
        done.append({"PartNumber": number, "ETag": answer["ETag"]})
    s3.complete_multipart_upload(Bucket=BUCKET, Key="k", UploadId=upload_id, MultipartUpload={"Parts": done})
    second = s3.get_object(Bucket=BUCKET, Key="k", PartNumber=2, **sse_c(key))
    assert second["Body"].read() == parts[1] and second["PartsCount"] == 2
    # A conditional write sees the SSE-C object (its ETag), without its key.
    with pytest.raises(ClientError) as exists:
        s3.put_object(Bucket=BUCKET, Key="k", Body=b"over", IfNoneMatch="*")
    assert code(exists) == ("PreconditionFailed", 412)
