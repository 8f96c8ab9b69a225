"""`bookstore blog`: the blog's SQL database: promote, rejoin, switch over, and the writes kept aside."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bookstore.cli import render
from bookstore.cli.control import client_tls
from bookstore.cli.exits import fail
from bookstore.cli.options import (
    AsJson,
    AsJsonNotTable,
    DataDir,
    RegionArg,
    RegionOpt,
    TopologyFile,
    load_topology,
    show,
)
from bookstore.domain.errors import BookstoreError

if TYPE_CHECKING:
    from bookstore.replication.blog.operator import Operator

app = typer.Typer(
    help="The blog's SQL database: promote a replica, rejoin a former primary, switch over, diverged writes.",
    no_args_is_help=True,
)


@contextmanager
def _blog_operator(topology: Path | None, data_dir: Path) -> Iterator[Operator]:
    """Requests to the running regions signed as the operator; a refusal ends the command with its message."""
    from bookstore.kernel.clock import SystemClock
    from bookstore.replication.blog.operator import Operator
    from bookstore.runtime.secret import operator_secret

    topo = load_topology(topology)
    urls = {r.id: r.api_url for r in topo.regions}
    verify = client_tls(topo, data_dir) or True
    try:
        with Operator(urls, operator_secret(data_dir), SystemClock(), verify=verify) as operator:
            yield operator
    except BookstoreError as exc:
        fail(exc.message)


@app.command("promote")
def blog_promote(
    region: RegionArg,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Promote even when REGION reaches no majority of the regions (they are down, not cut off).",
        ),
    ] = False,
    data_dir: DataDir = Path("data"),
    topology: TopologyFile = None,
    as_json: AsJson = False,
) -> None:
    """Unplanned: make REGION the blog's primary at a new epoch; it takes writes at once.

    Refused unless REGION reaches a majority of the regions named in the epoch history (or --force).
    """
    with _blog_operator(topology, data_dir) as op:
        state = op.promote(region, force=force)
    show(
        as_json,
        state,
        f"{region}: primary of the blog at epoch {state['epoch']} (from lsn {state['headLsn']})",
    )


@app.command("rejoin")
def blog_rejoin(
    region: RegionArg,
    data_dir: DataDir = Path("data"),
    topology: TopologyFile = None,
    as_json: AsJson = False,
) -> None:
    """Re-sync a former primary as a replica of the current primary; its diverged writes are kept aside."""
    with _blog_operator(topology, data_dir) as op:
        state = op.rejoin(region)
    text = (
        f"{region}: replica of {state['primaryRegion']} at epoch {state['epoch']}, "
        f"from lsn {state['appliedLsn']}; "
        f"{state['diverged']} diverged write(s) kept aside ({state['divergedTotal']} in all)"
    )
    show(as_json, state, text)


@app.command("switchover")
def blog_switchover(
    region: RegionArg,
    data_dir: DataDir = Path("data"),
    topology: TopologyFile = None,
    as_json: AsJson = False,
) -> None:
    """Planned: the primary turns read-only, REGION applies everything, then takes writes. Loses nothing."""
    with _blog_operator(topology, data_dir) as op:
        done = op.switchover(region)
    text = (
        f"switched over from {done['from']} to {done['to']} at lsn {done.get('lsn')}, epoch {done['epoch']}"
    )
    show(as_json, done, text)


@app.command("diverged")
def blog_diverged(
    region: RegionOpt = None,
    as_json: AsJsonNotTable = False,
    data_dir: DataDir = Path("data"),
    topology: TopologyFile = None,
) -> None:
    """Writes a former primary accepted after the fork: kept aside, never dropped (default: every region)."""
    regions = [region] if region else [r.id for r in load_topology(topology).regions]
    reports: dict[str, Any] = {}
    with _blog_operator(topology, data_dir) as op:
        for r in regions:
            try:
                reports[r] = op.diverged(r)
            except BookstoreError as exc:
                if region:
                    raise
                reports[r] = {"region": r, "error": exc.message}
    if as_json:
        typer.echo(json.dumps(reports, indent=2, ensure_ascii=False))
    else:
        render.blog_diverged(reports)
