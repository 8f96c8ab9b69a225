"""Issue 13 items 5 and 8: attacks on the S3 API: unsigned headers, hostile XML, signatures, metadata."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from bookstore.objectstore.errors import NoSuchKey
from tests.support.s3_server import S3Server, error_code


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


# -- issue 13 item 8: XML -------------------------------------------------------------------------------


def test_deeply_nested_xml_is_refused_as_malformed(server: S3Server, s3: Any) -> None:
    deep = b"<Delete>" + b"<a>" * 2000 + b"</a>" * 2000 + b"</Delete>"
    for path in ("/shop?delete", "/shop?versioning", "/shop?replication", "/shop?website", "/shop/k?tagging"):
        method = "POST" if path.endswith("delete") else "PUT"
        answer = server.signed(method, path, deep)
        assert (answer.status_code, error_code(answer)) == (400, "MalformedXML"), (path, answer.text)
    assert server.store.get_object("shop", "private/secret.txt").read() == b"the secret"


def test_a_utf16_document_cannot_declare_entities(server: S3Server, s3: Any) -> None:
    document = (
        '<?xml version="1.0" encoding="UTF-16"?>\n'
        '<!DOCTYPE Delete [<!ENTITY k "private/secret.txt">]>\n'
        "<Delete><Object><Key>&k;</Key></Object></Delete>"
    )
    for encoding in ("utf-16", "utf-16-le", "utf-16-be", "utf-8"):
        body = document.replace("UTF-16", encoding.upper()).encode(encoding)
        answer = server.signed("POST", "/shop?delete", body)
        assert (answer.status_code, error_code(answer)) == (400, "MalformedXML"), (encoding, answer.text)
        if encoding in ("utf-16", "utf-8"):  # expat refuses the BOM-less ones before it sees the DTD
            assert "DTD" in answer.text
    assert server.store.get_object("shop", "private/secret.txt").read() == b"the secret"
    # A plain UTF-16 document (no DTD) is still read.
    plain = '<?xml version="1.0" encoding="UTF-16"?><Delete><Object><Key>gone</Key></Object></Delete>'
    answer = server.signed("POST", "/shop?delete", plain.encode("utf-16"))
    assert answer.status_code == 200, answer.text


def test_elements_where_text_belongs_are_malformed_xml(server: S3Server, s3: Any) -> None:
    upload = s3.create_multipart_upload(Bucket="shop", Key="parts")["UploadId"]
    for method, path, body in (
        (
            "POST",
            "/shop?delete",
            b"<Delete><Object><Key>a</Key><VersionId><x/></VersionId></Object></Delete>",
        ),
        ("POST", "/shop?delete", b"<Delete><Object><Key><x/></Key></Object></Delete>"),
        ("POST", "/shop?delete", b"<Delete><Quiet><x/></Quiet><Object><Key>a</Key></Object></Delete>"),
        (
            "PUT",
            "/shop/private/secret.txt?tagging",
            b"<Tagging><TagSet><Tag><Key><x/></Key></Tag></TagSet></Tagging>",
        ),
        (
            "POST",
            f"/shop/parts?uploadId={upload}",
            b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag><x/></ETag></Part>"
            b"</CompleteMultipartUpload>",
        ),
    ):
        answer = server.signed(method, path, body)
        assert (answer.status_code, error_code(answer)) == (400, "MalformedXML"), (path, body, answer.text)
    assert server.store.get_object("shop", "private/secret.txt").read() == b"the secret"


# -- issue 13 item 8: signatures with characters that are not hex ---------------------------------------


def test_non_ascii_signatures_are_refused_with_403(server: S3Server, s3: Any) -> None:
    url = server.endpoint + "/shop/private/secret.txt"
    headers = server.signed_headers("GET", url)
    authorization = headers["Authorization"]
    forged = authorization.rpartition("Signature=")[0] + "Signature=" + "é" * 64
    # As bytes: an "é" cannot travel in a str header.
    raw = {name.encode(): value.encode() for name, value in headers.items()}
    answer = httpx.get(url, headers={**raw, b"Authorization": forged.encode("latin-1")})
    assert (answer.status_code, error_code(answer)) == (403, "SignatureDoesNotMatch"), answer.text

    presigned = s3.generate_presigned_url(
        "get_object", Params={"Bucket": "shop", "Key": "private/secret.txt"}, ExpiresIn=60
    )
    base, _, _ = presigned.partition("X-Amz-Signature=")
    for signature in ("%C3%A9" * 32, "%F0%9F%98%80", "%FF%FE", "%00" * 64):
        answer = httpx.get(base + "X-Amz-Signature=" + signature)
        assert (answer.status_code, error_code(answer)) == (403, "SignatureDoesNotMatch"), signature

    # A chunk signature of an aws-chunked body, in a request whose own signature is right.
    put_url = server.endpoint + "/shop/chunked.txt"
    signed = server.signed_headers(
        "PUT",
        put_url,
        {
            "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            "content-encoding": "aws-chunked",
            "x-amz-decoded-content-length": "1",
        },
    )
    body = "1;chunk-signature=é\r\nA\r\n0;chunk-signature=é\r\n\r\n".encode("latin-1")
    answer = httpx.put(put_url, content=body, headers=signed)
    assert (answer.status_code, error_code(answer)) == (403, "SignatureDoesNotMatch"), answer.text
    with pytest.raises(NoSuchKey):
        server.store.head_object("shop", "chunked.txt")


# -- issue 13 item 8: user metadata ---------------------------------------------------------------------


def test_user_metadata_is_limited_to_2_kb(server: S3Server, s3: Any) -> None:
    s3.put_object(Bucket="shop", Key="fits", Body=b"x", Metadata={"m": "v" * (2048 - 1)})
    assert server.store.head_object("shop", "fits").metadata == {"m": "v" * 2047}
    many = {f"h{i:04d}": "x" for i in range(1000)}
    for metadata in ({"m": "v" * 2048}, {"m": "v" * (1024 * 1024)}, many):
        url = server.endpoint + "/shop/too-much"
        headers = server.signed_headers("PUT", url, {f"x-amz-meta-{k}": v for k, v in metadata.items()})
        answer = httpx.put(url, content=b"x", headers=headers)
        assert (answer.status_code, error_code(answer)) == (400, "MetadataTooLarge"), answer.text[:200]
        with pytest.raises(NoSuchKey):
            server.store.head_object("shop", "too-much")
    # The same limit holds for multipart uploads and for copies that replace the metadata.
    big = {"m": "v" * 3000}
    with pytest.raises(ClientError) as refused:
        s3.create_multipart_upload(Bucket="shop", Key="too-much", Metadata=big)
    assert refused.value.response["Error"]["Code"] == "MetadataTooLarge"
    with pytest.raises(ClientError) as refused:
        s3.copy_object(
            Bucket="shop",
            Key="too-much",
            CopySource="shop/fits",
            Metadata=big,
            MetadataDirective="REPLACE",
        )
    assert refused.value.response["Error"]["Code"] == "MetadataTooLarge"
