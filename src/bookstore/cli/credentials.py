"""The deployment's own credentials: `secrets rotate` replaces them, `operator-link` signs the operator in."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bookstore.cli.control import operator_token
from bookstore.cli.exits import fail
from bookstore.cli.options import AsJson, DataDir, TopologyFile, load_topology, show

secrets_app = typer.Typer(
    help="The deployment's own credentials (S3 keys, inter-region secret, operator token)."
)


@secrets_app.command("rotate")
def secrets_rotate(
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="s3, secret or operator-token (repeatable); default: all three."),
    ] = None,
    data_dir: DataDir = Path("data"),
    topology: TopologyFile = None,
    as_json: AsJson = False,
) -> None:
    """Replace the deployment's credentials with new ones; the system must be stopped and started again."""
    import httpx

    from bookstore.runtime.secret import KINDS, overridden, rotate

    kinds = only or list(KINDS)
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        fail(f"unknown credential(s) {', '.join(unknown)}; known: {', '.join(KINDS)}", 2)
    url = load_topology(topology).control_url
    try:
        httpx.get(url + "/regions", timeout=2)
    except httpx.HTTPError:
        pass
    else:
        # The running processes hold the old values: regions would stop trusting each other mid-flight.
        fail(f"the system answers at {url}: stop it (Ctrl-C), rotate, then start it again")
    rotated = list(rotate(data_dir, kinds))
    ignored = list(overridden(kinds))
    for name in ignored:
        typer.echo(f"warning: {name} is set in this environment and overrides the file", err=True)
    text = "\n".join(
        [f"new {name} in {data_dir.resolve()}" for name in rotated]
        + ["start the system again (`bookstore up`) to use them; old sign-in links and sessions are void"]
    )
    show(as_json, {"dataDir": str(data_dir.resolve()), "rotated": rotated, "overridden": ignored}, text)


def operator_link(
    data_dir: DataDir = Path("data"), topology: TopologyFile = None, as_json: AsJson = False
) -> None:
    """Print a one-time sign-in link to the operator page (valid for an hour, good for one browser tab)."""
    from bookstore.runtime.operator import login_link

    topo = load_topology(topology)
    if not topo.edge.enabled:
        fail("the edge is disabled in this topology: there is no operator page", 2)
    link = login_link(topo.edge.url, operator_token(data_dir))
    show(as_json, {"url": link}, link)
