"""On engines that replicate by themselves, status tells the truth (issue 17.3): a DynamoDB table not
global to an active region, or a bucket without replication rules to one, is a loud warning in the log,
in the region's /status and in `bookstore status`; a replicated one is not. Against moto (which has no
global table replicas, so the replicated case reads DynamoDB's answer through botocore's Stubber)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from starlette.testclient import TestClient

from bookstore import tables
from bookstore.cli import render
from bookstore.config import Storage, Topology
from bookstore.objectstore.namespace import site_bucket
from bookstore.region.compose import build_region, region_app
from bookstore.region.native import NativeBuckets, NativeReplication, NativeTables
from tests.support.aws import fake_credentials

IRELAND, SINGAPORE = "eu-west-1", "ap-southeast-1"


@pytest.fixture
def aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    fake_credentials(tmp_path, monkeypatch)
    with mock_aws():
        yield


def dynamodb(region: str = IRELAND) -> Any:
    config = botocore.config.Config(account_id_endpoint_mode="disabled")
    return boto3.session.Session(region_name=region).client("dynamodb", config=config)


def test_a_table_that_is_not_global_is_a_warning_naming_the_command_that_makes_it_global(
    aws: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    topology = Topology(storage=Storage(tables="dynamodb"))
    services = build_region(topology, IRELAND, tmp_path / "data")
    try:
        with caplog.at_level(logging.WARNING), TestClient(region_app(services, "s" * 32)) as client:
            report = client.get("/status").json()["native"]
    finally:
        services.close()
    assert len(report["warnings"]) == len(tables.ALL)
    books = next(w for w in report["warnings"] if "bookstore-books " in w)
    assert "not replicated to ap-southeast-1" in books
    assert "bookstore aws make-global books --regions eu-west-1,ap-southeast-1" in books
    assert all(t["missing"] == [SINGAPORE] for t in report["tables"])
    assert sum("event=not_replicated" in r.getMessage() for r in caplog.records) == len(tables.ALL)


def test_a_table_with_an_active_replica_in_every_active_region_is_no_warning(aws: None) -> None:
    client = dynamodb()
    stub = Stubber(client)
    for name in ("bookstore-books", "bookstore-orders"):
        stub.add_response(
            "describe_table",
            {
                "Table": {
                    "TableName": name,
                    "TableStatus": "ACTIVE",
                    "Replicas": [{"RegionName": SINGAPORE, "ReplicaStatus": "ACTIVE"}],
                }
            },
            {"TableName": name},
        )
    native = NativeReplication(
        IRELAND,
        [IRELAND, SINGAPORE],
        tables=NativeTables(client, {"books": "bookstore-books", "orders": "bookstore-orders"}),
    )
    with stub:
        report = native.check()
    assert report["warnings"] == []
    assert [[(r["region"], r["status"]) for r in t["replicas"]] for t in report["tables"]] == [
        [(IRELAND, "ACTIVE"), (SINGAPORE, "ACTIVE")]
    ] * 2


def test_a_replica_still_being_created_is_still_a_warning(aws: None) -> None:
    client = dynamodb()
    stub = Stubber(client)
    stub.add_response(
        "describe_table",
        {
            "Table": {
                "TableName": "bookstore-books",
                "TableStatus": "ACTIVE",
                "Replicas": [{"RegionName": SINGAPORE, "ReplicaStatus": "CREATING"}],
            }
        },
        {"TableName": "bookstore-books"},
    )
    native = NativeReplication(
        IRELAND, [IRELAND, SINGAPORE], tables=NativeTables(client, {"books": "bookstore-books"})
    )
    with stub:
        assert "not replicated to ap-southeast-1" in native.check()["warnings"][0]


def test_a_bucket_without_a_rule_to_every_active_region_is_a_warning_until_the_rules_are_there(
    aws: None,
) -> None:
    s3 = boto3.client("s3", region_name=IRELAND)
    for region in (IRELAND, SINGAPORE):
        bucket = site_bucket(region)
        regional = boto3.client("s3", region_name=region)
        regional.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
        regional.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    native = NativeReplication(IRELAND, [IRELAND, SINGAPORE], buckets=NativeBuckets(s3, site_bucket))
    warning = native.check()["warnings"]
    assert (
        len(warning) == 1
        and "bookstore-web-eu-west-1 has no enabled replication rule to ap-southeast-1" in warning[0]
    )
    s3.put_bucket_replication(
        Bucket=site_bucket(IRELAND),
        ReplicationConfiguration={
            "Role": "arn:aws:iam::123456789012:role/replication",
            "Rules": [
                {
                    "ID": "to-singapore",
                    "Priority": 1,
                    "Status": "Enabled",
                    "Filter": {"Prefix": ""},
                    "DeleteMarkerReplication": {"Status": "Enabled"},
                    "Destination": {"Bucket": f"arn:aws:s3:::{site_bucket(SINGAPORE)}"},
                }
            ],
        },
    )
    assert native.check()["warnings"] == []


def test_status_shows_each_warning_first(capsys: pytest.CaptureFixture[str]) -> None:
    report = {
        "regions": [],
        "replication": [],
        "links": None,
        "supervisor": True,
        "native": {
            IRELAND: {"tables": [{"table": "bookstore-books", "replicas": [], "missing": [SINGAPORE]}]}
        },
        "warnings": [f"{IRELAND}: table bookstore-books is not replicated to {SINGAPORE}"],
    }
    render.status(report)
    out = capsys.readouterr().out
    assert out.index("WARNING eu-west-1: table bookstore-books is not replicated") < out.index("Regions")
    assert "Native replication" in out
