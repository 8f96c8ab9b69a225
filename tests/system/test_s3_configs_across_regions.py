"""Bucket policy, CORS and lifecycle in real region processes: forwarded between regions, swept in the
background (a lifecycle day shortened to a second by the topology)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.support import waiting
from tests.support.regions import System, system_up

pytestmark = pytest.mark.system

EU, AP = "eu-west-1", "ap-southeast-1"
WAIT_S = 60.0


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with system_up(
        tmp_path_factory.mktemp("configs"), extra="\n[storage]\nlifecycle_day_seconds = 1.0\n"
    ) as running:
        yield running


def client(system: System, region: str = EU) -> Any:
    access = system.s3_access
    return boto3.client(
        "s3",
        endpoint_url=system.topology.region(region).s3_url,
        region_name=region,
        aws_access_key_id=access.access_key_id,
        aws_secret_access_key=access.secret_access_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )


def bucket_in(system: System, region: str) -> str:
    name = f"cfg-{uuid.uuid4().hex[:12]}"
    client(system, region).create_bucket(
        Bucket=name, CreateBucketConfiguration={"LocationConstraint": region}
    )
    return name


def test_an_anonymous_read_through_another_region_is_judged_by_the_owners_policy(system: System) -> None:
    bucket = bucket_in(system, AP)
    s3 = client(system, EU)  # every request below arrives in Ireland, the bucket lives in Singapore
    s3.put_object(Bucket=bucket, Key="index.html", Body=b"hello")
    url = f"{system.topology.region(EU).s3_url}/{bucket}/index.html"
    assert httpx.get(url).status_code == 403
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/*",
            }
        ],
    }
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    assert json.loads(client(system, AP).get_bucket_policy(Bucket=bucket)["Policy"]) == policy
    answer = httpx.get(url)
    assert (answer.status_code, answer.content) == (200, b"hello")
    assert httpx.put(url, content=b"x").status_code == 403
    assert httpx.get(f"{system.topology.region(EU).s3_url}/{bucket}").status_code == 403


def test_an_answer_relayed_from_another_region_carries_one_request_id(system: System) -> None:
    bucket = bucket_in(system, AP)
    s3 = client(system, EU)
    s3.put_object(Bucket=bucket, Key="k", Body=b"relayed")
    for url in (
        s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"}),
        s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "missing"}),
    ):
        answer = httpx.get(url)
        ids = answer.headers.get_list("x-amz-request-id")
        assert len(ids) == 1 and answer.headers.get_list("x-amz-id-2") == ids, answer.headers


def test_a_preflight_through_another_region_is_answered_by_the_owners_rules(system: System) -> None:
    bucket = bucket_in(system, AP)
    s3 = client(system, EU)
    s3.put_bucket_cors(
        Bucket=bucket,
        CORSConfiguration={
            "CORSRules": [{"AllowedOrigins": ["https://shop.example"], "AllowedMethods": ["PUT", "GET"]}]
        },
    )
    url = f"{system.topology.region(EU).s3_url}/{bucket}/upload.bin"
    ok = httpx.options(
        url, headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "PUT"}
    )
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://shop.example"
    refused = httpx.options(
        url, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "PUT"}
    )
    assert refused.status_code == 403
    s3.put_object(Bucket=bucket, Key="upload.bin", Body=b"x")
    read = s3.get_object(Bucket=bucket, Key="upload.bin")
    assert "access-control-allow-origin" not in read["ResponseMetadata"]["HTTPHeaders"]
    # An answer of the owner region, error or not, carries the bucket's CORS headers back through Ireland.
    browser = client(system, EU)

    def add_origin(request: Any, **_: Any) -> None:
        request.headers["Origin"] = "https://shop.example"

    browser.meta.events.register("before-sign.s3.GetObject", add_origin)
    found = browser.get_object(Bucket=bucket, Key="upload.bin")["ResponseMetadata"]["HTTPHeaders"]
    assert found["access-control-allow-origin"] == "https://shop.example"
    with pytest.raises(ClientError) as missing:
        browser.get_object(Bucket=bucket, Key="missing.bin")
    answer = missing.value.response
    assert answer["Error"]["Code"] == "NoSuchKey"
    assert answer["ResponseMetadata"]["HTTPHeaders"]["access-control-allow-origin"] == "https://shop.example"


def test_the_regions_sweeper_expires_objects_by_the_lifecycle_rules(system: System) -> None:
    bucket = bucket_in(system, EU)
    s3 = client(system, EU)
    s3.put_object(Bucket=bucket, Key="tmp/a", Body=b"a")
    s3.put_object(Bucket=bucket, Key="keep/b", Body=b"b")
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket,
        LifecycleConfiguration={
            "Rules": [
                {"ID": "tmp", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled", "Expiration": {"Days": 1}}
            ]
        },
    )

    def keys() -> list[str]:
        return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]

    waiting.wait_for(
        "the sweeper to expire tmp/a", keys, lambda found: found == ["keep/b"], WAIT_S, (ClientError,)
    )
