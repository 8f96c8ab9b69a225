"""The `bookstore` command: run the system, seed it, manage users."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bookstore.config import Topology
from bookstore.domain.errors import BookstoreError

if TYPE_CHECKING:
    from bookstore.bootstrap import RegionServices

app = typer.Typer(
    help="A multi-region Bookstore you can run, break and measure on one machine.", no_args_is_help=True
)
region_app = typer.Typer(help="Run one region.", no_args_is_help=True)
users_app = typer.Typer(help="Manage the user pool.", no_args_is_help=True)
link_app = typer.Typer(help="Cut, heal and slow the links between regions.", no_args_is_help=True)
app.add_typer(region_app, name="region")
app.add_typer(users_app, name="users")
app.add_typer(link_app, name="link")

DataDir = Annotated[
    Path, typer.Option("--data-dir", envvar="BOOKSTORE_DATA_DIR", help="Where every region keeps its data.")
]
TopologyFile = Annotated[
    Path | None,
    typer.Option(
        "--topology", envvar="BOOKSTORE_TOPOLOGY", exists=True, dir_okay=False, help="TOML topology."
    ),
]
RegionOpt = Annotated[str | None, typer.Option("--region", help="Region id; default: the home region.")]


def _topology(path: Path | None) -> Topology:
    return Topology.load(path)


@contextmanager
def _region(topology: Path | None, region: str | None, data_dir: Path) -> Iterator[RegionServices]:
    """A region's services for one command; a refused request ends the command with its message."""
    from bookstore.bootstrap import build_region

    topo = _topology(topology)
    services = build_region(topo, region or topo.home_region, data_dir)
    try:
        yield services
    except BookstoreError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        services.close()


@app.command()
def up(data_dir: DataDir = Path("data"), topology: TopologyFile = None) -> None:
    """Start the system (seeding the catalog on first use) and keep it running until Ctrl-C."""
    from bookstore.runtime import logs, supervisor
    from bookstore.runtime.secret import deployment_secret

    topo = _topology(topology)
    logs.configure("supervisor")
    # As in the original, the catalog is loaded in one region and reaches the others by replication.
    seed(data_dir=data_dir, topology=topology, region=None)
    supervisor.up(topo, data_dir, topology, list(topo.active), deployment_secret(data_dir))


@app.command()
def seed(data_dir: DataDir = Path("data"), topology: TopologyFile = None, region: RegionOpt = None) -> None:
    """Load the seed catalog into a region (the home region by default); running it again changes nothing."""
    from bookstore.services.catalog import seed_books

    with _region(topology, region, data_dir) as services:
        written = services.catalog.load(seed_books())
    typer.echo(f"seeded {services.region.id}: {written} book(s) written")


@region_app.command("serve")
def region_serve(
    region: Annotated[str, typer.Option("--region", help="Region id, e.g. eu-west-1.")],
    data_dir: DataDir = Path("data"),
    topology: TopologyFile = None,
) -> None:
    """Serve one region's API on its loopback address until stopped."""
    from bookstore.runtime.region import serve

    topo = _topology(topology)
    try:
        topo.region(region)
    except KeyError as exc:
        raise typer.BadParameter(str(exc.args[0]), param_hint="--region") from None
    serve(topo, region, data_dir)


def _control(topology: Path | None, method: str, path: str, body: dict[str, object] | None = None) -> Any:
    """Call the running system's control API; a clear message when it is not running."""
    import httpx

    url = _topology(topology).control_url
    try:
        response = httpx.request(method, url + path, json=body, timeout=30)
    except httpx.HTTPError:
        typer.echo(f"error: nothing answers at {url}; start the system with `make up` first", err=True)
        raise typer.Exit(2) from None
    data = response.json()
    if response.status_code >= 400:
        typer.echo(f"error: {data.get('message', response.text)}", err=True)
        raise typer.Exit(1)
    return data


def _region_action(action: str, region: str, topology: Path | None) -> None:
    state = _control(topology, "POST", f"/regions/{region}/{action}")
    typer.echo(f"{region}: {'running, pid ' + str(state['pid']) if state['running'] else 'not running'}")


@region_app.command("kill")
def region_kill(region: str, topology: TopologyFile = None) -> None:
    """kill -9 a region's process (a crash: nothing flushed)."""
    _region_action("kill", region, topology)


@region_app.command("stop")
def region_stop(region: str, topology: TopologyFile = None) -> None:
    """Stop a region cleanly (SIGTERM)."""
    _region_action("stop", region, topology)


@region_app.command("start")
def region_start(region: str, topology: TopologyFile = None) -> None:
    """Start a stopped or killed region; it catches up by replication."""
    _region_action("start", region, topology)


