"""The plan: every stack (name, region, template), the order the deploy applies them in, where each
parameter comes from, and the rough monthly cost drivers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bookstore.cloud.cfn import Json
from bookstore.cloud.edge_stack import edge_template
from bookstore.cloud.global_stack import global_template
from bookstore.cloud.region_stack import region_template
from bookstore.cloud.settings import AURORA_INSTANCE_CLASS, CACHE_NODE_TYPE, CloudSettings


@dataclass(frozen=True)
class Stack:
    name: str
    region: str
    template: Json

    @property
    def file_name(self) -> str:
        return f"{self.name}.{self.region}.json"

    def resource_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for res in self.template["Resources"].values():
            counts[res["Type"]] = counts.get(res["Type"], 0) + 1
        return dict(sorted(counts.items()))


@dataclass(frozen=True)
class Step:
    """One step of the deploy: stacks applied together (their regions in parallel), and why here."""

    title: str
    stacks: tuple[str, ...]
    parameters: str


@dataclass(frozen=True)
class Cost:
    what: str
    monthly_usd: float | None
    basis: str


@dataclass(frozen=True)
class Plan:
    settings: CloudSettings
    stacks: tuple[Stack, ...]
    steps: tuple[Step, ...]
    costs: tuple[Cost, ...]

    def write(self, out: Path) -> list[Path]:
        """Each template as JSON in `out`, plus plan.json (steps and costs); returns the files."""
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for stack in self.stacks:
            path = out / stack.file_name
            path.write_text(json.dumps(stack.template, indent=2) + "\n", encoding="utf-8")
            written.append(path)
        path = out / "plan.json"
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        return [*written, path]

    def to_json(self) -> Json:
        return {
            "regions": list(self.settings.regions),
            "home": self.settings.home,
            "domain": self.settings.domain,
            "stacks": [
                {"name": s.name, "region": s.region, "file": s.file_name, "resources": s.resource_counts()}
                for s in self.stacks
            ],
            "steps": [
                {"title": s.title, "stacks": list(s.stacks), "parameters": s.parameters} for s in self.steps
            ],
            "monthlyCostDrivers": [
                {"what": c.what, "usd": c.monthly_usd, "basis": c.basis} for c in self.costs
            ],
            "roughFixedMonthlyUsd": round(sum(c.monthly_usd or 0 for c in self.costs), 2),
        }


# Rough on-demand prices (us-east-1 list prices of 2024; other regions cost up to ~25% more). The plan
# says they are rough: a user checks the AWS pricing calculator before deploying.
HOURS = 730
AURORA_PER_HOUR = 0.29
CACHE_NODE_PER_HOUR = 0.016
INTERFACE_ENDPOINT_PER_AZ_HOUR = 0.01
HEALTH_CHECK_MONTHLY = 0.75
HOSTED_ZONE_MONTHLY = 0.50


def costs(settings: CloudSettings) -> tuple[Cost, ...]:
    n = len(settings.regions)
    out = [
        Cost(
            f"ElastiCache {CACHE_NODE_TYPE}, 2 nodes x {n} regions",
            2 * n * CACHE_NODE_PER_HOUR * HOURS,
            "per node-hour",
        ),
        Cost(
            f"Route 53 HTTPS health checks x {n + (1 if settings.blog else 0)}",
            (n + settings.blog) * HEALTH_CHECK_MONTHLY,
            "per check-month",
        ),
        Cost("Route 53 hosted zone (yours already)", HOSTED_ZONE_MONTHLY, "per zone-month"),
        Cost(
            "DynamoDB global tables (on demand)",
            None,
            "per request: each write is paid once per region (replicated write units)",
        ),
        Cost(
            f"DynamoDB search index x {n} regions (on demand)",
            None,
            "per request: a book change writes a posting per prefix of its words and two counter updates "
            "per prefix it gains or loses; a search reads its rarest word's postings",
        ),
        Cost("Lambda and API Gateway HTTP APIs", None, "per request and GB-second; nothing when idle"),
        Cost("S3 replication and CloudFront", None, "per GB stored, replicated between regions and served"),
    ]
    if settings.blog:
        out.insert(
            0,
            Cost(
                f"Aurora MySQL {AURORA_INSTANCE_CLASS} x {n} regions (global database)",
                n * AURORA_PER_HOUR * HOURS,
                "per instance-hour, plus storage and replicated I/O",
            ),
        )
        out.insert(
            2,
            Cost(
                f"Secrets Manager interface endpoints, 2 AZs x {n} regions",
                2 * n * INTERFACE_ENDPOINT_PER_AZ_HOUR * HOURS,
                "per AZ-hour",
            ),
        )
    return tuple(out)


def make_plan(settings: CloudSettings) -> Plan:
    global_stack = Stack(settings.stack("global"), settings.home, global_template(settings))
    regional = tuple(
        Stack(settings.stack("region"), r, region_template(settings, r)) for r in settings.regions
    )
    edge = Stack(settings.stack("edge"), settings.home, edge_template(settings))
    regional_names = tuple(f"{s.name}@{s.region}" for s in regional)
    steps = (
        Step(
            "global tables and the blog's global database",
            (f"{global_stack.name}@{global_stack.region}",),
            "none; created before anything writes to the tables",
        ),
        Step(
            "each region's stack, buckets not yet replicated",
            regional_names,
            "ArtifactBucket/ArtifactKey: the Lambda package uploaded to a bucket in the region; "
            "OrdersStreamArn, BooksStreamArn: DescribeTable of the orders and books tables' replicas in the "
            "region; "
            "EnableReplication=false",
        ),
        Step(
            "the edge: health checks, records, CloudFront",
            (f"{edge.name}@{edge.region}",),
            "each region stack's outputs (ApiHost, ApiRegionalDomainName/HostedZoneId, "
            "SiteBucketDomainName, Blog...)",
        ),
        Step(
            "each region's stack again: replication rules and CloudFront's read access",
            regional_names,
            "EnableReplication=true (every destination bucket is versioned by now); "
            "DistributionArn: the edge's output",
        ),
    )
    return Plan(settings, (global_stack, *regional, edge), steps, costs(settings))
