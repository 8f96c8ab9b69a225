"""`bookstore aws deploy | status | destroy`: the plan's stacks applied in its order, with progress and
waits, their outputs handed to the stacks that need them; the AWS version of modules 1 to 4.

boto3 does the talking; this module holds only the order (plan.Step) and the wiring of parameters.
Credentials come from the usual places (profiles, environment); nothing is written to disk.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bookstore.cloud.cfn import logical_id
from bookstore.cloud.plan import Plan, Stack
from bookstore.domain.errors import StorageError
from bookstore.objectstore.setup import upload_site

Clients = Callable[[str, str], Any]
Progress = Callable[[str], None]
NO_UPDATES = "No updates are to be performed"
# CloudFormation's waiters poll every 5 s by default; a global table or an Aurora cluster takes minutes.
WAIT = {"Delay": 10, "MaxAttempts": 360}


@dataclass(frozen=True)
class Artifact:
    """The Lambda package in a region's artifacts bucket."""

    bucket: str
    key: str


class Deployer:
    """Applies `plan` through `clients(service, region)` (boto3 clients), telling `progress` each step."""

    def __init__(self, plan: Plan, clients: Clients, progress: Progress = lambda _: None) -> None:
        self.plan = plan
        self.settings = plan.settings
        self.clients = clients
        self.progress = progress

    # -- deploy -----------------------------------------------------------------------------------------

    def deploy(self, package: Path) -> dict[str, Any]:
        """Every step of the plan in order; returns each stack's outputs. Raises StorageError with the
        stack and CloudFormation's reason when one fails."""
        glob = self.plan.stacks[0]
        regional = [s for s in self.plan.stacks if s.name == self.settings.stack("region")]
        edge = self.plan.stacks[-1]
        assert glob.name == self.settings.stack("global") and edge.name == self.settings.stack("edge")
        artifacts = {r: self.upload(package, r) for r in self.settings.regions}
        self.progress(f"1/4 {glob.name} in {glob.region}: tables and the blog's global database")
        self.apply(glob, {})
        outputs: dict[str, dict[str, str]] = {}
        region_params: dict[str, dict[str, str]] = {}
        self.progress("2/4 each region's stack (buckets not yet replicated)")
        for stack in regional:
            region_params[stack.region] = {
                "ArtifactBucket": artifacts[stack.region].bucket,
                "ArtifactKey": artifacts[stack.region].key,
                "OrdersStreamArn": self.stream_arn(stack.region, "orders"),
                "BooksStreamArn": self.stream_arn(stack.region, "books"),
                "EnableReplication": "false",
                "DistributionArn": "",
            }
            outputs[stack.region] = self.apply(stack, region_params[stack.region])
        self.progress(f"3/4 {edge.name}: health checks, records, CloudFront")
        edge_outputs = self.apply(edge, self.edge_parameters(edge, outputs))
        self.progress("4/4 each region's stack again: replication rules and CloudFront's read access")
        for stack in regional:
            params = {**region_params[stack.region], "EnableReplication": "true"}
            params["DistributionArn"] = edge_outputs["DistributionArn"]
            outputs[stack.region] = self.apply(stack, params)
        published = self.publish()
        return {"regions": outputs, "edge": edge_outputs, "published": published}

    def publish(self, source: Path | None = None) -> dict[str, Any]:
        """The storefront's files into the home region's bucket (replication copies them to the others),
        the same step as `bookstore publish` on one machine; unchanged files are skipped."""
        home = self.settings.home
        account = self.clients("sts", home).get_caller_identity()["Account"]
        bucket = self.settings.site_bucket(home).replace("${AWS::AccountId}", account)
        self.progress(f"publish the storefront to s3://{bucket} ({home}; replicated to the other regions)")
        try:
            report = upload_site(self.clients("s3", home), bucket, source)
        except Exception as exc:  # botocore's errors name the bucket and the refusal
            raise StorageError(f"publishing the storefront to {bucket}: {exc}") from exc
        self.progress(f"  {len(report.uploaded)} uploaded, {len(report.unchanged)} unchanged")
        return {"bucket": bucket, "uploaded": report.uploaded, "unchanged": report.unchanged}

    def upload(self, package: Path, region: str) -> Artifact:
        """The package into the region's artifacts bucket (made when absent), keyed by its content."""
        account = self.clients("sts", region).get_caller_identity()["Account"]
        bucket = f"{self.settings.stack_prefix}-artifacts-{account}-{region}"
        s3 = self.clients("s3", region)
        try:
            s3.head_bucket(Bucket=bucket)
        except Exception:  # any answer but 200 means: make it (a refusal surfaces there)
            config = (
                {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
            )
            s3.create_bucket(Bucket=bucket, **config)
        data = package.read_bytes()
        key = f"lambda/{hashlib.sha256(data).hexdigest()[:20]}.zip"
        self.progress(f"upload {package.name} ({len(data) / 1e6:.1f} MB) to s3://{bucket}/{key}")
        s3.put_object(Bucket=bucket, Key=key, Body=data)
        return Artifact(bucket, key)

    def stream_arn(self, region: str, table: str) -> str:
        """The stream of the table's replica in `region` (each replica has its own)."""
        name = self.settings.table_prefix + table
        try:
            table_info = self.clients("dynamodb", region).describe_table(TableName=name)["Table"]
        except Exception as exc:
            raise StorageError(
                f"the table {name} has no replica in {region} ({exc}): the global stack made no global table"
            ) from exc
        arn = table_info.get("LatestStreamArn")
        if not arn:
            raise StorageError(f"the table {name} in {region} has no stream: is the global stack deployed?")
        return str(arn)

    def edge_parameters(self, edge: Stack, outputs: dict[str, dict[str, str]]) -> dict[str, str]:
        """The edge's parameters from the regions' outputs, by name: <What><Region> <- region's output."""
        sources = {
            "ApiHost": "ApiHost",
            "ApiDomain": "ApiRegionalDomainName",
            "ApiZone": "ApiRegionalHostedZoneId",
            "SiteDomain": "SiteBucketDomainName",
            "BlogHost": "BlogHost",
            "BlogDomain": "BlogRegionalDomainName",
            "BlogZone": "BlogRegionalHostedZoneId",
        }
        params: dict[str, str] = {}
        for name in edge.template.get("Parameters", {}):
            for prefix, output in sources.items():
                for region in self.settings.regions:
                    if name == f"{prefix}{logical_id(region)}":
                        params[name] = outputs[region][output]
        return params

    def apply(self, stack: Stack, parameters: dict[str, str]) -> dict[str, str]:
        """Create the stack, or update it; wait until it is done; its outputs."""
        cfn = self.clients("cloudformation", stack.region)
        request = {
            "StackName": stack.name,
            "TemplateBody": json.dumps(stack.template),
            "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
            "Capabilities": ["CAPABILITY_IAM"],
        }
        exists = self._status(cfn, stack.name) not in (None, "DELETE_COMPLETE")
        try:
            if exists:
                cfn.update_stack(**request)
                waiter = "stack_update_complete"
            else:
                cfn.create_stack(**request)
                waiter = "stack_create_complete"
            cfn.get_waiter(waiter).wait(StackName=stack.name, WaiterConfig=WAIT)
        except Exception as exc:
            if NO_UPDATES in str(exc):
                self.progress(f"  {stack.name} in {stack.region}: unchanged")
            else:
                raise StorageError(
                    f"{stack.name} in {stack.region}: {self._reason(cfn, stack.name, exc)}"
                ) from exc
        self.progress(f"  {stack.name} in {stack.region}: {self._status(cfn, stack.name)}")
        return self.outputs(stack)

    def outputs(self, stack: Stack) -> dict[str, str]:
        cfn = self.clients("cloudformation", stack.region)
        found = cfn.describe_stacks(StackName=stack.name)["Stacks"][0]
        return {o["OutputKey"]: o["OutputValue"] for o in found.get("Outputs", [])}

    # -- status and destroy -----------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """Each stack's status (absent: None) and outputs, in the plan's order."""
        rows = []
        for stack in self.plan.stacks:
            cfn = self.clients("cloudformation", stack.region)
            status = self._status(cfn, stack.name)
            outputs = self.outputs(stack) if status not in (None, "DELETE_COMPLETE") else {}
            rows.append({"stack": stack.name, "region": stack.region, "status": status, "outputs": outputs})
        return rows

    def destroy(self) -> list[str]:
        """Delete the stacks, the edge first and the tables last; returns what CloudFormation keeps
        (tables and buckets are retained: their data outlives the stacks)."""
        for stack in reversed(self.plan.stacks):
            cfn = self.clients("cloudformation", stack.region)
            if self._status(cfn, stack.name) in (None, "DELETE_COMPLETE"):
                continue
            self.progress(f"delete {stack.name} in {stack.region}")
            cfn.delete_stack(StackName=stack.name)
            try:
                cfn.get_waiter("stack_delete_complete").wait(StackName=stack.name, WaiterConfig=WAIT)
            except Exception as exc:
                raise StorageError(
                    f"{stack.name} in {stack.region}: {self._reason(cfn, stack.name, exc)}"
                ) from exc
        return [
            "DynamoDB tables (DeletionPolicy Retain): delete them with aws dynamodb delete-table",
            "the storefront buckets and the artifacts buckets (Retain): empty and delete them",
        ]

    @staticmethod
    def _status(cfn: Any, name: str) -> str | None:
        try:
            return str(cfn.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"])
        except Exception as exc:
            if "does not exist" in str(exc):
                return None
            raise

    @staticmethod
    def _reason(cfn: Any, name: str, exc: Exception) -> str:
        """CloudFormation's first failure reason of the stack, else the error itself."""
        try:
            events = cfn.describe_stack_events(StackName=name)["StackEvents"]
        except Exception:
            return str(exc)
        failed = [e for e in events if str(e.get("ResourceStatus", "")).endswith("FAILED")]
        if failed:
            last = failed[-1]
            why = last.get("ResourceStatusReason", "")
            return f"{last['LogicalResourceId']} ({last['ResourceType']}): {why}"
        return str(exc)
