"""Attacks on the S3 API with well-signed requests: unsigned headers on presigned URLs, hostile XML."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bookstore.objectstore.errors import NoSuchKey
from tests.support.s3_server import S3Server, error_code, s3_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[S3Server]:
    with s3_server(tmp_path / "objects") as running:
        yield running


@pytest.fixture
def s3(server: S3Server) -> Any:
    client = server.client()
    client.create_bucket(Bucket="shop", CreateBucketConfiguration={"LocationConstraint": "ap-southeast-1"})
    client.put_object(Bucket="shop", Key="private/secret.txt", Body=b"the secret")
    return client


def test_a_presigned_put_refuses_an_unsigned_copy_source(server: S3Server, s3: Any) -> None:
    url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": "shop", "Key": "public/upload.txt"}, ExpiresIn=60
    )
    attack = httpx.put(url, content=b"", headers={"x-amz-copy-source": "shop/private/secret.txt"})
    assert (attack.status_code, error_code(attack)) == (403, "AccessDenied")
    assert "headers present in the request which were not signed" in attack.text
    assert "x-amz-copy-source" in attack.text
    with pytest.raises(NoSuchKey):
        server.store.head_object("shop", "public/upload.txt")
    # Any other unsigned x-amz-* header changes the request too (here: metadata and tags).
    for header in ("x-amz-meta-owner", "x-amz-tagging", "x-amz-website-redirect-location"):
        refused = httpx.put(url, content=b"data", headers={header: "attacker"})
        assert (refused.status_code, error_code(refused)) == (403, "AccessDenied"), header
    with pytest.raises(NoSuchKey):
        server.store.head_object("shop", "public/upload.txt")
    # The URL as issued still works.
    assert httpx.put(url, content=b"uploaded").status_code == 200
    assert server.store.get_object("shop", "public/upload.txt").read() == b"uploaded"
