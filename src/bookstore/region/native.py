"""What the engines that replicate by themselves say of their replication, and loud warnings when an
active region is left out: DynamoDB global tables (replicas per table, their status, the latency
CloudWatch reports), S3 replication rules between the regions' buckets, and the ranking's Redis.

Our replicator reports itself (/status "replication"); on a native engine it is off, and without this a
table that was never made global looks like a healthy, empty replication table (issue 17.3).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bookstore.domain.errors import StorageError

log = logging.getLogger(__name__)

ACTIVE = "ACTIVE"
# CloudWatch's window for the replication latency: the average of the last five minutes.
LATENCY_WINDOW_S = 300


@dataclass(frozen=True)
class NativeTables:
    """DynamoDB global tables: the Bookstore's tables (schema name -> DynamoDB name) in `client`'s region."""

    client: Any
    names: dict[str, str]
    # CloudWatch in the same region, for ReplicationLatency; None leaves the latency out.
    cloudwatch: Any | None = None


@dataclass(frozen=True)
class NativeBuckets:
    """S3: each active region's storefront bucket (`bucket_of(region)`), read through `client`."""

    client: Any
    bucket_of: Callable[[str], str]


@dataclass
class NativeReplication:
    """Checks the native engines of one region against the active regions; `report()` for /status."""

    region: str
    active: Sequence[str]
    tables: NativeTables | None = None
    buckets: NativeBuckets | None = None
    # The ranking's Redis URL when best sellers are on Redis (not replicated, and need not be).
    redis_url: str | None = None
    _last: dict[str, Any] = field(default_factory=dict)

    @property
    def others(self) -> list[str]:
        return [r for r in self.active if r != self.region]

    def check(self) -> dict[str, Any]:
        """Ask every engine now; logs each warning; the result is what `report()` answers until the next."""
        warnings: list[str] = []
        report: dict[str, Any] = {"regionId": self.region, "warnings": warnings}
        if self.tables is not None:
            report["tables"] = self._tables(self.tables, warnings)
        if self.buckets is not None:
            report["buckets"] = self._buckets(self.buckets, warnings)
        if self.redis_url is not None:
            report["ranking"] = {
                "engine": "redis",
                "replicated": False,
                "why": "each region's best sellers are built from its own replica of the orders table",
            }
        for warning in warnings:
            log.warning("region=%s event=not_replicated %s", self.region, warning)
        self._last = report
        return report

    def report(self) -> dict[str, Any]:
        return self._last

    def _tables(self, native: NativeTables, warnings: list[str]) -> list[dict[str, Any]]:
        # Imported here: boto3 is an extra, needed only on this backend.
        from bookstore.storage.dynamodb.global_tables import describe_global

        rows: list[dict[str, Any]] = []
        for schema_name, table in native.names.items():
            try:
                replicas = describe_global(native.client, table)
            except StorageError as exc:
                warnings.append(f"table {table} cannot be described: {exc}")
                rows.append({"table": table, "replicas": [], "error": str(exc)})
                continue
            ready = {r["region"] for r in replicas if r["status"] == ACTIVE}
            missing = [r for r in self.others if r not in ready]
            if missing:
                warnings.append(
                    f"table {table} is not replicated to {', '.join(missing)}: writes here do not reach "
                    f"there. Make it global: bookstore aws make-global {schema_name} "
                    f"--regions {','.join(self.active)}"
                )
            shown: list[dict[str, Any]] = [dict(r) for r in replicas]
            for replica in shown:
                if replica["region"] != self.region and native.cloudwatch is not None:
                    replica["latencyMs"] = _latency_ms(native.cloudwatch, table, replica["region"])
            rows.append({"table": table, "replicas": shown, "missing": missing})
        return rows

    def _buckets(self, native: NativeBuckets, warnings: list[str]) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        bucket = native.bucket_of(self.region)
        wanted = {native.bucket_of(r): r for r in self.others}
        try:
            config = native.client.get_bucket_replication(Bucket=bucket)["ReplicationConfiguration"]
            rules = [r for r in config.get("Rules", []) if r.get("Status") == "Enabled"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code not in ("ReplicationConfigurationNotFoundError", "NoSuchBucket"):
                warnings.append(f"bucket {bucket}: its replication cannot be read: {exc}")
                return {"bucket": bucket, "error": str(exc)}
            rules = []
        except BotoCoreError as exc:
            warnings.append(f"bucket {bucket}: its replication cannot be read: {exc}")
            return {"bucket": bucket, "error": str(exc)}
        reached = {
            str(r.get("Destination", {}).get("Bucket", "")).removeprefix("arn:aws:s3:::") for r in rules
        }
        missing = [region for name, region in wanted.items() if name not in reached]
        if missing:
            warnings.append(
                f"bucket {bucket} has no enabled replication rule to {', '.join(missing)}: objects written "
                "here stay here. Add the rules as module 2 of the workshop does (aws s3api "
                "put-bucket-replication)"
            )
        return {"bucket": bucket, "rules": len(rules), "missing": missing}


def _latency_ms(cloudwatch: Any, table: str, receiving: str) -> float | None:
    """DynamoDB's ReplicationLatency to `receiving` over the last minutes; None when it reports none."""
    from botocore.exceptions import BotoCoreError, ClientError

    now = dt.datetime.now(dt.UTC)
    try:
        answer = cloudwatch.get_metric_statistics(
            Namespace="AWS/DynamoDB",
            MetricName="ReplicationLatency",
            Dimensions=[
                {"Name": "TableName", "Value": table},
                {"Name": "ReceivingRegion", "Value": receiving},
            ],
            StartTime=now - dt.timedelta(seconds=LATENCY_WINDOW_S),
            EndTime=now,
            Period=LATENCY_WINDOW_S,
            Statistics=["Average"],
        )
    except (ClientError, BotoCoreError):
        return None
    points = answer.get("Datapoints", [])
    return float(points[-1]["Average"]) if points else None
