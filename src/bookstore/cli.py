"""The `bookstore` command: run the system, seed it, manage users."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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
app.add_typer(region_app, name="region")
app.add_typer(users_app, name="users")

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

    topo = _topology(topology)
    logs.configure("supervisor")
    seed(data_dir=data_dir, topology=topology, region=None)
    # Only the home region runs until replication carries the catalog to the others.
    supervisor.up(topo, data_dir, topology, [topo.home_region])


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
