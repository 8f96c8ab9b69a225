"""A command on a region: on its data directory when nothing owns it, else through the running region."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer

from bookstore.cli.control import client_tls
from bookstore.cli.exits import fail
from bookstore.cli.options import load_topology
from bookstore.domain.errors import BookstoreError, Unavailable

if TYPE_CHECKING:
    from bookstore.region.services import RegionServices
    from bookstore.runtime.commands import RegionCommands

T = TypeVar("T")


@contextmanager
def _region(
    topology: Path | None, region: str | None, data_dir: Path, command: str
) -> Iterator[RegionServices]:
    """A region's services for one command, owning its data directory; a refusal ends it with its message.

    Raises DataDirInUse (before any start-up work) when a running region owns the directory.
    """
    from bookstore.region.compose import build_region

    topo = load_topology(topology)
    services = build_region(topo, region or topo.home_region, data_dir, holder=f"`bookstore {command}`")
    try:
        yield services
    except BookstoreError as exc:
        fail(exc.message)
    finally:
        services.close()


def on_region(
    topology: Path | None,
    region: str | None,
    data_dir: Path,
    command: str,
    local: Callable[[RegionServices], T],
    remote: Callable[[RegionCommands], T],
) -> T:
    """Run a command on the region's data directory when nothing owns it, else through the running region.

    Never both: a region that owns its directory is asked over its signed operator endpoint, so the
    command runs none of the owner's start-up work (the object store's sweep) beside it.
    """
    from bookstore.kernel.clock import SystemClock
    from bookstore.runtime.commands import RegionCommands
    from bookstore.runtime.secret import operator_secret
    from bookstore.storage.local.ownership import DataDirInUse

    topo = load_topology(topology)
    try:
        target = topo.region(region or topo.home_region)
    except KeyError as exc:
        raise typer.BadParameter(str(exc.args[0]), param_hint="--region") from None
    owner: DataDirInUse | None = None
    if topo.supervised or (data_dir / target.id).exists():
        try:
            with _region(topology, region, data_dir, command) as services:
                return local(services)
        except DataDirInUse as busy:
            owner = busy
    # Else the region runs on another host (no supervisor): its data is there, so ask it.
    try:
        secret, verify = operator_secret(data_dir), client_tls(topo, data_dir) or True
        with RegionCommands(target.id, target.api_url, secret, SystemClock(), verify=verify) as client:
            return remote(client)
    except BookstoreError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        if isinstance(exc, Unavailable):
            elsewhere = f"{target.id}'s data is not in {data_dir}: it runs on its own host"
            typer.echo(f"({owner.message if owner else elsewhere})", err=True)
        raise typer.Exit(1) from None
