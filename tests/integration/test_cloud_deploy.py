"""`bookstore aws deploy | status | destroy` (bookstore.cloud.deploy): against moto's server as far as moto
goes, and the wiring of the later steps with a recording CloudFormation.

Where moto (5.2.5) stops: its CloudFormation accepts AWS::DynamoDB::GlobalTable,
AWS::SecretsManager::Secret and AWS::RDS::GlobalCluster but creates nothing for them ("No Moto
CloudFormation support"), so the global stack is CREATE_COMPLETE with no table, and the deploy stops at
step 2, where it reads the orders table's stream in each region; moto also cannot parse the region and
edge stacks (outputs of ApiGatewayV2 domain names, CloudFront). The later steps' wiring (which outputs
feed which parameters, the second pass) is shown with the recording CloudFormation below.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import pytest
from moto.server import ThreadedMotoServer

from bookstore.cloud.deploy import Deployer
from bookstore.cloud.plan import Plan, make_plan
from bookstore.cloud.settings import CloudSettings
from bookstore.config import Topology
from bookstore.domain.errors import StorageError
from tests.support.aws import fake_credentials

REGIONS = ("eu-west-1", "ap-southeast-1")


def plan() -> Plan:
    topology = Topology(active=REGIONS, home_region=REGIONS[0])
    return make_plan(
        CloudSettings.from_topology(
            topology, domain="bookstore.example.com", hosted_zone_id="Z0123456789ABCDEFGHIJ"
        )
    )


@pytest.fixture
def moto_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    fake_credentials(tmp_path, monkeypatch)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_deploy_status_and_destroy_against_moto_as_far_as_it_goes(moto_url: str, tmp_path: Path) -> None:
    config = botocore.config.Config(account_id_endpoint_mode="disabled")

    def clients(service: str, region: str) -> Any:
        return boto3.client(service, region_name=region, endpoint_url=moto_url, config=config)

    package = tmp_path / "lambda.zip"
    package.write_bytes(b"the package")
    said: list[str] = []
    deployer = Deployer(plan(), clients, said.append)
    with pytest.raises(StorageError, match="bookstore-orders has no replica in eu-west-1"):
        deployer.deploy(package)
    # The package is in each region's artifacts bucket, the global stack applied, nothing after it.
    for region in REGIONS:
        listed = clients("s3", region).list_objects_v2(Bucket=f"bookstore-artifacts-123456789012-{region}")
        assert [o["Size"] for o in listed["Contents"]] == [len(b"the package")]
    assert [(s["stack"], s["region"], s["status"]) for s in deployer.status()] == [
        ("bookstore-global", "eu-west-1", "CREATE_COMPLETE"),
        ("bookstore-region", "eu-west-1", None),
        ("bookstore-region", "ap-southeast-1", None),
        ("bookstore-edge", "eu-west-1", None),
    ]
    assert any(line.startswith("1/4 bookstore-global") for line in said)
    kept = deployer.destroy()
    assert all(s["status"] is None for s in deployer.status())
    assert any("DynamoDB tables" in k for k in kept)


class RecordingCloud:
    """CloudFormation, DynamoDB, S3 and STS as far as the deploy calls them: stacks complete at once,
    each region stack's outputs made up from its region, every applied request kept in order."""

    def __init__(self) -> None:
        self.applied: list[tuple[str, str, str, dict[str, str]]] = []
        self.puts: list[tuple[str, str, str]] = []
        self.stacks: dict[tuple[str, str], str] = {}

    def client(self, service: str, region: str) -> Any:
        return _Client(self, service, region)