OneWay = Annotated[bool, typer.Option("--one-way", help="Only the direction A -> B.")]


@link_app.command("cut")
def link_cut(a: str, b: str, one_way: OneWay = False, topology: TopologyFile = None) -> None:
    """Cut the link between two regions (both directions unless --one-way): nothing crosses it."""
    _show_links(_control(topology, "POST", f"/links/{a}/{b}", {"cut": True, "both": not one_way})["links"])


@link_app.command("heal")
def link_heal(a: str, b: str, one_way: OneWay = False, topology: TopologyFile = None) -> None:
    """Heal a cut link; held traffic flows again."""
    _show_links(_control(topology, "POST", f"/links/{a}/{b}", {"cut": False, "both": not one_way})["links"])


@link_app.command("set")
def link_set(
    a: str,
    b: str,
    delay_ms: Annotated[float | None, typer.Option("--delay-ms")] = None,
    jitter_ms: Annotated[float | None, typer.Option("--jitter-ms")] = None,
    loss: Annotated[
        float | None, typer.Option("--loss", help="Probability 0..1 that a chunk is lost.")
    ] = None,
    one_way: OneWay = False,
    topology: TopologyFile = None,
) -> None:
    """Change a link's one-way delay, jitter or loss."""
    body: dict[str, object] = {"both": not one_way}
    for name, value in (("delayMs", delay_ms), ("jitterMs", jitter_ms), ("loss", loss)):
        if value is not None:
            body[name] = value
    _show_links(_control(topology, "POST", f"/links/{a}/{b}", body)["links"])


@link_app.command("show")
def link_show(topology: TopologyFile = None) -> None:
    """Every link's state."""
    _show_links(_control(topology, "GET", "/links")["links"])


def _show_links(links: list[dict[str, Any]]) -> None:
    from bookstore.runtime.status import render_links

    render_links(links)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    topology: TopologyFile = None,
) -> None:
    """Health of every region, replication lag and pending changes per pair, conflicts, links."""
    from bookstore.runtime.status import collect, render

    report = collect(_topology(topology))
    if as_json:
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        render(report)


@app.command()
def conflicts(
    region: RegionOpt = None,
    limit: Annotated[int, typer.Option("--limit")] = 20,
    data_dir: DataDir = Path("data"),
    topology: TopologyFile = None,
) -> None:
    """Recent conflicts (concurrent writes to one item) seen by a region: winner and loser."""
    from rich.console import Console
    from rich.table import Table

    with _region(topology, region, data_dir) as services:
        if services.replica is None:
            typer.echo("this backend replicates natively and reports no conflicts")
            return
        records = services.replica.conflicts(limit)
    table = Table("detected", "table", "key", "winner", "loser")
    for c in records:
        table.add_row(
            str(c.detected_ms), c.table, json.dumps(c.key), str(c.winner_version), str(c.loser_version)
        )
    Console().print(table)


@app.command("aws-env")
def aws_env(
    region: Annotated[
        str | None, typer.Argument(help="Region whose S3 API to use; default: the home region.")
    ] = None,
    topology: TopologyFile = None,
) -> None:
    """Print `export` lines that point the `aws` CLI and boto3 at a region's S3 API."""
    import shlex

    topo = _topology(topology)
    try:
        target = topo.region(region or topo.home_region)
    except KeyError as exc:
        raise typer.BadParameter(str(exc.args[0]), param_hint="REGION") from None
    for name, value in (
        ("AWS_ACCESS_KEY_ID", topo.s3.access_key_id),
        ("AWS_SECRET_ACCESS_KEY", topo.s3.secret_access_key),
        ("AWS_DEFAULT_REGION", target.id),
        ("AWS_ENDPOINT_URL", target.s3_url),
    ):
        typer.echo(f"export {name}={shlex.quote(value)}")


@users_app.command("add")
def users_add(
    email: str,
    password: Annotated[str, typer.Option("--password", prompt=True, hide_input=True)],
    role: Annotated[str, typer.Option("--role", help="customer or author")] = "customer",
    data_dir: DataDir = Path("data"),
    topology: TopologyFile = None,
    region: RegionOpt = None,
) -> None:
    """Create a confirmed user."""
    with _region(topology, region, data_dir) as services:
        user = services.identity.add_user(email, password, role=role)
    typer.echo(f"added {user.email} ({user.role}), user id {user.user_id}")


@users_app.command("confirm-code")
def users_confirm_code(
    email: str, data_dir: DataDir = Path("data"), topology: TopologyFile = None, region: RegionOpt = None
) -> None:
    """Print the confirmation code of a user who signed up (there is no mail server)."""
    with _region(topology, region, data_dir) as services:
        typer.echo(services.identity.confirmation_code(email))


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
