"""Issue 13 item 8: names and query values that would reach a response header raw get a 400, not a drop.

uvicorn refuses to send a header value holding a control character and drops the connection; before
these checks the store had already acted (a bucket named "evil\\n" was created).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.s3_server import S3Server, error_code


@pytest.fixture
def s3(server: S3Server) -> Any:
    client = server.client()
    client.create_bucket(Bucket="shop", CreateBucketConfiguration={"LocationConstraint": "ap-southeast-1"})
    client.put_object(Bucket="shop", Key="book.txt", Body=b"a book")
    return client


def test_bucket_names_with_control_characters_are_refused_and_not_created(server: S3Server) -> None:
    for path in ("/evil%0A", "/evil%0D%0ASet-Cookie:%20a=b", "/evil%00", "/evil%09", "/%0Aevil", "/evil%7F"):
        answer = server.signed("PUT", path)
        assert (answer.status_code, error_code(answer)) == (400, "InvalidBucketName"), (path, answer.text)
    assert [bucket.name for bucket in server.store.list_buckets()] == []
    assert server.signed("PUT", "/good-name").status_code == 200


def test_response_overrides_that_no_header_can_carry_are_refused(server: S3Server, s3: Any) -> None:
    for params in (
        {"ResponseContentType": "text/html\r\nSet-Cookie: session=attacker"},
        {"ResponseContentDisposition": "attachment\n"},
        {"ResponseCacheControl": "no-store\x00"},
        {"ResponseContentLanguage": "日本語"},
        {"ResponseContentEncoding": "gzip\x7f"},
    ):
        url = s3.generate_presigned_url("get_object", Params={"Bucket": "shop", "Key": "book.txt", **params})
        answer = httpx.get(url)
        assert (answer.status_code, error_code(answer)) == (400, "InvalidArgument"), (params, answer.text)
        assert "set-cookie" not in answer.headers
    # A header-signed request gets the same answer.
    answer = server.signed("GET", "/shop/book.txt?response-content-type=a%0Db")
    assert (answer.status_code, error_code(answer)) == (400, "InvalidArgument")
    # What a header can carry is served as asked.
    url = s3.generate_presigned_url(
        "get_object",
        Params={
            "Bucket": "shop",
            "Key": "book.txt",
            "ResponseContentDisposition": 'attachment; filename="b.txt"',
        },
    )
    answer = httpx.get(url)
    assert answer.status_code == 200
    assert answer.headers["content-disposition"] == 'attachment; filename="b.txt"'


def test_version_ids_that_would_be_echoed_raw_are_refused(server: S3Server, s3: Any) -> None:
    for method, path in (
        ("DELETE", "/shop/book.txt?versionId=v%0Ax"),
        ("PUT", "/shop/book.txt?tagging&versionId=%0D"),
        ("GET", "/shop/book.txt?versionId=%00"),
        ("PUT", "/shop/book.txt?partNumber=1&uploadId=%0A"),
    ):
        answer = server.signed(method, path, b"<Tagging><TagSet/></Tagging>" if "tagging" in path else b"")
        assert (answer.status_code, error_code(answer)) == (400, "InvalidArgument"), (path, answer.text)
    assert server.store.get_object("shop", "book.txt").read() == b"a book"
