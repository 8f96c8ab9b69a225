"""`bookstore aws plan | deploy | status | destroy`: the AWS version of the topology as CloudFormation
stacks, written, applied in order, shown and removed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from bookstore.cli import render
from bookstore.cli.exits import fail
from bookstore.cli.options import AsJson, TopologyFile, load_topology
from bookstore.domain.errors import BookstoreError

Domain = Annotated[
    str,
    typer.Option("--domain", help="A domain whose zone is in Route 53: api.<domain> and blog.<domain>."),
]
ZoneId = Annotated[str, typer.Option("--hosted-zone-id", help="The Route 53 zone id of --domain (Z...).")]
Blog = Annotated[bool, typer.Option("--blog/--no-blog", help="Include the blog (Aurora global database).")]


def _plan(domain: str, hosted_zone_id: str, blog: bool, topology: Path | None) -> Any:
    from bookstore.cloud.plan import make_plan
    from bookstore.cloud.settings import CloudSettings

    topo = load_topology(topology)
    try:
        settings = CloudSettings.from_topology(topo, domain=domain, hosted_zone_id=hosted_zone_id, blog=blog)
    except BookstoreError as exc:
        fail(exc.message)
    return make_plan(settings)


def _deployer(domain: str, hosted_zone_id: str, blog: bool, topology: Path | None) -> Any:
    """A Deployer over boto3 clients from the usual places (profile, environment): nothing on disk."""
    import boto3

    from bookstore.cloud.deploy import Deployer

    session = boto3.session.Session()

    def clients(service: str, region: str) -> Any:
        return session.client(service, region_name=region)

    return Deployer(
        _plan(domain, hosted_zone_id, blog, topology), clients, lambda line: typer.echo(line, err=True)
    )


def deploy(
    domain: Domain,
    hosted_zone_id: ZoneId,
    package: Annotated[
        Path, typer.Option("--package", help="The Lambda package (`make lambda` builds build/lambda.zip).")
    ] = Path("build/lambda.zip"),
    blog: Blog = True,
    as_json: AsJson = False,
    topology: TopologyFile = None,
) -> None:
    """Apply the plan's stacks in order (progress on stderr); prints each stack's outputs."""
    if not package.is_file():
        fail(f"no Lambda package at {package}: build it with `make lambda`", 2)
    try:
        outputs = _deployer(domain, hosted_zone_id, blog, topology).deploy(package)
    except BookstoreError as exc:
        fail(exc.message)
    typer.echo(json.dumps(outputs, indent=2) if as_json else _lines(outputs))


def status(
    domain: Domain,
    hosted_zone_id: ZoneId,
    blog: Blog = True,
    as_json: AsJson = False,
    topology: TopologyFile = None,
) -> None:
    """Each stack of the plan: its status on AWS (absent: none) and outputs."""
    rows = _deployer(domain, hosted_zone_id, blog, topology).status()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        typer.echo(f"{row['stack']}  {row['region']}  {row['status'] or 'absent'}")


def destroy(domain: Domain, hosted_zone_id: ZoneId, blog: Blog = True, topology: TopologyFile = None) -> None:
    """Delete the plan's stacks, the edge first; says what AWS keeps (tables and buckets are retained)."""
    try:
        kept = _deployer(domain, hosted_zone_id, blog, topology).destroy()
    except BookstoreError as exc:
        fail(exc.message)
    typer.echo("deleted every stack; kept: " + "; ".join(kept))


def publish(
    domain: Domain,
    hosted_zone_id: ZoneId,
    source: Annotated[
        Path | None,
        typer.Option(
            "--source", exists=True, file_okay=False, help="A directory of storefront files to upload too."
        ),
    ] = None,
    blog: Blog = True,
    as_json: AsJson = False,
    topology: TopologyFile = None,
) -> None:
    """Upload the storefront's files to the deployed home bucket (deploy does it too; replication copies
    them to the other regions)."""
    try:
        report = _deployer(domain, hosted_zone_id, blog, topology).publish(source)
    except BookstoreError as exc:
        fail(exc.message)
    text = f"published to s3://{report['bucket']}: {len(report['uploaded'])} uploaded, "
    typer.echo(json.dumps(report, indent=2) if as_json else text + f"{len(report['unchanged'])} unchanged")


def promote_blog(
    region: Annotated[str, typer.Argument(help="The region whose blog cluster becomes the primary.")],
    domain: Domain,
    hosted_zone_id: ZoneId,
    as_json: AsJson = False,
    topology: TopologyFile = None,
) -> None:
    """Module 4's promotion: detach the region's Aurora cluster from the global database so it takes
    the blog's writes (minutes; progress on stderr). One way, as in the workshop."""
    import boto3

    from bookstore.cloud.blog_failover import promote_blog as promote

    settings = _plan(domain, hosted_zone_id, True, topology).settings
    session = boto3.session.Session()
    try:
        done = promote(
            settings,
            lambda service, r: session.client(service, region_name=r),
            region,
            lambda line: typer.echo(line, err=True),
        )
    except BookstoreError as exc:
        fail(exc.message)
    text = f"{done['region']}'s blog cluster takes writes at {done['endpoint']} ({done['tookSeconds']} s)"
    typer.echo(json.dumps(done, indent=2) if as_json else text)


def _lines(outputs: dict[str, Any]) -> str:
    lines = [
        f"{region}: {key} = {value}"
        for region, out in outputs["regions"].items()
        for key, value in out.items()
    ]
    lines += [f"edge: {key} = {value}" for key, value in outputs["edge"].items()]
    if "published" in outputs:
        lines.append(f"storefront: s3://{outputs['published']['bucket']}")
    return "\n".join(lines)


def plan(
    domain: Domain,
    hosted_zone_id: ZoneId,
    out: Annotated[Path, typer.Option("--out", help="Where to write the templates and plan.json.")] = Path(
        "aws-plan"
    ),
    blog: Blog = True,
    as_json: AsJson = False,
    topology: TopologyFile = None,
) -> None:
    """Write the CloudFormation templates of the topology's active regions and print what they create."""
    result = _plan(domain, hosted_zone_id, blog, topology)
    files = [str(p) for p in result.write(out)]
    summary = result.to_json()
    if as_json:
        typer.echo(json.dumps({**summary, "files": files}, indent=2))
    else:
        render.cloud_plan(summary, files)