class _Client:
    def __init__(self, cloud: RecordingCloud, service: str, region: str) -> None:
        self.cloud, self.service, self.region = cloud, service, region

    def get_caller_identity(self) -> dict[str, str]:
        return {"Account": "111122223333"}

    def head_bucket(self, **_: Any) -> None:
        return None

    def put_object(self, **request: Any) -> None:
        self.cloud.puts.append((self.region, request["Bucket"], request["Key"]))

    def get_paginator(self, _: str) -> Any:
        class Empty:
            def paginate(self, **__: Any) -> list[dict[str, Any]]:
                return [{"Contents": []}]

        return Empty()

    def describe_table(self, TableName: str) -> dict[str, Any]:
        return {"Table": {"LatestStreamArn": f"arn:stream:{self.region}:{TableName}"}}

    def _apply(self, action: str, StackName: str, Parameters: list[dict[str, str]], **_: Any) -> None:
        params = {p["ParameterKey"]: p["ParameterValue"] for p in Parameters}
        self.cloud.applied.append((action, StackName, self.region, params))
        self.cloud.stacks[StackName, self.region] = "CREATE_COMPLETE"

    def create_stack(self, **request: Any) -> None:
        self._apply("create", **request)

    def update_stack(self, **request: Any) -> None:
        self._apply("update", **request)

    def get_waiter(self, _: str) -> Any:
        class Waiter:
            def wait(self, **__: Any) -> None:
                return None

        return Waiter()

    def describe_stacks(self, StackName: str) -> dict[str, Any]:
        status = self.cloud.stacks.get((StackName, self.region))
        if status is None:
            raise RuntimeError(f"Stack with id {StackName} does not exist")
        r = self.region
        outputs = {
            "ApiHost": f"api-{r}.execute-api",
            "ApiRegionalDomainName": f"d-api-{r}",
            "ApiRegionalHostedZoneId": f"Z-{r}",
            "SiteBucketDomainName": f"site-{r}.s3",
            "BlogHost": f"blog-{r}.execute-api",
            "BlogRegionalDomainName": f"d-blog-{r}",
            "BlogRegionalHostedZoneId": f"ZB-{r}",
            "DistributionArn": "arn:cloudfront:distribution/E1",
        }
        return {
            "Stacks": [
                {
                    "StackStatus": status,
                    "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()],
                }
            ]
        }


def test_each_step_gets_the_outputs_of_the_steps_before(tmp_path: Path) -> None:
    cloud = RecordingCloud()
    package = tmp_path / "lambda.zip"
    package.write_bytes(b"zip")
    Deployer(plan(), cloud.client).deploy(package)
    order = [(action, name, region) for action, name, region, _ in cloud.applied]
    assert order == [
        ("create", "bookstore-global", "eu-west-1"),
        ("create", "bookstore-region", "eu-west-1"),
        ("create", "bookstore-region", "ap-southeast-1"),
        ("create", "bookstore-edge", "eu-west-1"),
        ("update", "bookstore-region", "eu-west-1"),
        ("update", "bookstore-region", "ap-southeast-1"),
    ]
    first, edge, second = cloud.applied[2][3], cloud.applied[3][3], cloud.applied[5][3]
    assert first["OrdersStreamArn"] == "arn:stream:ap-southeast-1:bookstore-orders"
    assert first["EnableReplication"] == "false" and first["DistributionArn"] == ""
    assert first["ArtifactBucket"] == "bookstore-artifacts-111122223333-ap-southeast-1"
    assert edge["ApiDomainApSoutheast1"] == "d-api-ap-southeast-1" and edge["ApiZoneEuWest1"] == "Z-eu-west-1"
    assert (
        edge["SiteDomainApSoutheast1"] == "site-ap-southeast-1.s3"
        and edge["BlogHostEuWest1"] == "blog-eu-west-1.execute-api"
    )
    assert set(edge) == set(json.loads(json.dumps(plan().stacks[-1].template["Parameters"])))
    assert (
        second["EnableReplication"] == "true"
        and second["DistributionArn"] == "arn:cloudfront:distribution/E1"
    )
    # Last, the storefront into the home region's bucket (replication copies it to the others).
    site = [(region, bucket, key) for region, bucket, key in cloud.puts if "-site-" in bucket]
    assert {(region, bucket) for region, bucket, _ in site} == {
        ("eu-west-1", "bookstore-site-111122223333-eu-west-1")
    }
    assert {key for _, _, key in site} >= {"index.html", "app.css", "js/app.js"}


def test_publish_puts_the_storefront_into_the_deployed_home_bucket(moto_url: str) -> None:
    config = botocore.config.Config(account_id_endpoint_mode="disabled")

    def clients(service: str, region: str) -> Any:
        return boto3.client(service, region_name=region, endpoint_url=moto_url, config=config)

    s3 = clients("s3", "eu-west-1")
    bucket = "bookstore-site-123456789012-eu-west-1"  # the region stack made it (moto's account id)
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    said: list[str] = []
    first = Deployer(plan(), clients, said.append).publish()
    assert first["bucket"] == bucket and "index.html" in first["uploaded"] and first["unchanged"] == []
    head = s3.head_object(Bucket=bucket, Key="js/app.js")
    assert head["ContentType"].startswith("text/javascript") and head["CacheControl"] == "no-cache"
    assert any(line.startswith("publish the storefront to s3://" + bucket) for line in said)
    again = Deployer(plan(), clients).publish()
    assert again["uploaded"] == [] and sorted(again["unchanged"]) == sorted(first["uploaded"])
    # No bucket (the region stack not deployed): a clear error naming it.
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in first["uploaded"]]})
    s3.delete_bucket(Bucket=bucket)
    with pytest.raises(StorageError, match=f"publishing the storefront to {bucket}"):
        Deployer(plan(), clients).publish()
