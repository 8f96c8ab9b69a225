"""`bookstore aws`: DynamoDB Global Tables for the dynamodb backend (where DynamoDB replicates, not us)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

import typer

from bookstore.cli import cloud, render
from bookstore.cli.exits import fail
from bookstore.cli.options import AsJson, RegionOpt, TopologyFile, load_topology
from bookstore.config import Topology
from bookstore.domain.errors import BookstoreError

app = typer.Typer(
    help="DynamoDB Global Tables for the dynamodb backend (where DynamoDB replicates, not us).",
    no_args_is_help=True,
)

EndpointUrl = Annotated[
    str | None,
    typer.Option("--endpoint-url", help="DynamoDB endpoint; default: the topology's, else AWS itself."),
]
TableArg = Annotated[
    str,
    typer.Argument(
        help="A Bookstore table (books, carts...; the topology's prefix is added) or a full name."
    ),
]


def _dynamodb(topo: Topology, endpoint_url: str | None) -> Callable[[str], Any]:
    """A factory of DynamoDB clients per region, configured as bootstrap configures the backend's."""
    import boto3
    import botocore.config

    endpoint = endpoint_url or topo.storage.dynamodb_endpoint
    config = botocore.config.Config(account_id_endpoint_mode="disabled")

    def client_for(region: str) -> Any:
        return boto3.session.Session(region_name=region).client(
            "dynamodb", endpoint_url=endpoint, config=config
        )

    return client_for


def _dynamodb_table(topo: Topology, table: str) -> str:
    from bookstore import tables

    known = {schema.name for schema in tables.ALL}
    return topo.storage.table_prefix + table if table in known else table


def _show_global(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        render.global_replicas(report)


@app.command("make-global")
def aws_make_global(
    table: TableArg,
    regions: Annotated[
        str, typer.Option("--regions", help="Comma-separated regions, e.g. eu-west-1,ap-southeast-1.")
    ],
    region: RegionOpt = None,
    endpoint_url: EndpointUrl = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for replicas to be ACTIVE.")
    ] = 3600.0,
    as_json: AsJson = False,
    topology: TopologyFile = None,
) -> None:
    """Make a table global (UpdateTable ReplicaUpdates), a replica at a time; existing ones are skipped.

    Each step and each status while it waits go to stderr (a replica takes minutes to an hour on AWS).
    """
    from bookstore.storage.dynamodb.global_tables import make_global

    topo = load_topology(topology)
    client_for = _dynamodb(topo, endpoint_url)
    name = _dynamodb_table(topo, table)
    try:
        report = make_global(
            client_for(region or topo.home_region),
            name,
            regions.split(","),
            client_for=client_for,
            timeout_s=timeout,
            progress=lambda line: typer.echo(line, err=True),
        )
    except BookstoreError as exc:
        fail(exc.message)
    if not as_json:
        added = ", ".join(report["created"]) or "none"
        typer.echo(
            f"{name}: replicas created: {added}; already there: {', '.join(report['skipped']) or 'none'}"
        )
    _show_global(report, as_json)


@app.command("describe-global")
def aws_describe_global(
    table: TableArg,
    region: RegionOpt = None,
    endpoint_url: EndpointUrl = None,
    as_json: AsJson = False,
    topology: TopologyFile = None,
) -> None:
    """The regions of a table (its own first) and each one's status."""
    from bookstore.storage.dynamodb.global_tables import describe_global

    topo = load_topology(topology)
    name = _dynamodb_table(topo, table)
    try:
        replicas = describe_global(_dynamodb(topo, endpoint_url)(region or topo.home_region), name)
    except BookstoreError as exc:
        fail(exc.message)
    _show_global({"table": name, "replicas": replicas}, as_json)


app.command("plan")(cloud.plan)
app.command("deploy")(cloud.deploy)
app.command("status")(cloud.status)
app.command("destroy")(cloud.destroy)
app.command("publish")(cloud.publish)
app.command("promote-blog")(cloud.promote_blog)
app.command("drill")(cloud.drill)
