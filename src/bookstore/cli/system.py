"""The system as a whole: start it (`up`), seed its catalog, show its status and its conflicts."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bookstore.cli import render
from bookstore.cli.control import client_tls
from bookstore.cli.options import (
    AsJson,
    AsJsonNotTable,
    DataDir,
    LogFormatOpt,
    RegionOpt,
    TopologyFile,
    load_topology,
    show,
    with_log_format,
)
from bookstore.cli.region_access import on_region
from bookstore.config import Topology

if TYPE_CHECKING:
    from bookstore.region.services import RegionServices
    from bookstore.runtime.commands import RegionCommands


def up(
    data_dir: DataDir = Path("data"), topology: TopologyFile = None, log_format: LogFormatOpt = None
) -> None:
    """Start the system (seeding the catalog on first use) and keep it running until Ctrl-C."""
    from bookstore.extras import check_topology
    from bookstore.runtime import logs
    from bookstore.runtime.secret import deployment_credentials
    from bookstore.supervisor import processes as supervisor

    # The regions and the edge, started as processes, take --log-format from the environment.
    topo = with_log_format(load_topology(topology), log_format)
    if not topo.supervised:
        # Each host runs its own region (and one the edge): there is nothing here for `up` to start.
        typer.echo(
            "error: this topology has no supervisor (supervised = false): on each region's host run "
            "`bookstore region serve --region REGION`, on the edge's `bookstore edge serve`, after "
            '`bookstore secrets import FILE` (see README, "Beyond one machine")',
            err=True,
        )
        raise typer.Exit(2)
    # An engine whose extra is missing is named now, not in a region's log after it failed to start.
    check_topology(topo)
    logs.configure("supervisor", log_format=topo.observability.log_format)
    step = logging.getLogger("bookstore.up").info
    step("credentials of this deployment in %s", data_dir.resolve())
    # The deployment's own credentials, made on the first start in this data directory.
    credentials = deployment_credentials(data_dir)
    # As in the original, the catalog is loaded in one region and reaches the others by replication.
    step("seeding the catalog in %s", topo.home_region)
    seed(data_dir=data_dir, topology=topology, region=None, as_json=False)
    step("starting the control API at %s and the links between regions", topo.control_url)
    supervisor.up(topo, data_dir, topology, list(topo.active), credentials)


def seed(
    data_dir: DataDir = Path("data"),
    topology: TopologyFile = None,
    region: RegionOpt = None,
    as_json: AsJson = False,
) -> None:
    """Load the seed catalog into a region (the home region by default); running it again changes nothing."""
    from bookstore.services.catalog import seed_books

    target = region or load_topology(topology).home_region
    written = on_region(
        topology,
        target,
        data_dir,
        "seed",
        lambda services: services.catalog.load(seed_books()),
        lambda running: running.seed(),
    )
    show(as_json, {"region": target, "written": written}, f"seeded {target}: {written} book(s) written")


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    topology: TopologyFile = None,
    data_dir: DataDir = Path("data"),
) -> None:
    """Health of every region, replication lag and pending changes per pair, conflicts, links, credentials.

    Exits 1 when an active region or the control API (asked with the operator token) does not answer.
    """
    from bookstore.runtime.secret import MissingCredential, operator_token
    from bookstore.runtime.status import collect

    topo = load_topology(topology)
    token: str | None = None
    try:
        token = operator_token(data_dir)
    except MissingCredential as exc:
        # The regions answer anyone; the supervisor and the edge only the operator.
        typer.echo(f"warning: {exc}; processes, links and the edge are not shown", err=True)
    report = collect(topo, token, client_tls(topo, data_dir) or True)
    if not topo.supervised:
        typer.echo(
            "note: no supervisor in this topology (supervised = false): processes and links are not shown; "
            "each region is read at its own address",
            err=True,
        )
    report["credentials"] = _credentials_report(topo, data_dir, token)
    if as_json:
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        render.status(report)
        render.credentials(report["credentials"])
    asked = token is not None and topo.supervised
    silent = unanswered(report, topo.control_url if asked else None)
    if silent:
        typer.echo(f"error: no answer from {', '.join(silent)}", err=True)
        raise typer.Exit(1)


def unanswered(report: dict[str, Any], control_url: str | None) -> list[str]:
    """What `status` found silent: the active regions that did not answer, and the control API at
    `control_url` when it was asked (None: not asked, there is no operator token)."""
    silent = [r["regionId"] for r in report["regions"] if r.get("active", True) and not r["healthy"]]
    if control_url is not None and not report["supervisor"]:
        silent.append(f"the control API at {control_url}")
    return silent


def _credentials_report(topo: Topology, data_dir: Path, token: str | None) -> dict[str, Any]:
    """Where the deployment's credentials are and how to use them (the S3 secret key itself: `aws-env`)."""
    from bookstore.runtime.operator import login_link
    from bookstore.runtime.secret import S3_FILE, TOKEN_FILE, MissingCredential, s3_access

    try:
        key_id: str | None = s3_access(topo, data_dir, create=False).access_key_id
    except MissingCredential:
        key_id = None
    return {
        "dataDir": str(data_dir.resolve()),
        "s3AccessKeyId": key_id,
        "s3Credentials": "topology" if topo.s3 is not None else str((data_dir / S3_FILE).resolve()),
        "operatorToken": str((data_dir / TOKEN_FILE).resolve()),
        "operatorLink": login_link(topo.edge.url, token) if token and topo.edge.enabled else None,
    }


def conflicts(
    region: RegionOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Most conflicts to show, newest first.")] = 20,
    as_json: AsJsonNotTable = False,
    data_dir: DataDir = Path("data"),
    topology: TopologyFile = None,
) -> None:
    """Recent conflicts (concurrent writes to one item) seen by a region: winner and loser."""
    from bookstore.region.commands import conflict_json

    def local(services: RegionServices) -> list[dict[str, Any]] | None:
        if services.replica is None:
            return None
        return [conflict_json(c) for c in services.replica.conflicts(limit)]

    def remote(running: RegionCommands) -> list[dict[str, Any]] | None:
        answer = running.conflicts(limit)
        return None if answer["native"] else list(answer["conflicts"])

    records = on_region(topology, region, data_dir, "conflicts", local, remote)
    if records is None:
        typer.echo("this backend replicates natively and reports no conflicts", err=as_json)
        records = []
    if as_json:
        typer.echo(json.dumps(records, indent=2))
        return
    render.conflicts(records)
