"""The AWS version's templates (bookstore.cloud): valid for cfn-lint, and wired as the workshop builds it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint

from bookstore import tables
from bookstore.cloud.edge_stack import FAILOVER_STATUS_CODES
from bookstore.cloud.plan import Plan, make_plan
from bookstore.cloud.settings import CloudSettings
from bookstore.config import Topology
from bookstore.domain.errors import ValidationError

ZONE = "Z0123456789ABCDEFGHIJ"
DOMAIN = "bookstore.example.com"


def plan_of(regions: tuple[str, ...], blog: bool = True) -> Plan:
    topology = Topology(active=regions, home_region=regions[0])
    return make_plan(CloudSettings.from_topology(topology, domain=DOMAIN, hosted_zone_id=ZONE, blog=blog))


TWO = ("eu-west-1", "ap-southeast-1")
THREE = ("eu-west-1", "ap-southeast-1", "us-east-1")


def resources_of(plan: Plan, name: str, region: str, kind: str) -> dict[str, Any]:
    stack = next(s for s in plan.stacks if s.name == f"bookstore-{name}" and s.region == region)
    return {k: v["Properties"] for k, v in stack.template["Resources"].items() if v["Type"] == kind}


@pytest.mark.parametrize("regions", [TWO, THREE], ids=["two-regions", "three-regions"])
@pytest.mark.parametrize("blog", [True, False], ids=["blog", "no-blog"])
def test_every_template_passes_cfn_lint_with_no_error_or_warning(
    regions: tuple[str, ...], blog: bool
) -> None:
    plan = plan_of(regions, blog)
    for stack in plan.stacks:
        matches = lint(json.dumps(stack.template), config=ManualArgs(regions=[stack.region]))
        assert [str(m) for m in matches] == [], stack.file_name


@pytest.mark.parametrize("regions", [TWO, THREE], ids=["two-regions", "three-regions"])
def test_every_table_is_one_global_table_with_a_replica_per_region_and_its_stream(
    regions: tuple[str, ...],
) -> None:
    plan = plan_of(regions)
    assert plan.stacks[0].name == "bookstore-global" and plan.stacks[0].region == regions[0]
    found = resources_of(plan, "global", regions[0], "AWS::DynamoDB::GlobalTable")
    assert sorted(t["TableName"] for t in found.values()) == sorted(f"bookstore-{s.name}" for s in tables.ALL)
    for table in found.values():
        assert [r["Region"] for r in table["Replicas"]] == list(regions)
        assert table["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    books = next(t for t in found.values() if t["TableName"] == "bookstore-books")
    assert books["GlobalSecondaryIndexes"][0]["IndexName"] == "category-index"


@pytest.mark.parametrize("regions", [TWO, THREE], ids=["two-regions", "three-regions"])
def test_each_bucket_replicates_to_every_other_region_with_delete_markers_through_a_narrow_role(
    regions: tuple[str, ...],
) -> None:
    plan = plan_of(regions)
    for region in regions:
        bucket = resources_of(plan, "region", region, "AWS::S3::Bucket")["SiteBucket"]
        assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
        condition, rules, no_value = bucket["ReplicationConfiguration"]["Fn::If"]
        assert condition == "Replicate" and no_value == {"Ref": "AWS::NoValue"}
        destinations = [r["Destination"]["Bucket"]["Fn::Sub"] for r in rules["Rules"]]
        others = [r for r in regions if r != region]
        assert destinations == [
            f"arn:${{AWS::Partition}}:s3:::bookstore-site-${{AWS::AccountId}}-{o}" for o in others
        ]
        assert all(r["DeleteMarkerReplication"] == {"Status": "Enabled"} for r in rules["Rules"])
        assert sorted(r["Priority"] for r in rules["Rules"]) == list(range(1, len(others) + 1))
        role = resources_of(plan, "region", region, "AWS::IAM::Role")["ReplicationRole"]
        statements = role["Policies"][0]["PolicyDocument"]["Statement"]
        replicate = next(s for s in statements if "s3:ReplicateObject" in s["Action"])
        assert [r["Fn::Sub"] for r in replicate["Resource"]] == [
            f"arn:${{AWS::Partition}}:s3:::bookstore-site-${{AWS::AccountId}}-{o}/*" for o in others
        ]
        assert all("*" not in action for s in statements for action in s["Action"])


def test_route53_checks_and_records_are_the_workshops() -> None:
    plan = plan_of(THREE)
    checks = resources_of(plan, "edge", "eu-west-1", "AWS::Route53::HealthCheck")
    api_checks = {k: v for k, v in checks.items() if k.startswith("ApiCheck")}
    assert len(api_checks) == 3
    for check in checks.values():
        config = check["HealthCheckConfig"]
        assert (
            config["Type"],
            config["ResourcePath"],
            config["RequestInterval"],
            config["FailureThreshold"],
        ) == (
            "HTTPS",
            "/books",
            10,
            3,
        )
    records = resources_of(plan, "edge", "eu-west-1", "AWS::Route53::RecordSet")
    latency = [r for r in records.values() if r["Name"] == f"api.{DOMAIN}"]
    assert sorted(r["Region"] for r in latency) == sorted(THREE)
    assert all(r["HealthCheckId"]["Ref"].startswith("ApiCheck") for r in latency)
    blog = {r["Failover"]: r for r in records.values() if r["Name"] == f"blog.{DOMAIN}"}
    assert set(blog) == {"PRIMARY", "SECONDARY"}
    assert blog["PRIMARY"]["AliasTarget"]["DNSName"] == {"Ref": "BlogDomainEuWest1"}
    assert blog["SECONDARY"]["AliasTarget"]["DNSName"] == {"Ref": "BlogDomainApSoutheast1"}
    assert "HealthCheckId" in blog["PRIMARY"] and "HealthCheckId" not in blog["SECONDARY"]


def test_cloudfront_fails_over_between_two_regions_buckets_and_sends_api_calls_to_the_api() -> None:
    plan = plan_of(TWO)
    config = resources_of(plan, "edge", "eu-west-1", "AWS::CloudFront::Distribution")["Distribution"][
        "DistributionConfig"
    ]
    group = config["OriginGroups"]["Items"][0]
    assert group["FailoverCriteria"]["StatusCodes"]["Items"] == list(FAILOVER_STATUS_CODES)
    assert [m["OriginId"] for m in group["Members"]["Items"]] == ["site-eu-west-1", "site-ap-southeast-1"]
    assert config["DefaultCacheBehavior"]["TargetOriginId"] == group["Id"]
    api = next(b for b in config["CacheBehaviors"] if b["PathPattern"] == "/api/*")
    assert api["TargetOriginId"] == "api" and "POST" in api["AllowedMethods"]


def test_the_blog_database_has_one_writable_primary_in_the_home_region() -> None:
    plan = plan_of(THREE)
    for region in THREE:
        cluster = resources_of(plan, "region", region, "AWS::RDS::DBCluster")["BlogCluster"]
        assert cluster["GlobalClusterIdentifier"] == "bookstore-blog"
        assert ("MasterUsername" in cluster) == (region == "eu-west-1")
    secret = resources_of(plan, "global", "eu-west-1", "AWS::SecretsManager::Secret")["BlogCredentials"]
    assert [r["Region"] for r in secret["ReplicaRegions"]] == ["ap-southeast-1", "us-east-1"]


def test_best_sellers_run_on_a_redis_cluster_fed_by_the_orders_stream() -> None:
    plan = plan_of(TWO)
    for region in TWO:
        redis = resources_of(plan, "region", region, "AWS::ElastiCache::ReplicationGroup")["BestSellers"]
        assert redis["CacheParameterGroupName"] == "default.redis7.cluster.on"
        mapping = resources_of(plan, "region", region, "AWS::Lambda::EventSourceMapping")[
            "OrdersToBestSellers"
        ]
        assert mapping["EventSourceArn"] == {"Ref": "OrdersStreamArn"}


@pytest.mark.parametrize("regions", [TWO, THREE], ids=["two-regions", "three-regions"])
def test_search_runs_on_a_regional_index_fed_by_the_books_stream_through_a_narrow_role(
    regions: tuple[str, ...],
) -> None:
    plan = plan_of(regions)
    index = {"Fn::GetAtt": ["SearchIndexTable", "Arn"]}
    writes = {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"}
    for region in regions:
        # Regional: each region's consumer feeds its own index from its replica of the books table.
        found = resources_of(plan, "region", region, "AWS::DynamoDB::Table")
        assert [t["TableName"] for t in found.values()] == [f"bookstore-search-{region}"]
        mapping = resources_of(plan, "region", region, "AWS::Lambda::EventSourceMapping")["BooksToSearch"]
        assert mapping["EventSourceArn"] == {"Ref": "BooksStreamArn"}
        assert mapping["FunctionName"] == {"Ref": "SearchFunction"}
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        functions = resources_of(plan, "region", region, "AWS::Lambda::Function")
        assert functions["SearchFunction"]["Handler"] == "bookstore.cloud.lambdas.search.handler"
        assert functions["SearchFunction"]["Role"] == {"Fn::GetAtt": ["SearchRole", "Arn"]}
        for function in ("ApiFunction", "SearchFunction"):
            variables = functions[function]["Environment"]["Variables"]
            assert variables["BOOKSTORE_SEARCH_TABLE"] == {"Ref": "SearchIndexTable"}
        roles = resources_of(plan, "region", region, "AWS::IAM::Role")
        search = roles["SearchRole"]["Policies"][0]["PolicyDocument"]["Statement"]
        api = roles["FunctionRole"]["Policies"][0]["PolicyDocument"]["Statement"]
        # The search function alone writes the index; it reads the books table and nothing else.
        assert writes <= set(next(s for s in search if s["Resource"] == index)["Action"])
        assert not writes & set(next(s for s in api if s["Resource"] == index)["Action"])
        others = [s["Resource"]["Fn::Sub"] for s in search if s["Resource"] != index]
        assert all(r.endswith(("table/bookstore-books", "table/bookstore-books/stream/*")) for r in others)
        assert all("*" not in action for s in search + api for action in s["Action"])


def test_the_deploy_order_creates_tables_first_and_replication_after_every_bucket() -> None:
    steps = plan_of(THREE).to_json()["steps"]
    assert [s["stacks"] for s in steps] == [
        ["bookstore-global@eu-west-1"],
        [f"bookstore-region@{r}" for r in THREE],
        ["bookstore-edge@eu-west-1"],
        [f"bookstore-region@{r}" for r in THREE],
    ]
    assert (
        "EnableReplication=false" in steps[1]["parameters"]
        and "EnableReplication=true" in steps[3]["parameters"]
    )


def test_the_plan_writes_each_template_and_its_costs(tmp_path: Any) -> None:
    plan = plan_of(TWO)
    files = plan.write(tmp_path)
    assert sorted(p.name for p in files) == sorted([*(s.file_name for s in plan.stacks), "plan.json"])
    summary = json.loads((tmp_path / "plan.json").read_text())
    assert summary["roughFixedMonthlyUsd"] > 0
    assert any("Aurora" in c["what"] for c in summary["monthlyCostDrivers"])


def test_settings_refuse_what_aws_cannot_build() -> None:
    with pytest.raises(ValidationError, match="two regions"):
        CloudSettings(("eu-west-1",), "eu-west-1", DOMAIN, ZONE)
    with pytest.raises(ValidationError, match="hosted-zone-id"):
        CloudSettings(TWO, "eu-west-1", DOMAIN, "not-a-zone")
    with pytest.raises(ValidationError, match="home region"):
        CloudSettings(TWO, "us-east-1", DOMAIN, ZONE)


def test_the_plan_command_writes_the_templates_and_prints_json(tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from bookstore.cli import app

    out = tmp_path / "plan"
    args = ["aws", "plan", "--domain", DOMAIN, "--hosted-zone-id", ZONE, "--out", str(out), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [s["name"] for s in summary["stacks"]] == [
        "bookstore-global",
        "bookstore-region",
        "bookstore-region",
        "bookstore-edge",
    ]
    assert all((out / s["file"]).exists() for s in summary["stacks"])
    refused = CliRunner().invoke(
        app, ["aws", "plan", "--domain", DOMAIN, "--hosted-zone-id", "nope", "--out", str(out)]
    )
    assert refused.exit_code == 1 and "hosted-zone-id" in refused.output
