"""`bookstore aws plan | deploy | status | destroy | drill`: the AWS version of the topology as
CloudFormation stacks, written, applied in order, shown, drilled (module 4) and removed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from bookstore.cli import render
from bookstore.cli.exits import fail
from bookstore.cli.options import AsJson, DataDir, TopologyFile, load_topology
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


def drill(
    domain: Domain,
    hosted_zone_id: ZoneId,
    rate: Annotated[float, typer.Option("--rate", min=1, help="Requests per second of the workload.")] = 5.0,
    duration: Annotated[
        float,
        typer.Option(
            "--duration",
            min=60,
            help="Seconds of workload; the break lasts from 30% to 60% of it, long enough for Route 53 "
            "(3 failed checks 10 s apart) and the resolvers (60 s TTL) to fail over.",
        ),
    ] = 400.0,
    settle: Annotated[
        float,
        typer.Option("--settle", min=1, help="Most seconds to wait for every order in every region."),
    ] = 120.0,
    rto_window: Annotated[
        float,
        typer.Option(
            "--rto-window",
            min=0.1,
            help="Seconds without a failed request of a kind after which that kind has recovered.",
        ),
    ] = 2.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the workload's random choices.")] = 1,
    repair_only: Annotated[
        bool,
        typer.Option("--repair", help="Only repair the home region's API (after an interrupted drill)."),
    ] = False,
    blog: Blog = True,
    as_json: AsJson = False,
    data_dir: DataDir = Path("data"),
    topology: TopologyFile = None,
) -> None:
    """Module 4 against the deployed system: break the home region's API (its function answers 403, as
    with its mapping removed), measure RTO and RPO through CloudFront with the drill's code, repair.

    The break is BOOKSTORE_API_BROKEN=1 in the home API function's environment; the repair removes it,
    however the drill ends (`--repair` does only that). Progress on stderr; the summary (or the record
    with --json) on stdout; the record and report under DATA_DIR/drills/. Not yet run against real AWS.
    """
    import boto3

    from bookstore.cloud.drill import FAILOVER_ALLOWANCE_S, LambdaBreaker, add_users, api_function, deployed
    from bookstore.drills import remote
    from bookstore.drills.runner import Options

    def say(line: str) -> None:
        typer.echo(line, err=True)

    session = boto3.session.Session()
    if session.get_credentials() is None:
        fail(
            "no AWS credentials: set a profile (AWS_PROFILE, aws configure) or the environment's "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; the drill needs the permissions README lists",
            2,
        )
    deployer = _deployer(domain, hosted_zone_id, blog, topology)
    home = deployer.settings.home
    try:
        breaker = LambdaBreaker(session.client("lambda", region_name=home), api_function(deployer, home), say)
        if repair_only:
            done = breaker.repair()
            typer.echo(f"{home}'s API {'repaired' if done else 'was not broken'}")
            return
        where = deployed(deployer)
    except BookstoreError as exc:
        fail(exc.message, 2)
    target = remote.site(
        where.public_url,
        where.regions,
        home,
        add_users(
            session.client("dynamodb", region_name=home),
            session.client("dynamodbstreams", region_name=home),
            deployer.settings.table_prefix,
            home,
        ),
        breaker,
        api_rto_allowance=(FAILOVER_ALLOWANCE_S, "Route 53's 3 failed checks and the records' TTL"),
    )
    options = Options(
        remote.SCENARIO, rate, duration, True, data_dir, topology, seed, settle,
        rto_window_s=rto_window, progress=say,
    )  # fmt: skip
    try:
        record = remote.run(target, breaker, options)
    except (RuntimeError, BookstoreError) as exc:
        fail(str(exc), 2)
    if as_json:
        typer.echo(json.dumps(record, indent=2, ensure_ascii=False))
    else:
        render.drill_summary(record)
    raise typer.Exit(0 if record["passed"] else 1)
