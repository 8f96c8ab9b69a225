"""A streamed body bound for real S3 (S3ObjectStore) goes to boto3 as a file, never joined whole."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import boto3
from moto import mock_aws

from bookstore.storage.s3 import S3ObjectStore

REGION = "eu-west-1"
PIECE = b"x" * (256 * 1024)
PIECES = 24  # 6 MiB: past the adapter's 1 MiB in memory, and a valid (non-last) multipart part


def _pieces() -> Iterator[bytes]:
    for i in range(PIECES):
        yield PIECE[:-1] + bytes([i])


def _expected() -> str:
    return hashlib.md5(b"".join(_pieces())).hexdigest()


def test_a_streamed_put_and_part_reach_boto3_as_files_and_read_back_whole() -> None:
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        handed: list[Any] = []

        def keep_body(params: dict[str, Any], **_: Any) -> None:
            handed.append(params["Body"])

        client.meta.events.register("before-parameter-build.s3.PutObject", keep_body)
        client.meta.events.register("before-parameter-build.s3.UploadPart", keep_body)
        store = S3ObjectStore(client)
        store.create_bucket("big")

        store.put_object("big", "whole.bin", _pieces())
        upload = store.create_upload("big", "parts.bin")
        part = store.upload_part("big", "parts.bin", upload, 1, _pieces())

        # Before: b"".join(body) handed boto3 one 6 MiB bytes object, held whole in the region's memory.
        assert len(handed) == 2
        assert not any(isinstance(body, bytes | bytearray) for body in handed), [type(b) for b in handed]
        assert part.size == len(PIECE) * PIECES
        got = client.get_object(Bucket="big", Key="whole.bin")["Body"].read()
        assert hashlib.md5(got).hexdigest() == _expected()
