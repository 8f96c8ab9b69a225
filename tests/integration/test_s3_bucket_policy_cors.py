"""Bucket policies and CORS on a region's S3 API, driven by boto3, raw HTTP (unsigned) and the aws CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.support.aws_cli import aws
from tests.support.s3_server import REGION, S3Server, error_code, s3_server

BUCKET = "site"


@pytest.fixture
def s3(server: S3Server) -> Any:
    client = server.client()
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    client.put_object(Bucket=BUCKET, Key="index.html", Body=b"<h1>home</h1>", ContentType="text/html")
    client.put_object(Bucket=BUCKET, Key="private/secret.txt", Body=b"secret")
    return client


def public_read(resource: str = f"arn:aws:s3:::{BUCKET}/*", **extra: Any) -> dict[str, Any]:
    statement = {
        "Sid": "PublicRead",
        "Effect": "Allow",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": resource,
        **extra,
    }
    return {"Version": "2012-10-17", "Statement": [statement]}


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


# Bucket policy.


def test_a_policy_is_stored_returned_and_deleted(s3: Any) -> None:
    with pytest.raises(ClientError) as absent:
        s3.get_bucket_policy(Bucket=BUCKET)
    assert code(absent) == "NoSuchBucketPolicy"
    assert absent.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    policy = json.dumps(public_read())
    s3.put_bucket_policy(Bucket=BUCKET, Policy=policy)
    assert json.loads(s3.get_bucket_policy(Bucket=BUCKET)["Policy"]) == public_read()
    s3.delete_bucket_policy(Bucket=BUCKET)
    with pytest.raises(ClientError) as gone:
        s3.get_bucket_policy(Bucket=BUCKET)
    assert code(gone) == "NoSuchBucketPolicy"


@pytest.mark.parametrize(
    "policy",
    [
        "not json",
        "[]",
        json.dumps({"Version": "2012-10-17"}),
        json.dumps({"Version": "1999-01-01", "Statement": public_read()["Statement"]}),
        json.dumps(
            {
                "Statement": [
                    {
                        "Effect": "Maybe",
                        "Principal": "*",
                        "Action": "s3:GetObject",
                        "Resource": f"arn:aws:s3:::{BUCKET}/*",
                    }
                ]
            }
        ),
        json.dumps(
            {
                "Statement": [
                    {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/*"}
                ]
            }
        ),
        json.dumps(
            {
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": "s3:GetObject",
                        "Resource": "arn:aws:s3:::another-bucket/*",
                    }
                ]
            }
        ),
        json.dumps(
            {
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": "ec2:RunInstances",
                        "Resource": f"arn:aws:s3:::{BUCKET}/*",
                    }
                ]
            }
        ),
    ],
    ids=[
        "not-json",
        "not-object",
        "no-statement",
        "bad-version",
        "bad-effect",
        "no-principal",
        "other-bucket",
        "not-s3-action",
    ],
)
def test_a_malformed_policy_is_refused(s3: Any, policy: str) -> None:
    with pytest.raises(ClientError) as refused:
        s3.put_bucket_policy(Bucket=BUCKET, Policy=policy)
    assert code(refused) == "MalformedPolicy"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError):
        s3.get_bucket_policy(Bucket=BUCKET)


def test_anonymous_reads_are_refused_without_a_policy(server: S3Server, s3: Any) -> None:
    answer = httpx.get(f"{server.endpoint}/{BUCKET}/index.html")
    assert answer.status_code == 403
    assert error_code(answer) == "AccessDenied"


def test_a_public_read_policy_serves_anonymous_gets_and_heads_only(server: S3Server, s3: Any) -> None:
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(public_read()))
    answer = httpx.get(f"{server.endpoint}/{BUCKET}/index.html")
    assert answer.status_code == 200
    assert answer.content == b"<h1>home</h1>"
    assert httpx.head(f"{server.endpoint}/{BUCKET}/index.html").status_code == 200
    # Not GetObject: listing, sub-resources, writes and deletes stay refused.
    assert httpx.get(f"{server.endpoint}/{BUCKET}").status_code == 403
    assert httpx.get(f"{server.endpoint}/{BUCKET}/index.html?tagging").status_code == 403
    assert httpx.get(f"{server.endpoint}/{BUCKET}?policy").status_code == 403
    assert httpx.put(f"{server.endpoint}/{BUCKET}/new.txt", content=b"x").status_code == 403
    assert httpx.delete(f"{server.endpoint}/{BUCKET}/index.html").status_code == 403
    assert httpx.get(f"{server.endpoint}/").status_code == 403
    assert s3.get_object(Bucket=BUCKET, Key="index.html")["Body"].read() == b"<h1>home</h1>"


def test_a_missing_key_is_told_only_to_who_may_list_the_bucket(server: S3Server, s3: Any) -> None:
    # As S3: without s3:ListBucket, a missing key answers 403, so keys cannot be probed.
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(public_read()))
    missing = httpx.get(f"{server.endpoint}/{BUCKET}/nothing-here")
    assert (missing.status_code, error_code(missing)) == (403, "AccessDenied")
    policy = public_read()
    policy["Statement"].append(
        {"Effect": "Allow", "Principal": "*", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{BUCKET}"}
    )
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(policy))
    missing = httpx.get(f"{server.endpoint}/{BUCKET}/nothing-here")
    assert (missing.status_code, error_code(missing)) == (404, "NoSuchKey")
    # Listing itself stays refused: this store serves only GetObject unsigned (S3 would list here).
    assert httpx.get(f"{server.endpoint}/{BUCKET}").status_code == 403


def test_resource_wildcards_and_deny_statements_are_evaluated(server: S3Server, s3: Any) -> None:
    policy = public_read(resource=f"arn:aws:s3:::{BUCKET}/*.html")
    policy["Statement"].append(
        {
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": "s3:*",
            "Resource": [f"arn:aws:s3:::{BUCKET}/private/*"],
        }
    )
    policy["Statement"].append(
        {
            "Effect": "Allow",
            "Principal": {"AWS": ["*"]},
            "Action": ["s3:Get*"],
            "Resource": f"arn:aws:s3:::{BUCKET}/private/*",
        }
    )
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(policy))
    assert httpx.get(f"{server.endpoint}/{BUCKET}/index.html").status_code == 200
    s3.put_object(Bucket=BUCKET, Key="notes.txt", Body=b"txt")
    assert httpx.get(f"{server.endpoint}/{BUCKET}/notes.txt").status_code == 403
    assert httpx.get(f"{server.endpoint}/{BUCKET}/private/secret.txt").status_code == 403


def test_conditions_and_other_principals_grant_nothing_anonymous(server: S3Server, s3: Any) -> None:
    conditional = public_read(Condition={"IpAddress": {"aws:SourceIp": "127.0.0.1/32"}})
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(conditional))
    assert httpx.get(f"{server.endpoint}/{BUCKET}/index.html").status_code == 403
    named = public_read()
    named["Statement"][0]["Principal"] = {"AWS": "arn:aws:iam::123456789012:root"}
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(named))
    assert httpx.get(f"{server.endpoint}/{BUCKET}/index.html").status_code == 403


def test_versioned_reads_need_get_object_version(server: S3Server, s3: Any) -> None:
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    version = s3.put_object(Bucket=BUCKET, Key="index.html", Body=b"v2")["VersionId"]
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(public_read()))
    url = f"{server.endpoint}/{BUCKET}/index.html?versionId={version}"
    assert httpx.get(url).status_code == 403
    policy = public_read()
    policy["Statement"][0]["Action"] = ["s3:GetObject", "s3:GetObjectVersion"]
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(policy))
    assert httpx.get(url).content == b"v2"


def test_a_client_cannot_mark_its_own_request_as_forwarded_anonymous(server: S3Server, s3: Any) -> None:
    # The marker only regions' signed forwarding may carry: a client's is dropped, never trusted.
    answer = httpx.put(f"{server.endpoint}/{BUCKET}/x", content=b"x", headers={"x-bookstore-anonymous": "1"})
    assert answer.status_code == 403


# CORS.

CORS = {
    "CORSRules": [
        {
            "ID": "shop",
            "AllowedOrigins": ["https://shop.example"],
            "AllowedMethods": ["GET", "PUT"],
            "AllowedHeaders": ["x-amz-*", "content-type"],
            "ExposeHeaders": ["ETag", "x-amz-version-id"],
            "MaxAgeSeconds": 600,
        },
        {"AllowedOrigins": ["https://*.readers.example"], "AllowedMethods": ["GET", "HEAD"]},
        {"AllowedOrigins": ["*"], "AllowedMethods": ["HEAD"]},
    ]
}


def test_cors_is_stored_returned_and_deleted(s3: Any) -> None:
    with pytest.raises(ClientError) as absent:
        s3.get_bucket_cors(Bucket=BUCKET)
    assert code(absent) == "NoSuchCORSConfiguration"
    assert absent.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    s3.put_bucket_cors(Bucket=BUCKET, CORSConfiguration=CORS)
    assert s3.get_bucket_cors(Bucket=BUCKET)["CORSRules"] == CORS["CORSRules"]
    s3.delete_bucket_cors(Bucket=BUCKET)
    with pytest.raises(ClientError) as gone:
        s3.get_bucket_cors(Bucket=BUCKET)
    assert code(gone) == "NoSuchCORSConfiguration"


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ([{"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]}], "InvalidRequest"),
        ([{"AllowedOrigins": ["https://*.*.example"], "AllowedMethods": ["GET"]}], "InvalidRequest"),
        ([{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"], "AllowedHeaders": ["*-*"]}], "InvalidRequest"),
        ([{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}] * 101, "InvalidRequest"),
    ],
    ids=["method", "origin-wildcards", "header-wildcards", "too-many-rules"],
)
def test_a_cors_configuration_s3_would_refuse_is_refused(s3: Any, rules: list[Any], expected: str) -> None:
    with pytest.raises(ClientError) as refused:
        s3.put_bucket_cors(Bucket=BUCKET, CORSConfiguration={"CORSRules": rules})
    assert code(refused) == expected
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_a_cors_rule_without_origin_is_malformed(server: S3Server, s3: Any) -> None:
    body = (
        b'<CORSConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><CORSRule>'
        b"<AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>"
    )
    answer = server.signed("PUT", f"/{BUCKET}?cors", body)
    assert (answer.status_code, error_code(answer)) == (400, "MalformedXML")


def preflight(server: S3Server, path: str, origin: str | None, method: str | None, headers: str = "") -> Any:
    sent = {}
    if origin is not None:
        sent["Origin"] = origin
    if method is not None:
        sent["Access-Control-Request-Method"] = method
    if headers:
        sent["Access-Control-Request-Headers"] = headers
    return httpx.options(f"{server.endpoint}{path}", headers=sent)


def test_preflights_are_answered_by_the_rules(server: S3Server, s3: Any) -> None:
    assert preflight(server, f"/{BUCKET}/index.html", "https://shop.example", "PUT").status_code == 403
    s3.put_bucket_cors(Bucket=BUCKET, CORSConfiguration=CORS)
    ok = preflight(
        server, f"/{BUCKET}/index.html", "https://shop.example", "PUT", "X-Amz-Meta-A, Content-Type"
    )
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://shop.example"
    assert ok.headers["access-control-allow-methods"] == "GET, PUT"
    assert ok.headers["access-control-allow-headers"] == "x-amz-meta-a, content-type"
    assert ok.headers["access-control-max-age"] == "600"
    assert ok.headers["access-control-expose-headers"] == "ETag, x-amz-version-id"
    assert "Origin" in ok.headers["vary"]
    wildcard = preflight(server, f"/{BUCKET}", "https://a.readers.example", "HEAD")
    assert wildcard.status_code == 200
    assert wildcard.headers["access-control-allow-origin"] == "https://a.readers.example"
    anyone = preflight(server, f"/{BUCKET}/index.html", "https://elsewhere.example", "HEAD")
    assert anyone.headers["access-control-allow-origin"] == "*"
    for refused in (
        preflight(server, f"/{BUCKET}/index.html", "https://evil.example", "GET"),
        preflight(server, f"/{BUCKET}/index.html", "https://shop.example", "DELETE"),
        preflight(server, f"/{BUCKET}/index.html", "https://shop.example", "PUT", "authorization-x"),
    ):
        assert (refused.status_code, error_code(refused)) == (403, "AccessForbidden")
    assert preflight(server, f"/{BUCKET}/index.html", None, "GET").status_code == 400
    assert preflight(server, f"/{BUCKET}/index.html", "https://shop.example", None).status_code == 400
    assert preflight(server, "/no-such-bucket/x", "https://shop.example", "GET").status_code == 404


def test_matching_requests_carry_cors_headers(server: S3Server, s3: Any) -> None:
    url = f"{server.endpoint}/{BUCKET}/index.html"
    before = server.signed("GET", f"/{BUCKET}/index.html", headers={"Origin": "https://shop.example"})
    assert "access-control-allow-origin" not in before.headers
    s3.put_bucket_cors(Bucket=BUCKET, CORSConfiguration=CORS)
    signed = server.signed("GET", f"/{BUCKET}/index.html", headers={"Origin": "https://shop.example"})
    assert signed.status_code == 200
    assert signed.headers["access-control-allow-origin"] == "https://shop.example"
    assert signed.headers["access-control-expose-headers"] == "ETag, x-amz-version-id"
    assert "Origin" in signed.headers["vary"]
    other = server.signed("GET", f"/{BUCKET}/index.html", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    no_origin = server.signed("GET", f"/{BUCKET}/index.html")
    assert "access-control-allow-origin" not in no_origin.headers
    # With a public-read policy too, a browser on another origin may read the object unsigned.
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(public_read()))
    public = httpx.get(url, headers={"Origin": "https://a.readers.example"})
    assert public.status_code == 200
    assert public.headers["access-control-allow-origin"] == "https://a.readers.example"


def test_configurations_go_with_their_bucket(server: S3Server, s3: Any) -> None:
    s3.put_bucket_cors(Bucket=BUCKET, CORSConfiguration=CORS)
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(public_read()))
    for key in ("index.html", "private/secret.txt"):
        s3.delete_object(Bucket=BUCKET, Key=key)
    s3.delete_bucket(Bucket=BUCKET)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    with pytest.raises(ClientError) as cors:
        s3.get_bucket_cors(Bucket=BUCKET)
    assert code(cors) == "NoSuchCORSConfiguration"
    with pytest.raises(ClientError) as policy:
        s3.get_bucket_policy(Bucket=BUCKET)
    assert code(policy) == "NoSuchBucketPolicy"


def test_configurations_of_a_missing_bucket_answer_no_such_bucket(s3: Any) -> None:
    for call in (s3.get_bucket_policy, s3.get_bucket_cors, s3.get_bucket_lifecycle_configuration):
        with pytest.raises(ClientError) as missing:
            call(Bucket="no-such-bucket")
        assert code(missing) == "NoSuchBucket"


def test_configurations_survive_a_restart(tmp_path: Path) -> None:
    with s3_server(tmp_path / "objects") as first:
        client = first.client()
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        client.put_bucket_cors(Bucket=BUCKET, CORSConfiguration=CORS)
        client.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(public_read()))
    with s3_server(tmp_path / "objects") as second:
        client = second.client()
        assert client.get_bucket_cors(Bucket=BUCKET)["CORSRules"] == CORS["CORSRules"]
        assert json.loads(client.get_bucket_policy(Bucket=BUCKET)["Policy"]) == public_read()


# The aws CLI.


def test_the_aws_cli_puts_and_gets_policy_and_cors(server: S3Server, s3: Any, tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(public_read()))
    cors = tmp_path / "cors.json"
    cors.write_text(json.dumps(CORS))
    aws(server, tmp_path, "s3api", "put-bucket-policy", "--bucket", BUCKET, "--policy", f"file://{policy}")
    got = json.loads(aws(server, tmp_path, "s3api", "get-bucket-policy", "--bucket", BUCKET))
    assert json.loads(got["Policy"]) == public_read()
    assert httpx.get(f"{server.endpoint}/{BUCKET}/index.html").status_code == 200
    aws(
        server,
        tmp_path,
        "s3api",
        "put-bucket-cors",
        "--bucket",
        BUCKET,
        "--cors-configuration",
        f"file://{cors}",
    )
    assert json.loads(aws(server, tmp_path, "s3api", "get-bucket-cors", "--bucket", BUCKET)) == CORS
    aws(server, tmp_path, "s3api", "delete-bucket-cors", "--bucket", BUCKET)
    aws(server, tmp_path, "s3api", "delete-bucket-policy", "--bucket", BUCKET)
    assert httpx.get(f"{server.endpoint}/{BUCKET}/index.html").status_code == 403
